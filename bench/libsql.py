"""SQLite file vs a libSQL server (sqld): the same workload through one PicGate process each.

Each of ``--concurrency`` clients loops: generate an image (stub upstream), then read it back.
Prints per backend: requests, throughput, p50/p95 latency of generations and reads, errors,
and the "could not write N log lines" warnings in the server log (dropped event-log lines).

    .venv/bin/python -m bench.libsql [--concurrency 8] [--seconds 20]

sqld comes from ``PICGATE_SQLD`` or ``.cache/sqld`` (scripts/test.sh fetches it).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.procs import percentile, picgate, stub_upstream
from tests.sqld import SqldServer

AUTH = {"Authorization": "Bearer pg-bench-key-0123456789"}


async def run(gateway: str, concurrency: int, seconds: float) -> dict[str, object]:
    latencies: dict[str, list[float]] = {"generation": [], "read": []}
    statuses: Counter[str] = Counter()
    stop = time.monotonic() + seconds

    async def timed(name: str, request: object) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            response: httpx.Response = await request  # type: ignore[misc]
        except httpx.HTTPError as exc:
            statuses[f"{name} {type(exc).__name__}"] += 1
            return None
        latencies[name].append((time.perf_counter() - t0) * 1000)
        statuses[f"{name} {response.status_code}"] += 1
        return response

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            made = await timed(
                "generation",
                client.post(
                    gateway + "/v1/images/generations", json={"prompt": "bench"}, headers=AUTH
                ),
            )
            if made is not None and made.status_code == 200:
                await timed("read", client.get(made.json()["data"][0]["url"]))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    total = sum(len(v) for v in latencies.values())
    out: dict[str, object] = {"requests": total, "req/s": round(total / elapsed, 1)}
    for name, values in latencies.items():
        if values:
            out[f"{name} p50 ms"] = round(percentile(values, 0.50), 1)
            out[f"{name} p95 ms"] = round(percentile(values, 0.95), 1)
    failed = {k: n for k, n in statuses.items() if not k.endswith(" 200")}
    out["errors"] = sum(failed.values())
    if failed:
        out["failed"] = failed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--backend", choices=["both", "sqlite", "sqld"], default="both")
    args = parser.parse_args()
    with (
        stub_upstream(50_000) as upstream,
        tempfile.TemporaryDirectory() as tmp,
        SqldServer(Path(tmp) / "sqld") as sqld,
    ):
        for label, url in (("sqlite file", None), ("sqld (libSQL)", sqld.database_url)):
            if args.backend != "both" and (url is None) != (args.backend == "sqlite"):
                continue
            env = {"DATABASE_URL": url} if url else {}
            with picgate(upstream, True, **env) as gateway:
                result = asyncio.run(run(gateway, args.concurrency, args.seconds))
                log: Path = picgate.last_log  # type: ignore[attr-defined]
                text = log.read_text()
                result["dropped-log warnings"] = text.count("could not write")
                if result["errors"]:
                    Path("bench-libsql-server.log").write_text(text)
                    print("server log: bench-libsql-server.log; sqld log:", sqld.log_path)
            print(f"{label:14} " + "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
