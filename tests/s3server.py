"""A real S3 server for tests: moto's server in a subprocess, over HTTP on 127.0.0.1.

    with S3Server() as server:
        server.create_bucket("images")
        store = server.make_store("images")

``stop()`` then ``start()`` reuses the same port, so a store built before an outage talks to the
server again afterwards. moto keeps its state in memory: after a restart (or ``reset()``) the
buckets are gone and must be created again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from picgate.storage.s3_store import S3ObjectStore

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class S3Server:
    """moto's S3 server in a subprocess; its output goes to ``log_path``."""

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        if log_dir is None:
            log_dir = Path(tempfile.mkdtemp(prefix="picgate-s3-"))
        self.log_path = log_dir / f"moto-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server (on the same port as before) and wait until it answers HTTP."""
        if self.running:
            return self
        self._log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                self._close()
                raise RuntimeError(f"moto server exited with {code}:\n{self._log_tail()}")
            try:
                httpx.get(f"{self.endpoint_url}/moto-api/data.json", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint_url} within {START_TIMEOUT:.0f} s:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (its state is lost). Safe to call when it is not running."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._close()

    def _close(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=5.0).raise_for_status()

    def client(self) -> Any:
        """A plain boto3 S3 client for this server, for checks that bypass PicGate's store."""
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def make_store(self, bucket: str, **options: Any) -> S3ObjectStore:
        """A store on this server; ``options`` go to S3ObjectStore (timeouts, max_attempts)."""
        return S3ObjectStore(
            bucket=bucket,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            endpoint_url=self.endpoint_url,
            region="auto",
            **options,
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
