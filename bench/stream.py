"""Chat streaming through PicGate: added latency per text delta, total time, image throughput.

A stub upstream (this module, ``--stub PORT``) and PicGate run as two processes on loopback;
the client reads each stream directly from the stub and through PicGate, interleaved.

1. 200 text deltas paced like a model (``--gap`` ms apart) then one ~1 MB image in one delta:
   each delta carries the stub's CLOCK_MONOTONIC send time, so the client measures the delay of
   every delta; printed: median added latency per delta and the total-time ratio.
2. The same stream unpaced (as fast as the stub can write): the pure relay overhead.
3. One image of 1, 4 and 16 MB sent as markdown base64 in 1 KB pieces (one SSE event each):
   time from request to ``[DONE]`` through PicGate (decode, sniff, hash, write, row) and direct.
4. A burst: one 16 MB image as a markdown data URL in a single event, sent at once, then 200
   text deltas unpaced. Printed: total time direct and through PicGate (goal: ≤ direct + 150 ms),
   how long the text deltas after the image waited, the image's own decode-hash-write measured
   in this process on the same bytes, and PicGate's peak RSS growth during the stream against
   the image's base64 size (goal: ≤ 2×; from ``/proc/PID/status`` VmHWM, reset before each
   stream through ``/proc/PID/clear_refs``, which needs the same user or root). The growth is
   measured twice: for the first burst of a fresh PicGate process (one process per round: the
   memory allocator holds nothing from an earlier burst, so this is the honest figure), and
   for later bursts in one process (memory an earlier burst freed may still be counted in the
   RSS before the stream, so this one can understate).

    .venv/bin/python -m bench.stream [--rounds 5] [--gap 5] [--only burst]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bench.procs import free_port, picgate, process

KEY = "pg-bench-key-0123456789"
META = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "b"}


# -- the stub upstream (runs in its own process) -------------------------------------------------


def _event(content: str, **extra: Any) -> bytes:
    chunk = {**META, "choices": [{"index": 0, "delta": {"content": content}}], **extra}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _image_b64(mb: float) -> str:
    from tests.support.images import make_image

    return base64.b64encode(make_image("PNG", int(mb * 2**20), seed=1)).decode()


def stub_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    images: dict[float, str] = {}

    def image(mb: float) -> str:
        if mb not in images:
            images[mb] = _image_b64(mb)
        return images[mb]

    async def deltas(n: int, gap: float, mb: float) -> AsyncIterator[bytes]:
        for i in range(n):
            yield _event(f"tok{i} ", t=time.monotonic_ns())
            if gap:
                await asyncio.sleep(gap)
        yield _event(f"![image](data:image/png;base64,{image(mb)})")
        yield b"data: [DONE]\n\n"

    async def pieces(mb: float, size: int) -> AsyncIterator[bytes]:
        text = f"Here: ![image](data:image/png;base64,{image(mb)}) done."
        batch: list[bytes] = []
        for i in range(0, len(text), size):
            batch.append(_event(text[i : i + size]))
            if len(batch) == 64:  # write in 64-event slices, as a busy upstream would
                yield b"".join(batch)
                batch = []
        yield b"".join(batch) + b"data: [DONE]\n\n"

    async def burst(mb: float, n: int) -> AsyncIterator[bytes]:
        head = _event(f"Here: ![image](data:image/png;base64,{image(mb)})")
        tail = b"".join(_event(f"tok{i} ", t=time.monotonic_ns()) for i in range(n))
        yield head + tail + b"data: [DONE]\n\n"

    async def chat(request: Request) -> Response:
        spec = json.loads(await request.body())["bench"]
        if spec["kind"] == "deltas":
            body = deltas(spec["n"], spec["gap"], spec["mb"])
        elif spec["kind"] == "burst":
            body = burst(spec["mb"], spec["n"])
        else:
            body = pieces(spec["mb"], spec["chunk"])
        return StreamingResponse(body, media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def warm(request: Request) -> Response:
        for mb in json.loads(await request.body()):
            image(mb)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", health),
            Route("/warm", warm, methods=["POST"]),
        ]
    )


# -- the client ----------------------------------------------------------------------------------


def run_stream(client: httpx.Client, url: str, spec: dict[str, Any]) -> tuple[float, list[float]]:
    """(seconds from request to [DONE], per-delta delays in ms)."""
    body = {"model": "picgate", "messages": [{"role": "user", "content": "x"}], "stream": True}
    body["bench"] = spec
    delays: list[float] = []
    start = time.perf_counter()
    with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith('data: {"id"') and '"t":' in line:
                now = time.monotonic_ns()
                sent = json.loads(line[6:]).get("t")
                if isinstance(sent, int):
                    delays.append((now - sent) / 1e6)
            elif line == "data: [DONE]":
                break
    return time.perf_counter() - start, delays


def own_image_work(mb: float) -> float:
    """Milliseconds for the image's own work in this process: strict decode, sha256, a new
    file written with PicGate's own 1 MB writes (no PicGate request code)."""
    import hashlib
    import os
    import tempfile

    import pybase64

    from picgate.storage.local import write_all

    text = _image_b64(mb)
    with tempfile.TemporaryDirectory() as folder:
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            data = pybase64.b64decode(text, validate=True)
            hashlib.sha256(data).hexdigest()
            fd = os.open(f"{folder}/{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _grown(
    client: httpx.Client, gw_url: str, spec: dict[str, Any], pid: int
) -> tuple[float, float, list[float]]:
    """(PicGate's peak RSS growth in MB while it relays one stream, ``run_stream``'s figures)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the peak RSS starts again from the current RSS
    before = _status_kb(pid, "VmRSS")
    t, d = run_stream(client, gw_url, spec)
    return (_status_kb(pid, "VmHWM") - before) / 1024, t, d


def first_bursts(client: httpx.Client, stub: str, spec: dict[str, Any], rounds: int) -> float:
    """The median peak RSS growth (MB) of the first burst in a fresh PicGate process."""
    growth = []
    for _ in range(rounds):
        with picgate(stub + "/v1") as gateway:
            gw_url = gateway + "/v1/chat/completions"
            run_stream(client, gw_url, {"kind": "deltas", "n": 2, "gap": 0, "mb": 0.01})
            pid: int = picgate.last_pid  # type: ignore[attr-defined]
            growth.append(_grown(client, gw_url, spec, pid)[0])
    return statistics.median(growth)


def burst_case(client: httpx.Client, stub: str, gw_url: str, rounds: int) -> None:
    mb, n = 16, 200
    spec = {"kind": "burst", "mb": mb, "n": n}
    direct_url = stub + "/v1/chat/completions"
    b64_mb = len(_image_b64(mb)) / 2**20
    pid: int = picgate.last_pid  # type: ignore[attr-defined]
    run_stream(client, gw_url, spec)  # warm
    d_tot, g_tot, d_del, g_del, growth = [], [], [], [], []
    for _ in range(rounds):
        t, d = run_stream(client, direct_url, spec)
        d_tot.append(t)
        d_del += d
        grown, t, d = _grown(client, gw_url, spec, pid)
        growth.append(grown)
        g_tot.append(t)
        g_del += d
    first = first_bursts(client, stub, spec, rounds)
    own = own_image_work(mb)
    dm, gm = statistics.median(d_tot) * 1000, statistics.median(g_tot) * 1000
    grown = statistics.median(growth)
    print(
        f"burst: one {mb} MB image ({b64_mb:.1f} MB base64) in one event at once, then {n} text "
        f"deltas, {rounds} rounds (medians):\n"
        f"  total: direct {dm:.0f} ms, through {gm:.0f} ms, PicGate adds {gm - dm:.0f} ms "
        f"(goal ≤ 150), ratio {gm / dm:.2f}\n"
        f"  text deltas after the image waited: direct {statistics.median(d_del):.0f} ms, "
        f"through {statistics.median(g_del):.0f} ms | the image's own decode+sha256+write here: "
        f"{own:.0f} ms\n"
        f"  PicGate peak RSS growth, first burst of a fresh process: {first:.0f} MB = "
        f"{first / b64_mb:.2f}x the base64 (goal ≤ 2x)\n"
        f"  PicGate peak RSS growth, later bursts in one process: {grown:.0f} MB = "
        f"{grown / b64_mb:.2f}x the base64"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap", type=float, default=5.0, help="ms between text deltas")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["burst"], help="run only this case")
    args = parser.parse_args()
    if args.stub:
        import uvicorn

        uvicorn.run(stub_app(), host="127.0.0.1", port=args.stub, log_level="warning")
        return

    port = free_port()
    stub_cmd = [sys.executable, "-m", "bench.stream", "--stub", str(port)]
    stub = f"http://127.0.0.1:{port}"
    with (
        process(stub_cmd, {}, stub + "/v1/models"),
        picgate(stub + "/v1") as gateway,
        httpx.Client(timeout=120) as client,
    ):
        client.post(stub + "/warm", json=[1, 4, 16]).raise_for_status()
        direct_url, gw_url = stub + "/v1/chat/completions", gateway + "/v1/chat/completions"
        if args.only == "burst":
            burst_case(client, stub, gw_url, args.rounds)
            return

        for label, gap in (("paced", args.gap / 1000), ("unpaced", 0.0)):
            spec = {"kind": "deltas", "n": 200, "gap": gap, "mb": 1}
            run_stream(client, gw_url, spec)  # warm
            d_tot, g_tot, d_del, g_del = [], [], [], []
            for _ in range(args.rounds):
                t, d = run_stream(client, direct_url, spec)
                d_tot.append(t)
                d_del += d
                t, d = run_stream(client, gw_url, spec)
                g_tot.append(t)
                g_del += d
            print(
                f"200 deltas + 1 MB image, {label} (gap {gap * 1000:.0f} ms), "
                f"{args.rounds} rounds:\n"
                f"  delta delay median: direct {statistics.median(d_del):.2f} ms, "
                f"through {statistics.median(g_del):.2f} ms, added "
                f"{statistics.median(g_del) - statistics.median(d_del):.2f} ms\n"
                f"  total median: direct {statistics.median(d_tot) * 1000:.0f} ms, through "
                f"{statistics.median(g_tot) * 1000:.0f} ms, ratio "
                f"{statistics.median(g_tot) / statistics.median(d_tot):.3f}"
            )

        print("one image in 1 KB SSE events (request to [DONE], median):")
        for mb in (1, 4, 16):
            spec = {"kind": "pieces", "mb": mb, "chunk": 1024}
            run_stream(client, gw_url, spec)  # warm
            direct = [run_stream(client, direct_url, spec)[0] for _ in range(args.rounds)]
            through = [run_stream(client, gw_url, spec)[0] for _ in range(args.rounds)]
            dm, tm = statistics.median(direct), statistics.median(through)
            print(
                f"  {mb:>2} MB ({int(mb * 2**20 * 4 / 3 / 1024)} events): direct {dm * 1000:.0f} ms,"
                f" through {tm * 1000:.0f} ms, PicGate adds {(tm - dm) * 1000:.0f} ms"
                f" ({(tm - dm) * 1000 / mb:.0f} ms/MB)"
            )
        burst_case(client, stub, gw_url, args.rounds)


if __name__ == "__main__":
    main()
