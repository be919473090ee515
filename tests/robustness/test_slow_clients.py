"""``picgate serve`` against clients that send too much head or send it too slowly.

The real CLI in its own process, raw sockets. Outcomes are asserted (status, error shape, the
connection closed), never durations: each trickling loop has a generous cap only so that a
server that never cuts the client off fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GATEWAY_KEY
from tests.robustness.faults import ServeProcess, serve_process
from tests.support.upstream import StubUpstream

TRICKLE_CAP = 150  # bytes, one every 0.2 s: 30 s, far past the 1 s deadlines configured below


@pytest.fixture
def server(tmp_path: Path, upstream: StubUpstream) -> Iterator[ServeProcess]:
    process = serve_process(
        tmp_path,
        upstream.base_url,
        REQUEST_HEADER_TIMEOUT_SECONDS="1",
        REQUEST_BODY_TIMEOUT_SECONDS="1",
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


def trickle(sock: socket.socket, head: bytes) -> bytes:
    """Send ``head``, then one byte every 0.2 s until the server answers or closes."""
    sock.sendall(head)
    for _ in range(TRICKLE_CAP):
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            return read_until_closed(sock)
        try:
            sock.sendall(b"a")
        except OSError:
            break
    return read_until_closed(sock)


def error_of(answer: bytes, status: int) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"application/json" in head.lower()
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_slow_clients_oversized_head_431_and_closed(server: ServeProcess) -> None:
    """uvicorn's httptools took an 8 MB head; 70 KB is past the 64 KiB cap."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\nX-Big: " + b"a" * 70_000)
        answer = read_until_closed(sock)
    assert error_of(answer, 431)["code"] == "request_header_fields_too_large"


def test_slow_clients_trickled_head_408_and_closed(server: ServeProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = trickle(sock, b"GET /health HTTP/1.1\r\nHost: picgate\r\nX-Slow: ")
    assert error_of(answer, 408)["code"] == "request_timeout"


def test_slow_clients_trickled_body_408_and_closed(server: ServeProcess) -> None:
    head = (
        b"POST /v1/images/generations HTTP/1.1\r\nHost: picgate\r\n"
        b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        b'{"prompt": "'
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = trickle(sock, head)
    assert error_of(answer, 408)["code"] == "request_timeout"


def test_slow_clients_silent_connection_is_closed(server: ServeProcess) -> None:
    """A connection that never sends a byte is closed without an answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert read_until_closed(sock) == b""


def test_slow_clients_ordinary_requests_still_answered(server: ServeProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):  # the same kept-alive connection, twice
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: picgate\r\n\r\n")
            answer = b""
            while not answer.rstrip().endswith(b"}"):
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
