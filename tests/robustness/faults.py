"""Fault injectors on real sockets: an upstream that resets mid-answer, a TCP proxy that can be
killed and brought back (an S3 outage without losing the bucket), and ``picgate serve`` as a
subprocess that can be SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY
from tests.support.processes import ServerProcess
from tests.support.servers import RawServer, free_port


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN: what a crashed peer or a middlebox does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_request(conn: socket.socket) -> bytes:
    """One HTTP/1.1 request with a Content-Length body (what httpx sends upstream)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        part = conn.recv(65536)
        if not part:
            break
        body += part
    return head


class ResettingUpstream(RawServer):
    """An upstream that answers with ``prefix`` (status line, headers, part of a body) and then
    resets the connection. An empty prefix resets before any byte."""

    def __init__(self) -> None:
        self.prefix = b""
        self.requests = 0
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, conn: socket.socket) -> None:
        try:
            read_request(conn)
            self.requests += 1
            if self.prefix:
                conn.sendall(self.prefix)
                time.sleep(0.2)  # let the gateway read the prefix before the reset
        except OSError:
            pass
        reset(conn)


class KillableProxy:
    """A TCP proxy to ``target`` on a fixed loopback port. ``kill()`` resets every connection
    and, until ``revive()``, resets each new one as soon as it arrives. The port stays bound the
    whole time, so nothing else (an outgoing connection's ephemeral port) can take it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._dead = False
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revive(self) -> None:
        self._dead = False

    def kill(self) -> None:
        self._dead = True
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            reset(conn)

    def close(self) -> None:
        self.kill()
        self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._dead:
                reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                reset(client)
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


SERVE = (sys.executable, "-m", "picgate.cli", "serve", "--host", "127.0.0.1")


class ServeProcess(ServerProcess):
    """``python -m picgate.cli serve`` in its own process, configured through the environment."""

    name = "picgate serve"
    start_timeout = 30.0

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        super().__init__(log)
        self.env = env
        self.port = port

    @property
    def log(self) -> Path:
        return self.log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        self._launch([*SERVE, "--port", str(self.port)], self.env)
        return self

    def _answers(self) -> bool:
        return httpx.get(self.url + "/health", timeout=2).status_code == 200

    def sigkill(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(10)
        self.stop()  # the process is gone: closes the log, ready for start() again

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "picgate.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def serve_process(tmp_path: Path, upstream_base: str, **extra_env: str) -> ServeProcess:
    """``picgate serve`` on a free port with its data under ``tmp_path / "data"``, not started.

    ``extra_env`` adds or overrides settings (a test's own deadlines, say).
    """
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICGATE", "R2_"))}
    env.update(
        DATA_DIR=str(data_dir),
        DATABASE_URL=f"sqlite:///{data_dir}/db/picgate.db",
        UPSTREAM_API_BASE=upstream_base,
        UPSTREAM_API_KEY=UPSTREAM_KEY,
        UPSTREAM_MODEL_NAME="gpt-image-1",
        GATEWAY_API_KEY=GATEWAY_KEY,
        SECRET_KEY="serve-process-secret-key-0123",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LOG_LEVEL="WARNING",
    )
    env.update(extra_env)
    return ServeProcess(env, port, tmp_path / "serve.log")
