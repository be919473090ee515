"""An upstream stream with one endless line: PicGate's peak RSS while it relays it.

Starts ``picgate serve`` (the real CLI) against a raw-socket upstream that answers a streaming
chat request with one text delta and then ``data: `` followed by ``--line-mb`` MB without a
newline, then closes. Prints what the upstream got to send, what the client received (the
error event, or whatever the old code made of it), the time taken, and the server's RSS before
and its peak (VmHWM).

    .venv/bin/python -m bench.sse_long_line [--line-mb 200] [--max-image-mb 50]
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

import httpx

from bench.procs import picgate
from tests.support.servers import RawServer

MB = 2**20
DELTA = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}],
}


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class LongLineUpstream(RawServer):
    """Answers every request with an SSE stream whose second line never ends."""

    def __init__(self, line_mb: int) -> None:
        self.line_mb = line_mb
        self.sent_mb = 0
        super().__init__(backlog=4)

    def _serve(self, conn: socket.socket) -> None:
        payload = b"x" * MB
        with conn:
            try:
                conn.recv(65536)  # the request (small: its body fits one read here)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                conn.sendall(chunk(f"data: {json.dumps(DELTA)}\n\n".encode()) + chunk(b"data: "))
                for _ in range(self.line_mb):
                    conn.sendall(chunk(payload))
                    self.sent_mb += 1
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # PicGate stopped reading and closed the connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line-mb", type=int, default=200)
    parser.add_argument("--max-image-mb", type=int, default=50)
    args = parser.parse_args()
    upstream = LongLineUpstream(args.line_mb)
    base = f"http://127.0.0.1:{upstream.port}/v1"
    with picgate(base, MAX_IMAGE_MB=str(args.max_image_mb)) as url:
        pid = picgate.last_pid  # type: ignore[attr-defined]
        before = proc_status_kb(pid, "VmRSS")
        started = time.perf_counter()
        body = {"model": "picgate", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        headers = {"Authorization": "Bearer pg-bench-key-0123456789"}
        received = 0
        last = b""
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=600
        ) as resp:
            for part in resp.iter_raw():
                received += len(part)
                last = (last + part)[-400:]
        elapsed = time.perf_counter() - started
        peak = proc_status_kb(pid, "VmHWM")
    print(f"line: {args.line_mb} MB without a newline, MAX_IMAGE_MB={args.max_image_mb}")
    print(f"upstream sent: {upstream.sent_mb} MB before PicGate stopped reading")
    print(f"client received: {received} bytes in {elapsed:.1f} s; ends with {last[-160:]!r}")
    print(f"server RSS before: {before / 1024:.1f} MB, peak (VmHWM): {peak / 1024:.1f} MB")


if __name__ == "__main__":
    main()
