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
import sys
import tempfile
from pathlib import Path
from typing import Any, Self

import httpx

from picgate.storage.s3_store import S3ObjectStore
from tests.support.processes import ServerProcess
from tests.support.servers import free_port

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
START_TIMEOUT = 15.0


class S3Server(ServerProcess):
    """moto's S3 server in a subprocess; its output goes to ``log_path``."""

    name = "moto server"
    start_timeout = START_TIMEOUT

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        if log_dir is None:
            log_dir = Path(tempfile.mkdtemp(prefix="picgate-s3-"))
        super().__init__(log_dir / f"moto-{self.port}.log")
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start the server (on the same port as before) and wait until it answers HTTP."""
        if self.running:
            return self
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._launch(command, {**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def _answers(self) -> bool:
        httpx.get(f"{self.endpoint_url}/moto-api/data.json", timeout=1.0)
        return True

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
