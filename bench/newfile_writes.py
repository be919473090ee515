"""What writing a new 8 MB file costs on this machine, with no PicGate code at all.

Writes rounds of new files (1 MB ``write`` calls, no flush, as the local cache does) into a
temporary folder and prints each round's median; then deletes them all and does it again. On a
VM that reports freed memory to its host (``/sys/module/page_reporting``), the pages of files
just deleted are reused cheaply for a while, and after that every new page of file cache costs
the host a fault: the same write becomes several times slower. ``bench.overhead`` prints the
same floor beside each call through PicGate.

    .venv/bin/python -m bench.newfile_writes [--mb 8] [--files 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.overhead import PAGE_REPORTING, write_new_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=8)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if PAGE_REPORTING.is_dir():
        for name in ("page_reporting_order", "min_free_ms"):
            print(f"{name}: {(PAGE_REPORTING / name).read_text().strip()}")
    payload = os.urandom(args.mb * 2**20)
    for attempt in ("first pass", "after deleting them"):
        folder = tempfile.mkdtemp(prefix="picgate-newfile-")
        count = 0
        for number in range(args.rounds):
            times = []
            for _ in range(args.files):
                times.append(write_new_file(folder, count, payload))
                count += 1
                time.sleep(0.05)  # as between requests
            print(
                f"{attempt}, round {number + 1}: {args.files} new {args.mb} MB files, "
                f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms, "
                f"max {max(times):.1f} ms"
            )
        shutil.rmtree(Path(folder))


if __name__ == "__main__":
    main()
