"""Slow clients: server RSS while connections push large request heads that never end.

Starts ``picgate serve`` (the real CLI), opens ``--connections`` sockets at once, and on each
sends ``GET /health`` with one header whose value grows to ``--head-mb`` MB, without ever
ending the head. Prints how much each connection got through before the server cut it off,
the server's RSS before and while the connections are open, and its peak (VmHWM).

    .venv/bin/python -m bench.slow_clients [--connections 10] [--head-mb 40]
"""

from __future__ import annotations

import argparse
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import picgate, stub_upstream

CHUNK = b"a" * 2**20


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def push_head(port: int, head_mb: int, hold: list[socket.socket]) -> tuple[int, str]:
    """Bytes sent before the server stopped taking them, and how it ended."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hold.append(sock)  # kept open until RSS is read: the server may still hold the buffer
    sent = 0
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\nX-Big: ")
        for _ in range(head_mb):
            sock.sendall(CHUNK)
            sent += len(CHUNK)
    except TimeoutError:
        return sent, "stalled (server stopped reading)"
    except OSError as exc:
        return sent, f"cut off ({type(exc).__name__})"
    return sent, "all sent, connection still open"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--head-mb", type=int, default=40)
    args = parser.parse_args()
    with stub_upstream(10_000) as upstream, picgate(upstream) as gateway:
        pid: int = picgate.last_pid  # type: ignore[attr-defined]
        port = urlsplit(gateway).port
        assert port is not None
        time.sleep(1.0)
        before = proc_status_kb(pid, "VmRSS")
        held: list[socket.socket] = []
        with ThreadPoolExecutor(args.connections) as pool:
            outcomes = list(
                pool.map(lambda _: push_head(port, args.head_mb, held), range(args.connections))
            )
        time.sleep(1.0)  # let the server process what it read
        during = proc_status_kb(pid, "VmRSS")
        peak = proc_status_kb(pid, "VmHWM")
        for sock in held:
            sock.close()
    print(f"slow clients: {args.connections} connections x {args.head_mb} MB unfinished heads")
    for sent, how in sorted(set(outcomes)):
        count = outcomes.count((sent, how))
        print(f"  {count} x sent {sent / 2**20:.1f} MB of head: {how}")
    print(
        f"  server RSS: before {before / 1024:.1f} MB, with the connections open "
        f"{during / 1024:.1f} MB (+{(during - before) / 1024:.1f}), peak {peak / 1024:.1f} MB"
    )


if __name__ == "__main__":
    main()
