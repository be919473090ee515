"""R2 costs: serving an image whose local copy is gone, and uploading inline in serverless mode.

moto's S3 server (tests/s3server.py), the stub upstream and PicGate each run as a separate
process on loopback, so the figures are the work of the real stack, not of one busy process.

1. Cache miss (server mode): N images are generated and archived; then, for each one, its local
   file is deleted and ``GET /images/{id}.png`` is timed once (the miss: fetch from S3, write
   the file back, serve it) and then HITS more times (the local file).
2. Inline upload: ``POST /v1/images/generations`` timed in serverless mode (the object is
   written to S3 before the response returns) and in server mode (the upload is queued and done
   by the background worker), interleaved. Serverless mode refuses to start without R2.

    .venv/bin/python -m bench.serve_r2 [--images 20] [--hits 5] [--sizes 200000,2000000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import percentile, picgate, stub_upstream
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server

KEY = "pg-bench-key-0123456789"
BUCKET = "picgate-bench"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def r2_env(server: S3Server) -> dict[str, str]:
    return {
        "R2_ENDPOINT_URL": server.endpoint_url,
        "R2_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "R2_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "R2_BUCKET_NAME": BUCKET,
    }


def generate(client: httpx.Client, gateway: str) -> tuple[str, float]:
    """One generation through PicGate; returns (image url, seconds)."""
    started = time.perf_counter()
    r = client.post(gateway + "/v1/images/generations", json={"prompt": "bench"}, headers=HEADERS)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    item = r.json()["data"][0]
    if "url" not in item:
        raise RuntimeError("PicGate answered inline: the upload failed")
    return str(item["url"]), elapsed


def wait_archived(server: S3Server, ids: list[str], timeout: float = 60.0) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    for image_id in ids:
        while True:
            try:
                client.head_object(Bucket=BUCKET, Key=f"images/{image_id}.png")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def millis(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"median {statistics.median(ms):6.1f} ms, p90 {percentile(ms, 0.9):6.1f} ms (n={len(ms)})"
    )


def bench_cache_miss(server: S3Server, size: int, images: int, hits: int) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        stub_upstream(size) as upstream,
        picgate(upstream, IMAGES_DIR=folder, **r2_env(server)) as gateway,
        httpx.Client(timeout=60) as client,
    ):
        urls = [generate(client, gateway)[0] for _ in range(images)]
        ids = [url.rsplit("/", 1)[-1].split(".")[0] for url in urls]
        wait_archived(server, ids)
        client.get(urls[0]).raise_for_status()  # warm the connection and the serving path
        misses: list[float] = []
        local: list[float] = []
        for url, image_id in zip(urls, ids, strict=True):
            (Path(folder) / image_id[:2] / f"{image_id}.png").unlink()
            started = time.perf_counter()
            r = client.get(url)
            misses.append(time.perf_counter() - started)
            r.raise_for_status()
            for _ in range(hits):
                started = time.perf_counter()
                client.get(url).raise_for_status()
                local.append(time.perf_counter() - started)
        body = len(r.content)
    print(f"  cache miss, {body / 1e6:.2f} MB PNG:")
    print(f"    first hit (fetch from S3 + re-cache): {millis(misses)}")
    print(f"    next hits (local file):               {millis(local)}")


def bench_inline_upload(server: S3Server, size: int, images: int) -> None:
    # Serverless mode refuses to start without R2, so the baseline is server mode, where the
    # upload is queued and done by the background worker after the response.
    serverless = {"RUNTIME_MODE": "serverless", "SECRET_KEY": "bench-secret-key-0123456789"}
    with (
        tempfile.TemporaryDirectory() as inline_dir,
        tempfile.TemporaryDirectory() as queued_dir,
        stub_upstream(size) as upstream,
        picgate(upstream, IMAGES_DIR=inline_dir, **serverless, **r2_env(server)) as inline,
        picgate(upstream, IMAGES_DIR=queued_dir, RUNTIME_MODE="server", **r2_env(server)) as queued,
        httpx.Client(timeout=60) as client,
    ):
        generate(client, inline)  # first use builds the S3 client: not what is measured
        generate(client, queued)
        timed: dict[str, list[float]] = {"inline": [], "queued": []}
        for _ in range(images):
            timed["inline"].append(generate(client, inline)[1])
            timed["queued"].append(generate(client, queued)[1])
            time.sleep(0.05)  # let the server-mode worker finish its upload between rounds
    added = statistics.median(timed["inline"]) - statistics.median(timed["queued"])
    print(f"  generation, {size / 1e6:.1f} MB PNG:")
    print(f"    serverless, inline upload to S3:  {millis(timed['inline'])}")
    print(f"    server mode, upload queued:       {millis(timed['queued'])}")
    print(f"    added by the inline upload (median): {added * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--hits", type=int, default=5)
    parser.add_argument("--sizes", default="200000,2000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with S3Server() as server:
        server.create_bucket(BUCKET)
        print("R2 cache miss (server mode, moto S3 over loopback HTTP)")
        for size in sizes:
            bench_cache_miss(server, size, args.images, args.hits)
        print("R2 inline upload (serverless) vs queued upload (server mode)")
        for size in sizes:
            bench_inline_upload(server, size, args.images)


if __name__ == "__main__":
    main()
