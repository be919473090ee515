"""Start the stub upstream and PicGate as separate processes on loopback for benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], env: dict[str, str], health: str, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args, env=os.environ | env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        wait_http(health)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def stub_upstream(image_bytes: int, fmt: str = "PNG") -> Iterator[str]:
    """The stub upstream (tests/support/upstream.py) answering one image of ~image_bytes."""
    port = free_port()
    code = (
        "import sys, uvicorn\n"
        "from tests.support.upstream import StubUpstream\n"
        "from tests.support.images import make_image\n"
        "stub = StubUpstream()\n"
        f"stub.reset = lambda: None\n"
        f"stub.image = make_image({fmt!r}, {image_bytes}, seed=1)\n"
        "stub.requests = type('L', (list,), {'append': lambda self, x: None})()\n"
        f"uvicorn.run(stub.app, host='127.0.0.1', port={port}, log_level='warning')\n"
    )
    with process([sys.executable, "-c", code], {}, f"http://127.0.0.1:{port}/v1/models"):
        yield f"http://127.0.0.1:{port}/v1"


@contextmanager
def picgate(upstream_base: str, capture_log: bool = False, /, **env: str) -> Iterator[str]:
    """PicGate as a separate process; ``picgate.last_pid`` / ``picgate.last_log`` describe it."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        base_env = {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "DATA_DIR": data,
            "DATABASE_URL": f"sqlite:///{data}/db/picgate.db",
            "UPSTREAM_API_BASE": upstream_base,
            "UPSTREAM_API_KEY": "sk-bench",
            "UPSTREAM_MODEL_NAME": "gpt-image-1",
            "GATEWAY_API_KEY": "pg-bench-key-0123456789",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "LOG_LEVEL": "WARNING",
            "LOCAL_CACHE_TTL_HOURS": "72",
        }
        args = [
            sys.executable,
            "-m",
            "picgate.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        log = Path(data) / "server.log" if capture_log else None
        with process(args, base_env | env, f"http://127.0.0.1:{port}/health", log) as proc:
            picgate.last_pid = proc.pid  # type: ignore[attr-defined]
            picgate.last_log = log  # type: ignore[attr-defined]
            yield f"http://127.0.0.1:{port}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
