"""Added latency of PicGate on /v1/images/generations (upstream answers one PNG as b64_json).

Calls the stub upstream directly and through PicGate with ``response_format=url`` and with
``response_format=b64_json``, interleaved, and prints medians, p90 and the added milliseconds
for 1 MB and 8 MB images: the difference of the two medians (the goal's figure) and, steadier
on a machine whose speed drifts, the median of the differences between each call and its direct
twin; then the ratio of what ``b64_json`` adds to what ``url`` adds (goal at 8 MB: ≤ 1.5).

Beside each call through PicGate it also times this machine's floor for storing the image: the
same bytes written to a new file in a folder on the same disk, with the same 1 MB writes, and no
PicGate code. On a VM that hands freed memory back to its host (free page reporting, as on this
project's machine), every new page of file cache costs a host fault, and that floor is several
times what it is on hardware that keeps its memory; the script prints those settings when the
kernel has them.

It then times the same call through PicGate without and with ``MODELS_FILE`` (one model
routed to the same stub), alternating, and prints the ratio of the medians.

    .venv/bin/python -m bench.overhead [--calls 40] [--sizes 1,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import percentile, picgate, stub_upstream
from picgate.storage.local import write_all

PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def write_new_file(folder: str, index: int, data: bytes) -> float:
    """Milliseconds to write ``data`` to a new file, as PicGate's cache does (no flush)."""
    t0 = time.perf_counter()
    fd = os.open(Path(folder) / f"floor-{index}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    return (time.perf_counter() - t0) * 1000


KEY = "pg-bench-key-0123456789"


def measure(size: int, calls: int) -> None:
    with stub_upstream(size) as upstream, picgate(upstream) as gateway:
        direct: list[float] = []
        through: dict[str, list[float]] = {"url": [], "b64_json": []}
        floor: list[float] = []
        payload = os.urandom(size)
        auth = {"Authorization": f"Bearer {KEY}"}

        def body(fmt: str) -> dict[str, str]:
            return {"model": "picgate", "prompt": "a fox", "response_format": fmt}

        # the files stay until the end, as stored images do: their pages are not reused
        with httpx.Client(timeout=60) as client, tempfile.TemporaryDirectory() as folder:
            for _ in range(3):  # warm every path
                client.post(upstream + "/images/generations", json=body("b64_json"))
                for fmt in through:
                    client.post(gateway + "/v1/images/generations", json=body(fmt), headers=auth)
            for _ in range(calls):
                t0 = time.perf_counter()
                r = client.post(upstream + "/images/generations", json=body("b64_json"))
                direct.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                for fmt, times in through.items():
                    t0 = time.perf_counter()
                    r = client.post(
                        gateway + "/v1/images/generations", json=body(fmt), headers=auth
                    )
                    times.append((time.perf_counter() - t0) * 1000)
                    r.raise_for_status()
                    if fmt == "url":
                        assert r.json()["data"][0]["url"].startswith(gateway)
                    else:
                        assert len(r.json()["data"][0]["b64_json"]) > size
                floor.append(write_new_file(folder, len(floor), payload))
        md = statistics.median(direct)
        print(
            f"{size / 2**20:.1f} MB PNG, {calls} calls each: direct median {md:.1f} ms "
            f"p90 {percentile(direct, 0.9):.1f} ms | floor: writing the bytes to a new file, "
            f"no PicGate, median {statistics.median(floor):.1f} ms "
            f"p90 {percentile(floor, 0.9):.1f} ms"
        )
        added: dict[str, float] = {}
        for fmt, times in through.items():
            mt = statistics.median(times)
            # each call through PicGate right after its direct twin: the median of those
            # differences is steadier than the difference of medians on a machine whose
            # speed drifts
            paired = statistics.median(t - d for d, t in zip(direct, times, strict=True))
            added[fmt] = mt - md
            print(
                f"  {fmt:8s} through PicGate median {mt:.1f} ms p90 "
                f"{percentile(times, 0.9):.1f} ms | added median {mt - md:.1f} ms "
                f"(median of paired differences {paired:.1f} ms)"
            )
        if added["url"] > 0:
            print(f"  b64_json adds {added['b64_json'] / added['url']:.2f}x what url adds")


def measure_routing(size: int, calls: int) -> None:
    """The same call through PicGate without and with MODELS_FILE (one model routed to the
    same stub), interleaved in one run: the ratio of the medians is the cost of routing."""
    with stub_upstream(size) as upstream, tempfile.TemporaryDirectory() as folder:
        models = Path(folder) / "models.yaml"
        models.write_text(
            "upstreams:\n"
            f"  - {{name: stub, base_url: '{upstream}', api_key: sk-bench-routed}}\n"
            "models:\n"
            "  - {name: picgate, upstream: stub, upstream_model: gpt-image-1, api: images}\n",
            encoding="utf-8",
        )
        with picgate(upstream) as plain, picgate(upstream, MODELS_FILE=str(models)) as routed:
            body = {"model": "picgate", "prompt": "a fox", "response_format": "url"}
            headers = {"Authorization": f"Bearer {KEY}"}
            times: dict[str, list[float]] = {plain: [], routed: []}
            with httpx.Client(timeout=60) as client:
                for index in range(calls + 3):
                    for gateway in (plain, routed) if index % 2 else (routed, plain):
                        t0 = time.perf_counter()
                        r = client.post(
                            gateway + "/v1/images/generations", json=body, headers=headers
                        )
                        elapsed = (time.perf_counter() - t0) * 1000
                        r.raise_for_status()
                        if index >= 3:  # the first three warm both
                            times[gateway].append(elapsed)
        mp, mr = statistics.median(times[plain]), statistics.median(times[routed])
        print(
            f"routing, {size / 2**20:.1f} MB PNG, {calls} calls each: without MODELS_FILE "
            f"median {mp:.1f} ms | with MODELS_FILE median {mr:.1f} ms | ratio {mr / mp:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--sizes", default="1,8", help="image sizes in MB, comma-separated")
    args = parser.parse_args()
    if PAGE_REPORTING.is_dir():
        settings = {
            p.name: p.read_text().strip()
            for p in sorted(PAGE_REPORTING.iterdir())
            if p.name in ("page_reporting_order", "min_free_ms")
        }
        print(f"free page reporting to the host is on: {settings}")
    for mb in args.sizes.split(","):
        measure(int(float(mb) * 2**20), args.calls)
    measure_routing(1 * 2**20, args.calls)


if __name__ == "__main__":
    main()
