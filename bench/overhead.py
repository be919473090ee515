"""Added latency of PicGate on /v1/images/generations (upstream answers one PNG as b64_json).

Calls the stub upstream directly and through PicGate (response_format=url), interleaved, and
prints medians, p90 and the added milliseconds for 1 MB and 8 MB images: the difference of the
two medians (the goal's figure) and, steadier on a machine whose speed drifts, the median of
the differences between each call and its direct twin.

    .venv/bin/python -m bench.overhead [--calls 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bench.procs import percentile, picgate, stub_upstream

KEY = "pg-bench-key-0123456789"


def measure(size: int, calls: int) -> None:
    with stub_upstream(size) as upstream, picgate(upstream) as gateway:
        body = {"model": "picgate", "prompt": "a fox", "response_format": "url"}
        direct, through = [], []
        with httpx.Client(timeout=60) as client:
            for _ in range(3):  # warm both paths
                client.post(upstream + "/images/generations", json=body)
                client.post(
                    gateway + "/v1/images/generations",
                    json=body,
                    headers={"Authorization": f"Bearer {KEY}"},
                )
            for _ in range(calls):
                t0 = time.perf_counter()
                r = client.post(upstream + "/images/generations", json=body)
                direct.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                t0 = time.perf_counter()
                r = client.post(
                    gateway + "/v1/images/generations",
                    json=body,
                    headers={"Authorization": f"Bearer {KEY}"},
                )
                through.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                assert r.json()["data"][0]["url"].startswith(gateway)
        md, mt = statistics.median(direct), statistics.median(through)
        # each call through PicGate right after its direct twin: the median of those
        # differences is steadier than the difference of medians on a machine whose speed drifts
        paired = statistics.median(t - d for d, t in zip(direct, through, strict=True))
        print(
            f"{size / 2**20:.1f} MB PNG, {calls} calls each: direct median {md:.1f} ms "
            f"p90 {percentile(direct, 0.9):.1f} ms | through PicGate median {mt:.1f} ms "
            f"p90 {percentile(through, 0.9):.1f} ms | added median {mt - md:.1f} ms "
            f"(median of paired differences {paired:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    for size in (1 * 2**20, 8 * 2**20):
        measure(size, args.calls)


if __name__ == "__main__":
    main()
