"""Requests per second for GET /images/{id} (200 KB JPEG, keep-alive) and for the 304 path.

Uses wrk (Debian package `wrk`) when it is installed, else a Python keep-alive client (which is
itself the bottleneck; the figures say which one ran).

    .venv/bin/python -m bench.serve [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import time

import httpx

from bench.procs import picgate, stub_upstream

KEY = "pg-bench-key-0123456789"


def store_image(gateway: str) -> tuple[str, str]:
    """Generate one 200 KB JPEG through PicGate; returns (url, etag)."""
    r = httpx.post(
        gateway + "/v1/images/generations",
        json={"prompt": "bench"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    r.raise_for_status()
    url = r.json()["data"][0]["url"]
    head = httpx.get(url)
    head.raise_for_status()
    return url, head.headers["etag"]


def run_wrk(url: str, seconds: int, connections: int, header: str | None) -> str:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"wrk {connections} connections, {seconds}s: {rps.group(1) if rps else '?'} req/s, "
        f"p50 {p50.group(1) if p50 else '?'}, p99 {p99.group(1) if p99 else '?'}, "
        f"non-2xx/3xx {errors.group(1) if errors else 0}"
    )


async def run_python(url: str, seconds: int, connections: int, headers: dict[str, str]) -> str:
    count = 0
    stop = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal count
        while time.monotonic() < stop:
            r = await client.get(url, headers=headers)
            assert r.status_code in (200, 304)
            count += 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    return f"python client {connections} connections, {seconds}s: {count / seconds:.0f} req/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with stub_upstream(200_000, "JPEG") as upstream, picgate(upstream) as gateway:
        url, etag = store_image(gateway)
        size = len(httpx.get(url).content)
        print(f"serving {url.rsplit('/', 1)[-1]} ({size / 1000:.0f} KB)")
        for label, header in (
            ("200 full body", None),
            ("304 If-None-Match", f"If-None-Match: {etag}"),
        ):
            if shutil.which("wrk"):
                result = run_wrk(url, args.seconds, args.connections, header)
            else:
                headers = {"If-None-Match": etag} if header else {}
                result = asyncio.run(run_python(url, args.seconds, args.connections, headers))
            print(f"{label}: {result}")


if __name__ == "__main__":
    main()
