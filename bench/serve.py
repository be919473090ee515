"""Requests per second for GET /images/{id} (keep-alive), for the 304 path, and with a real
nginx in front: PicGate alone, nginx proxying to PicGate, nginx with ``X-Accel-Redirect``
(``SENDFILE_HEADER``: PicGate decides, nginx sends the file), and nginx serving the file itself.

Uses wrk (Debian package `wrk`) when it is installed, else a Python keep-alive client (which is
itself the bottleneck; the figures say which one ran). The nginx cases run when nginx is
installed (Debian package `nginx`; bench/nginx.py starts its own instance on 127.0.0.1).

    .venv/bin/python -m bench.serve [--seconds 10] [--connections 32] [--image-kb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench import nginx as nginx_bench
from bench.procs import picgate, stub_upstream

KEY = "pg-bench-key-0123456789"


def store_image(gateway: str) -> tuple[str, str]:
    """Generate one JPEG through PicGate; returns (url, etag)."""
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


def run_wrk(url: str, seconds: int, connections: int, header: str | None) -> tuple[float, str]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(rps.group(1)) if rps else 0.0, (
        f"wrk {connections} connections, {seconds}s: {rps.group(1) if rps else '?'} req/s, "
        f"p50 {p50.group(1) if p50 else '?'}, p99 {p99.group(1) if p99 else '?'}, "
        f"non-2xx/3xx {errors.group(1) if errors else 0}"
    )


async def run_python(
    url: str, seconds: int, connections: int, headers: dict[str, str]
) -> tuple[float, str]:
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
    rate = count / seconds
    return rate, f"python client {connections} connections, {seconds}s: {rate:.0f} req/s"


def load(url: str, args: argparse.Namespace, etag: str | None = None) -> tuple[float, str]:
    if shutil.which("wrk"):
        return run_wrk(url, args.seconds, args.connections, etag and f"If-None-Match: {etag}")
    headers = {"If-None-Match": etag} if etag else {}
    return asyncio.run(run_python(url, args.seconds, args.connections, headers))


def check_handoff(front: str, path: str, data: bytes, etag: str) -> None:
    """What a client gets through nginx with X-Accel-Redirect is PicGate's answer, bytes and
    headers; fails loudly before any figure is printed otherwise."""
    r = httpx.get(front + path)
    h = r.headers
    assert r.status_code == 200 and r.content == data, (r.status_code, len(r.content))
    assert h["etag"] == etag, h.get("etag")
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "public, max-age=31536000, immutable"
    assert h["content-type"] == "image/jpeg" and h["content-disposition"].startswith("inline")
    assert "x-accel-redirect" not in h
    assert httpx.get(front + path, headers={"If-None-Match": etag}).status_code == 304
    ranged = httpx.get(front + path, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]
    head = httpx.head(front + path)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert httpx.get(front + "/images/AAAAAAAAAAAAAAAAAAAAAA.jpg").status_code == 404
    name = path.rsplit("/", 1)[-1]
    # the internal location exists (the handoff above used it) but answers no client
    assert httpx.get(f"{front}{nginx_bench.PREFIX}{name[:2]}/{name}").status_code == 404
    print("nginx + X-Accel-Redirect: bytes, ETag, nosniff, 304, 206, HEAD, 404 checked")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--image-kb", type=int, default=100)
    args = parser.parse_args()
    results: dict[str, float] = {}

    def case(label: str, url: str, etag: str | None = None) -> None:
        rate, text = load(url, args, etag)
        results[label] = rate
        print(f"{label}: {text}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="picgate-bench-serve-") as data,
        stub_upstream(args.image_kb * 1000, "JPEG") as upstream,
    ):
        # nginx's workers run as an unprivileged user when it starts as root: they must read it
        Path(data).chmod(0o755)
        shared = {"DATA_DIR": data, "DATABASE_URL": f"sqlite:///{data}/db/picgate.db"}
        images_dir = Path(data) / "images"
        with picgate(upstream, **shared) as gateway:
            url, etag = store_image(gateway)
            body = httpx.get(url).content
            path = "/images/" + url.rsplit("/", 1)[-1]
            print(f"serving {path} ({len(body) / 1000:.0f} KB)", flush=True)
            case("PicGate alone, 200", url)
            case("PicGate alone, 304 If-None-Match", url, etag)
            if not nginx_bench.available():
                print("nginx not installed (apt-get install nginx): proxy cases skipped")
                return
            port = int(gateway.rsplit(":", 1)[1])
            with nginx_bench.nginx(port, images_dir) as front:
                case("nginx -> PicGate (bytes through PicGate)", front + path)
                image_id = path.rsplit("/", 1)[-1].split(".")[0]
                direct = f"{front}/direct/{image_id[:2]}/{path.rsplit('/', 1)[-1]}"
                assert httpx.get(direct).content == body
                case("nginx serving the file directly", direct)
        handoff = shared | {
            "SENDFILE_HEADER": "X-Accel-Redirect",
            "SENDFILE_PREFIX": nginx_bench.PREFIX,
        }
        with picgate(upstream, **handoff) as gateway:
            port = int(gateway.rsplit(":", 1)[1])
            with nginx_bench.nginx(port, images_dir) as front:
                check_handoff(front, path, body, etag)
                case("nginx -> PicGate, X-Accel-Redirect", front + path)
    alone = results["PicGate alone, 200"]
    ceiling = results["nginx serving the file directly"]
    print("ratios (req/s over PicGate alone, 200 | over nginx serving the file):")
    for label, rate in results.items():
        print(f"  {label}: {rate / alone:.2f}x | {rate / ceiling:.2f}x")


if __name__ == "__main__":
    main()
