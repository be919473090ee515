"""The HTTP/1.1 protocol ``picgate serve`` runs: uvicorn's h11 one, with bounds on request heads.

uvicorn's default (httptools) accepts a request head of several megabytes and neither it nor the
h11 implementation limits how long a head may take to arrive: ten connections that trickle
unfinished 40 MB heads cost ~400 MB of memory and hold their sockets for ever. Here:

- a head larger than ``MAX_HEAD_BYTES`` is refused (h11's ``max_incomplete_event_size``), with
  431 in OpenAI's error shape, and the connection is closed;
- a head must arrive within ``head_timeout`` seconds of its first byte (or of the connection
  opening): otherwise 408 in OpenAI's error shape (nothing when no byte came), and the
  connection is closed. Idle time *between* requests stays uvicorn's keep-alive timeout;
- a head of more than ``MAX_HEADERS`` header lines is refused with 431 before h11 parses it
  (10,000 tiny headers fit in 64 KiB: 200 such heads took the process from 77 to 260 MB);
- at most ``max_connections`` connections are served at once (``MAX_CONNECTIONS``): one more is
  answered ``503 server_busy`` in OpenAI's shape at once and closed, so slow or idle clients
  cannot take every file descriptor (2000 slow connections against an open-file limit of 1024
  made 58 of 89 normal requests fail: the database and the upstream need descriptors too).
  uvicorn's own ``limit_concurrency`` is not used: it keeps the connection and answers plain text.

Every close is a lingering one (as nginx's ``lingering_close``): the answer is followed by a FIN,
what the client still sends is read and dropped, and the socket is closed when the client closes
or after ``LINGER_SECONDS``. Closing at once while request bytes sit unread makes the kernel send
an RST, which can destroy the error answer before the client has read it.

Bodies are bounded in time by ``picgate.middleware.BodyLimitMiddleware``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus
from typing import Any, cast

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from picgate.errors import error_body

# Cookies and long URLs fit with room to spare; uvicorn's httptools default is 8 MB a head.
MAX_HEAD_BYTES = 64 * 1024
# header lines in one request head (Apache's LimitRequestFields); browsers send about twenty
MAX_HEADERS = 100
MAX_CONNECTIONS = 512
# descriptors the rest of the server needs beside its client connections: the database, the
# upstream and R2 connection pools, image files being served or written, logs
OTHER_FILES = 256
HEAD_TIMEOUT_SECONDS = 30.0
LINGER_SECONDS = 2.0


def _error_response(status: int, reason: bytes, message: str, code: str) -> bytes:
    body = json.dumps(error_body(message, error_type="invalid_request_error", code=code)).encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


HEAD_TIMEOUT_RESPONSE = _error_response(
    408, b"Request Timeout", "The request head did not arrive in time.", "request_timeout"
)
TOO_MANY_HEADERS_RESPONSE = _error_response(
    431,
    b"Request Header Fields Too Large",
    f"The request head has more than {MAX_HEADERS} header lines.",
    "request_header_fields_too_large",
)
BUSY_RESPONSE = _error_response(
    503,
    b"Service Unavailable",
    "PicGate is serving as many connections as it takes (MAX_CONNECTIONS); try again shortly.",
    "server_busy",
).replace(b"connection: close\r\n", b"connection: close\r\nretry-after: 1\r\n")


class LingeringTransport:
    """A transport whose ``close()`` half-closes and lingers; everything else is the real one's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._linger: asyncio.TimerHandle | None = None

    @property
    def lingering(self) -> bool:
        return self._linger is not None

    def close(self) -> None:
        if self._linger is not None or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()  # after what is buffered: the answer goes out first
        self._linger = self._loop.call_later(LINGER_SECONDS, self.finish)

    def finish(self) -> None:
        """Close for real (the linger is over, or the connection is gone)."""
        if self._linger is not None:
            self._linger.cancel()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._linger is not None or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedH11Protocol(H11Protocol):
    """H11Protocol with a deadline for each request head, caps on header lines and
    connections, and JSON 400/431/503 answers."""

    head_timeout: float = HEAD_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_newlines = 0  # newlines seen since the current head began (an upper bound)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering_transport = LingeringTransport(transport, self.loop)
        busy = len(self.connections) >= self.max_connections
        super().connection_made(cast(asyncio.Transport, self._lingering_transport))
        if busy:  # answered before any byte is read; the linger frees the descriptor soon
            self._refuse(BUSY_RESPONSE)
            return
        self._arm()  # a connection that never sends a byte is a head that never arrives

    def data_received(self, data: bytes) -> None:
        if self._lingering_transport.lingering:
            return  # the answer is out and the connection is closing: drop the rest
        if self.conn.their_state is h11.IDLE:
            if self._head_deadline is None:
                self._arm()  # the first byte of the next request on a kept-alive connection
            self._head_newlines += data.count(b"\n")
            if self._head_newlines > MAX_HEADERS + 2 and self._too_many_headers(data):
                self._refuse(TOO_MANY_HEADERS_RESPONSE)
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete (or broken: already answered)
            self._head_newlines = 0

    def _too_many_headers(self, data: bytes) -> bool:
        """Whether the head being received has more than MAX_HEADERS header lines (exact:
        newlines after the head's end, in a body sent with it, do not count). Runs only once
        the rough count of newlines passes the cap."""
        head = self.conn.trailing_data[0] + data
        end = head.find(b"\r\n\r\n")
        lines = head.count(b"\n", 0, end if end != -1 else len(head))
        if end == -1 and lines <= MAX_HEADERS + 1:
            self._head_newlines = lines  # exact again: the body's newlines were counted
        return lines > MAX_HEADERS + 1  # the request line, then the header lines

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        self.transport.write(answer)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._lingering_transport.finish()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a head h11 refuses, as JSON; 431 when it was too large."""
        oversized = len(self.conn.trailing_data[0]) > self._max_head_bytes()
        if oversized:
            status, code = 431, "request_header_fields_too_large"
            msg = f"The request head is larger than {self._max_head_bytes() // 1024} KiB."
        else:
            status, code = 400, "invalid_request"
        body = json.dumps(error_body(msg, error_type="invalid_request_error", code=code)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"x-content-type-options", b"nosniff"),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _max_head_bytes(self) -> int:
        size = self.config.h11_max_incomplete_event_size
        return size if size is not None else DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a head: say why it is closed
            self.transport.write(HEAD_TIMEOUT_RESPONSE)
        self.transport.close()


def fit_open_files(max_connections: int) -> tuple[int, str | None]:
    """The connection cap the open-file limit allows, and a one-line warning when that is less
    than ``max_connections``. The soft limit is raised toward the hard one first."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to ask
        return max_connections, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + OTHER_FILES
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections, None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft >= needed:
        return max_connections, None
    allowed = max(1, soft - OTHER_FILES)
    return allowed, (
        f"MAX_CONNECTIONS={max_connections} needs about {needed} open files but the limit is "
        f"{soft} (ulimit -n): serving at most {allowed} connections; raise the limit or set "
        f"MAX_CONNECTIONS={allowed}"
    )


def bounded_protocol(
    head_timeout: float, max_connections: int = MAX_CONNECTIONS
) -> type[BoundedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` with this head deadline and connection cap."""
    attributes = {"head_timeout": head_timeout, "max_connections": max_connections}
    return type("BoundedH11Protocol", (BoundedH11Protocol,), attributes)
