"""Memory of requests that name one stored image many times (``MAX_INLINE_IMAGES_MB``).

The stub upstream and PicGate run as two processes on loopback. One ~4 MB PNG is stored through
a generation; then each case sends one small request that names it ``--refs`` times, to a fresh
PicGate process (so its peak RSS, ``VmHWM``, is that request's own). Printed per case: the
request's size, the answer's status and code, PicGate's RSS before the request and its peak.

    .venv/bin/python -m bench.inline_refs [--refs 100] [--image-mb 4]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from bench.procs import picgate, stub_upstream

KEY = "pg-bench-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def chat_parts(url: str, refs: int) -> tuple[str, dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": f"{url}#{i}"}} for i in range(refs)]
    messages = [{"role": "user", "content": [{"type": "text", "text": "again"}, *parts]}]
    return "/v1/chat/completions", {"model": "picgate", "messages": messages}


def chat_markdown(url: str, refs: int) -> tuple[str, dict[str, Any]]:
    markdown = "\n".join(f"![a]({url}#{i})" for i in range(refs))
    messages = [
        {"role": "user", "content": "draw"},
        {"role": "assistant", "content": markdown},
        {"role": "user", "content": "again"},
    ]
    return "/v1/chat/completions", {"model": "picgate", "messages": messages}


def edit_urls(url: str, refs: int) -> tuple[str, dict[str, Any]]:
    return "/v1/images/edits", {"prompt": "blue", "image": [url] * refs}


CASES = {"chat image_url parts": chat_parts, "chat markdown": chat_markdown, "edit JSON": edit_urls}


def run_case(upstream: str, build: Any, refs: int) -> str:
    with picgate(upstream) as base:
        pid: int = picgate.last_pid  # type: ignore[attr-defined]
        with httpx.Client(base_url=base, headers=HEADERS, timeout=600) as client:
            made = client.post("/v1/images/generations", json={"prompt": "p"})
            made.raise_for_status()
            path, body = build(made.json()["data"][0]["url"], refs)
            raw = json.dumps(body).encode()
            before = status_kb(pid, "VmRSS")
            resp = client.post(path, content=raw, headers={"Content-Type": "application/json"})
            peak = status_kb(pid, "VmHWM")
        code = resp.json().get("error", {}).get("code") if resp.status_code != 200 else "-"
        return (
            f"{len(raw) / 1024:6.1f} KB | {resp.status_code} {code} | RSS before "
            f"{before / 1024:6.1f} MB, peak {peak / 1024:7.1f} MB (+{(peak - before) / 1024:.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, default=100)
    parser.add_argument("--image-mb", type=float, default=4.0)
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    args = parser.parse_args()
    with stub_upstream(int(args.image_mb * 2**20)) as upstream:
        for name in args.case or CASES:
            line = run_case(upstream, CASES[name], args.refs)
            print(f"{name:22} x{args.refs}: {line}", flush=True)


if __name__ == "__main__":
    main()
