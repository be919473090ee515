"""Load: concurrent generations through one PicGate process on SQLite, with a stub upstream.

Reports throughput, latency percentiles, errors, "database is locked" lines in the server log,
and the server's RSS at start and end. ``--mixed`` adds chat streams, image reads and admin
pages to the mix (for the long soak: RSS must stay flat).

    .venv/bin/python -m bench.load [--concurrency 64] [--seconds 60] [--mixed]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.procs import percentile, picgate, stub_upstream

KEY = "pg-bench-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


async def run(gateway: str, concurrency: int, seconds: float, mixed: bool) -> dict[str, object]:
    latencies: dict[str, list[float]] = {}
    statuses: Counter[str] = Counter()
    urls: list[str] = []
    stop = time.monotonic() + seconds

    async def generation(client: httpx.AsyncClient) -> None:
        r = await client.post(
            gateway + "/v1/images/generations", json={"prompt": "load"}, headers=AUTH
        )
        statuses[f"gen {r.status_code}"] += 1
        if r.status_code == 200:
            urls.append(r.json()["data"][0]["url"])

    async def read(client: httpx.AsyncClient) -> None:
        if not urls:
            return await generation(client)
        r = await client.get(random.choice(urls))
        statuses[f"read {r.status_code}"] += 1

    async def chat(client: httpx.AsyncClient) -> None:
        body = {"model": "picgate", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with client.stream(
            "POST", gateway + "/v1/chat/completions", json=body, headers=AUTH
        ) as r:
            async for _ in r.aiter_bytes():
                pass
        statuses[f"chat {r.status_code}"] += 1

    async def admin(client: httpx.AsyncClient) -> None:
        r = await client.get(gateway + "/admin/login")
        statuses[f"admin {r.status_code}"] += 1

    kinds = [("generation", generation)]
    if mixed:
        kinds += [("read", read), ("read", read), ("chat", chat), ("admin", admin)]

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            name, fn = random.choice(kinds)
            t0 = time.perf_counter()
            try:
                await fn(client)
            except httpx.HTTPError as exc:
                statuses[f"{name} {type(exc).__name__}"] += 1
            latencies.setdefault(name, []).append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return {"latencies": latencies, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--mixed", action="store_true")
    parser.add_argument("--image-bytes", type=int, default=100_000)
    args = parser.parse_args()
    with stub_upstream(args.image_bytes) as upstream, picgate(upstream, True) as gw:
        pid = picgate.last_pid  # type: ignore[attr-defined]
        start_rss = rss_kb(pid)
        t0 = time.monotonic()
        result = asyncio.run(run(gw, args.concurrency, args.seconds, args.mixed))
        elapsed = time.monotonic() - t0
        end_rss = rss_kb(pid)
        log_text = picgate.last_log.read_text(errors="replace")  # type: ignore[attr-defined]
    lat = result["latencies"]
    statuses = result["statuses"]
    assert isinstance(lat, dict) and isinstance(statuses, Counter)
    total = sum(len(v) for v in lat.values())
    print(
        f"{'mixed' if args.mixed else 'generations'}: {args.concurrency} concurrent, "
        f"{elapsed:.0f} s, {total} requests, {total / elapsed:.1f} req/s"
    )
    for name, values in sorted(lat.items()):
        print(
            f"  {name}: n={len(values)} p50 {statistics.median(values):.0f} ms "
            f"p90 {percentile(values, 0.9):.0f} ms p99 {percentile(values, 0.99):.0f} ms "
            f"max {max(values):.0f} ms"
        )
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    errors = sum(v for k, v in statuses.items() if not k.endswith((" 200", " 303", " 304")))
    print(
        f"  errors: {errors}; 'database is locked' in server log: "
        f"{log_text.count('database is locked')}"
    )
    print(f"  server RSS: start {start_rss / 1024:.1f} MB, end {end_rss / 1024:.1f} MB")
    tracebacks = log_text.count("Traceback (most recent call last)")
    print(f"  tracebacks in server log: {tracebacks}")
    if tracebacks:
        first = log_text.index("Traceback (most recent call last)")
        print("  first one:\n    " + "\n    ".join(log_text[first:].splitlines()[:30]))


if __name__ == "__main__":
    main()
