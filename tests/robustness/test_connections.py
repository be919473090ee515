"""``picgate serve`` bounds the connections it holds and the header lines of a head.

The real CLI in its own process, raw sockets. Outcomes are asserted (status, error shape, the
connection closed), never durations.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.robustness.faults import SERVE, ServeProcess, serve_process
from tests.support.upstream import StubUpstream

MAX_CONNECTIONS = 20
SLOW_HEAD = b"GET /health HTTP/1.1\r\nHost: picgate\r\nX-Slow: "


@pytest.fixture
def server(tmp_path: Path, upstream: StubUpstream) -> Iterator[ServeProcess]:
    process = serve_process(
        tmp_path,
        upstream.base_url,
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        REQUEST_HEADER_TIMEOUT_SECONDS="120",  # the slow clients stay for the whole test
    ).start()
    yield process
    process.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a socket timeout fails the test)."""
    sock.settimeout(10)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def error_of(answer: bytes, status: int) -> tuple[dict[str, Any], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"application/json" in head.lower()
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error, head.lower()


def health(server: ServeProcess) -> int:
    return httpx.get(server.url + "/health", timeout=10).status_code


def test_connections_over_max_connections_503_closed_then_served_again(
    server: ServeProcess,
) -> None:
    with ExitStack() as stack:
        slow = []
        for _ in range(MAX_CONNECTIONS):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            sock.sendall(SLOW_HEAD)  # a head that never ends: the connection stays
            slow.append(sock)
        # every further connection is answered at once and closed, not held
        for _ in range(2 * MAX_CONNECTIONS):
            with socket.create_connection(("127.0.0.1", server.port)) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\n\r\n")
                error, head = error_of(read_until_closed(extra), 503)
                assert error["code"] == "server_busy"
                assert b"retry-after:" in head
                assert "MAX_CONNECTIONS" in error["message"]
    # the slow clients are gone: normal requests are served again (the server notices the
    # closes on its next loop turns; a bounded number of tries, no clock)
    statuses = [health(server) for _ in range(50)]
    assert 200 in statuses, statuses
    assert statuses[-1] == 200


def test_connections_head_of_10000_tiny_headers_431(server: ServeProcess) -> None:
    """10,000 one-byte headers fit in the 64 KiB head cap; their count does not."""
    head = b"GET /health HTTP/1.1\r\nHost: picgate\r\n" + b"a:b\r\n" * 10_000 + b"\r\n"
    assert len(head) < 64 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        error, _ = error_of(read_until_closed(sock), 431)
    assert error["code"] == "request_header_fields_too_large"
    assert "100" in error["message"]
    assert health(server) == 200


def test_connections_head_of_100_headers_and_body_newlines_not_refused(
    server: ServeProcess,
) -> None:
    """The cap counts header lines only: 99 headers plus Host, and a body of newlines sent in
    the same packet, pass."""
    body = b"\n" * 5000
    head = (
        b"POST /health HTTP/1.1\r\nHost: picgate\r\n"
        + b"".join(b"x-h%d: v\r\n" % i for i in range(98))
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 405 "), answer[:200]


class LimitedServe(ServeProcess):
    """``picgate serve`` started under an open-file limit of ``files`` (util-linux prlimit)."""

    files = 300

    def start(self) -> LimitedServe:
        limit = f"--nofile={self.files}:{self.files}"
        self._launch(["prlimit", limit, *SERVE, "--port", str(self.port)], self.env)
        return self


def test_connections_cap_over_open_file_limit_lowered_with_one_warning(
    tmp_path: Path, upstream: StubUpstream
) -> None:
    base = serve_process(tmp_path, upstream.base_url, MAX_CONNECTIONS="512")
    server = LimitedServe(base.env, base.port, base.log)
    server.start()
    try:
        assert health(server) == 200
        held = []
        with ExitStack() as stack:  # the lowered cap (300 - 256 = 44) holds: one more is 503
            for _ in range(44):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
                sock.sendall(SLOW_HEAD)
                held.append(sock)
            with socket.create_connection(("127.0.0.1", server.port)) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\n\r\n")
                error, _ = error_of(read_until_closed(extra), 503)
                assert error["code"] == "server_busy"
    finally:
        server.stop()
    warnings = [line for line in server.log.read_text().splitlines() if "MAX_CONNECTIONS=" in line]
    assert len(warnings) == 1, warnings
    assert "ulimit -n" in warnings[0] and "MAX_CONNECTIONS=44" in warnings[0]
