"""A server in a subprocess for tests (moto's S3, sqld, PostgreSQL): started, waited for, stopped.

Subclasses build the command and say when the server answers (``_answers``); output goes to
``log_path``, whose tail is in every error, so a server that will not start says why.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx


class ServerProcess:
    name = "server"
    start_timeout = 15.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _answers(self) -> bool:
        """Whether the server answers yet (an ``httpx.TransportError`` means not yet)."""
        raise NotImplementedError

    def _launch(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        user: str | None = None,
        group: str | None = None,
    ) -> None:
        """Start ``command`` (as ``user``/``group`` when given: PostgreSQL will not run as
        root) and wait until the server answers; RuntimeError with the log's tail when it exits
        or stays silent for ``start_timeout`` seconds."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            user=user,
            group=group,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            try:
                if self._answers():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server. Safe to call when it is not running."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
