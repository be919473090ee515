"""A PEP 249 driver for remote libSQL (sqld, Turso): Hrana over HTTP, through httpx.

    conn = connect("https://pics.turso.io", auth_token="...")
    cur = conn.cursor()
    cur.execute("select ?", (1,))

Each call is one POST to ``{url}/v2/pipeline`` on the connection's own ``httpx.Client`` (its
pool keeps the TCP/TLS connection open between calls); the calling thread waits in the socket
without holding the GIL, so other threads keep running while a query is in flight.

Transactions follow the stdlib ``sqlite3`` module's default (legacy) control, so SQLAlchemy's
SQLite dialect behaves the same on a file and on a server:

- INSERT/UPDATE/DELETE/REPLACE outside a transaction (also behind a ``WITH`` clause) opens one:
  ``BEGIN`` travels in the same request, as the first step of a batch whose next step runs only
  if ``BEGIN`` succeeded; the server answers with a baton that names the stream the transaction
  lives on. ``BEGIN`` and ``SAVEPOINT`` open one by themselves (SQLite starts a transaction on a
  ``SAVEPOINT`` outside one, and ``RELEASE`` of that outermost savepoint ends it);
- every later statement carries the baton, so it runs inside that transaction;
- ``commit()`` / ``rollback()`` send ``COMMIT`` / ``ROLLBACK`` and close the stream in one request;
- anything else outside a transaction (SELECT, DDL, PRAGMA) runs on a stream that the same
  request opens and closes (autocommit).

The server may name a ``base_url`` for the rest of a stream; it is followed only on the
connection's own scheme, host and port (a server cannot move the auth token to another host or
onto plain http), and ignored otherwise. TLS settings come in as one ``ssl_context`` that the
engine builds once and hands to each of its connections.

The driver only speaks the protocol: writes take turns in ``picgate.db.engine.Database.write``
(sqld 0.24 stalls when several streams wait for its write lock at once), not here.

Errors keep sqlite3's classes (PEP 249): constraint failures are ``IntegrityError``; a refused
token, an unreachable server, an HTTP error status, an expired or unknown stream, or a
transaction the server timed out are ``OperationalError``; an answer that is not the protocol's
shape (not JSON, keys missing, wrong types) is ``InterfaceError``. No other exception leaves the
driver. Once a transaction's stream is lost (or its answer could not be read), every call but
``rollback()`` fails, so no statement meant for the transaction can run outside it.
"""

from __future__ import annotations

import base64
import contextlib
import math
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from picgate.db.statements import OPENS_TRANSACTION, savepoint_name, verb

apilevel = "2.0"
threadsafety = 1  # a connection may move between threads, one at a time (SQLAlchemy's pool)
paramstyle = "qmark"
# SQLAlchemy's SQLite dialect reads its feature flags (RETURNING needs 3.35) from this at
# start-up; every sqld and Turso release runs libSQL's SQLite fork at 3.43 or later
sqlite_version_info = (3, 43, 0)
Binary = bytes

INT64 = (-(2**63), 2**63 - 1)
PIPELINE_PATH = "/v2/pipeline"
# a pooled connection idle longer than this is pinged before use (the server or a proxy may
# have closed its keep-alive socket meanwhile); a busier one has just been heard from
PING_AFTER_IDLE_SECONDS = 10.0
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError)


class Warning(Exception):  # PEP 249's name
    pass


class Error(Exception):
    sqlite_errorname: str = ""


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


class Disconnect(OperationalError):
    """The server could not be reached or the request broke off; the connection is unusable."""


def connect(
    url: str,
    *,
    auth_token: str | None = None,
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Connection:
    """A connection to the server at ``url`` (``https://host`` or ``http://host:port``).

    Nothing is sent until the first statement. ``ssl_context``: the TLS settings, shared by
    every connection of an engine (default: httpx's, built for this connection).
    ``transport`` replaces the network (tests).
    """
    return Connection(
        url, auth_token=auth_token, timeout=timeout, ssl_context=ssl_context, transport=transport
    )


def encode_value(value: object) -> dict[str, Any]:
    """A Python value as a Hrana value."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool | int):
        if not INT64[0] <= value <= INT64[1]:
            raise DataError(f"integer {value} does not fit SQLite's 64 bits")
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, float):
        if not math.isfinite(value):  # JSON cannot carry it
            raise DataError(f"{value} cannot be sent to libSQL over HTTP")
        return {"type": "float", "value": value}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise ProgrammingError(f"unsupported parameter type: {type(value).__name__}")


def decode_value(value: Mapping[str, Any]) -> object:
    """A Hrana value as a Python value (sqlite3's types: int, float, str, bytes, None)."""
    kind = value.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        return float(value["value"])
    if kind == "text":
        return str(value["value"])
    if kind == "blob":
        data = str(value["base64"])
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    raise InterfaceError(f"unknown value type from the server: {kind!r}")


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` has ``base``'s scheme, host and port (default ports filled in)."""
    try:
        a, b = urlsplit(url), urlsplit(base)
        ports = {"http": 80, "https": 443}
        return (
            a.scheme == b.scheme
            and a.scheme in ports
            and (a.hostname or "") == (b.hostname or "")
            and (a.port or ports[a.scheme]) == (b.port or ports[b.scheme])
        )
    except ValueError:  # a port that is not a number
        return False


def statement(sql: str, parameters: Sequence[object] | Mapping[str, object]) -> dict[str, Any]:
    stmt: dict[str, Any] = {"sql": sql, "want_rows": True}
    if isinstance(parameters, Mapping):
        stmt["named_args"] = [
            {"name": name if name[:1] in ":@$" else f":{name}", "value": encode_value(v)}
            for name, v in parameters.items()
        ]
    else:
        stmt["args"] = [encode_value(v) for v in parameters]
    return stmt


def error_from(error: Mapping[str, Any]) -> DatabaseError:
    """A Hrana error as the sqlite3 exception class SQLAlchemy expects for it."""
    code = str(error.get("code") or "")
    message = str(error.get("message") or code or "unknown error")
    message = message.removeprefix("SQLite error: ")
    cls: type[DatabaseError] = OperationalError
    if code.startswith("SQLITE_CONSTRAINT"):
        cls = IntegrityError
    elif code in ("SQLITE_TOOBIG", "SQLITE_RANGE"):
        cls = DataError
    exc = cls(message)
    exc.sqlite_errorname = code
    return exc


def _error_of(outcome: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The error of one pipeline result, None when it is ``ok``; malformed: ValueError."""
    kind = outcome.get("type")
    if kind == "ok":
        return None
    if kind == "error":
        return _checked_error(outcome["error"])
    raise ValueError(f"a pipeline result of type {kind!r}")


def _checked_error(error: object) -> Mapping[str, Any]:
    if not isinstance(error, Mapping):
        raise TypeError(f"an error is {type(error).__name__}, not an object")
    return error


class Result:
    """One statement's answer: column names, decoded rows, affected rows, last rowid.

    A ``raw`` answer of the wrong shape raises KeyError/TypeError/ValueError/AttributeError;
    the connection turns those into InterfaceError.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise TypeError(f"a statement result is {type(raw).__name__}, not an object")
        self.columns = [str(c.get("name") or "") for c in raw.get("cols", [])]
        self.rows = [tuple(decode_value(v) for v in row) for row in raw.get("rows", [])]
        self.affected = int(raw.get("affected_row_count") or 0)
        rowid = raw.get("last_insert_rowid")
        self.last_rowid = int(rowid) if rowid is not None else None


class Connection:
    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.ssl_context = ssl_context
        headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=ssl_context if ssl_context is not None else True,
            transport=transport,
        )
        self._lock = threading.Lock()
        self._baton: str | None = None  # set while a transaction's stream is open
        self._base_url: str | None = None  # where the server asked this stream to continue
        self._broken: str | None = None  # why the open transaction was lost
        self._savepoint: str | None = None  # the savepoint that opened the transaction
        self._closed = False
        self._last_answer = 0.0  # time.monotonic() of the server's last answer

    @property
    def in_transaction(self) -> bool:
        return self._baton is not None or self._broken is not None

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        with self._lock:
            self._check_usable()
            if self._baton is not None:
                self._finish("COMMIT", strict=True)

    def rollback(self) -> None:
        with self._lock:
            self._check_open()
            try:
                if self._baton is not None:
                    self._finish("ROLLBACK", strict=False)
            finally:
                self._broken = None

    def ping(self) -> None:
        """Check that the connection can still reach the server, before the pool hands it
        out. Free when the server answered within ``PING_AFTER_IDLE_SECONDS``; otherwise one
        ``SELECT 1``. Raises ProgrammingError when closed, an Error when the server is gone."""
        self._check_open()
        if self._baton is not None or self._broken is not None:
            return  # in a transaction: the next statement says whether its stream lives
        if time.monotonic() - self._last_answer < PING_AFTER_IDLE_SECONDS:
            return
        self.run("SELECT 1", ())

    def close(self) -> None:
        if self._closed:
            return
        try:
            with contextlib.suppress(Error):  # the server expires an abandoned stream
                self.rollback()
        finally:
            self._closed = True
            self._client.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, sql: str, parameters: Sequence[object] | Mapping[str, object]) -> Result:
        """Execute one statement (see the module docstring for where it runs)."""
        return self.run_many(sql, [parameters])[-1]

    def run_many(
        self, sql: str, seq: Sequence[Sequence[object] | Mapping[str, object]]
    ) -> list[Result]:
        """Execute ``sql`` once per parameter set, all in one request, stopping at the first
        error (the server skips every step after a failed one)."""
        stmts = [statement(sql, parameters) for parameters in seq]
        word = verb(sql)
        with self._lock:
            self._check_usable()
            return self._run(word, sql, stmts)

    def _run(self, word: str, sql: str, stmts: list[dict[str, Any]]) -> list[Result]:
        if self._baton is not None:
            if word in ("COMMIT", "END") or (word == "ROLLBACK" and not savepoint_name(sql)):
                self._finish(word if word != "END" else "COMMIT", strict=word != "ROLLBACK")
                return [Result({})]
            results = self._batch(stmts, keep_stream=True)
            if word == "RELEASE" and self._savepoint == savepoint_name(sql):
                # releasing the savepoint that began the transaction commits it (SQLite)
                self._drop_stream()
            return results
        if word in ("BEGIN", "SAVEPOINT"):
            results = self._batch(stmts, keep_stream=True)
            if word == "SAVEPOINT" and self._baton is not None:
                self._savepoint = savepoint_name(sql)
            return results
        if word in OPENS_TRANSACTION:
            results = self._batch([statement("BEGIN", ()), *stmts], keep_stream=True)
            return results[1:]
        return self._batch(stmts, keep_stream=False)

    def _batch(self, stmts: list[dict[str, Any]], *, keep_stream: bool) -> list[Result]:
        steps: list[dict[str, Any]] = []
        for i, stmt in enumerate(stmts):
            step: dict[str, Any] = {"stmt": stmt}
            if i:
                step["condition"] = {"type": "ok", "step": i - 1}
            steps.append(step)
        requests: list[dict[str, Any]] = [{"type": "batch", "batch": {"steps": steps}}]
        if not keep_stream:
            requests.append({"type": "close"})
        opening = keep_stream and self._baton is None  # steps[0] opens the transaction
        was_open = self._baton is not None
        outcome = self._pipeline(requests)[0]
        results: list[Result] = []
        try:
            error = _error_of(outcome)
            if error is None:
                batch = outcome["response"]["result"]
                answers = zip(batch["step_results"], batch["step_errors"], strict=True)
                for raw, step_error in answers:
                    if step_error is not None:
                        error = _checked_error(step_error)
                        break
                    results.append(Result(raw))
                if error is None and len(results) != len(steps):
                    raise ValueError(f"{len(results)} step results for {len(steps)} steps")
        except (*_MALFORMED, InterfaceError) as exc:
            raise self._unreadable(exc, in_transaction=was_open) from exc
        if error is None:
            return results
        if error.get("code") == "TRANSACTION_TIMEOUT":
            # the server rolled the transaction back to hand its write lock to someone else
            self._broken = f"the server ended the transaction: {error.get('message')}"
            self._drop_stream()
        elif opening and not results:
            self._drop_stream()  # BEGIN itself failed: no transaction to keep the stream for
        raise error_from(error)

    def _finish(self, word: str, *, strict: bool) -> None:
        """End the transaction with ``word`` and close its stream. Not ``strict`` (a rollback):
        errors are dropped, since a stream the server lost has rolled back already."""
        try:
            outcome = self._pipeline(
                [{"type": "execute", "stmt": statement(word, ())}, {"type": "close"}]
            )
        except Error:
            if strict:
                raise
            return
        finally:
            self._baton = self._base_url = self._savepoint = None
        try:
            error = _error_of(outcome[0])
        except _MALFORMED as exc:
            if strict:
                raise self._unreadable(exc, in_transaction=True) from exc
            return
        if error is not None and strict:
            raise error_from(error)

    def _unreadable(self, exc: Exception, *, in_transaction: bool) -> InterfaceError:
        """The error for an answer of the wrong shape. A transaction it belonged to is lost
        (whether its statement ran, or its COMMIT took, is unknown); a stream it opened is
        closed, which rolls back whatever ran on it."""
        if in_transaction:
            self._broken = "the server's answer inside the transaction could not be read"
        self._drop_stream()
        return InterfaceError(f"libSQL server {self.url} sent a malformed answer: {exc!r}")

    def _drop_stream(self) -> None:
        baton, url = self._baton, self._base_url
        self._baton = self._base_url = self._savepoint = None
        if baton is not None:
            with contextlib.suppress(Error):  # an abandoned stream expires on the server
                self._post(url, {"baton": baton, "requests": [{"type": "close"}]})

    def _pipeline(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``requests`` on this connection's stream; each result as it came:
        ``{"type": "ok", "response": ...}`` or ``{"type": "error", "error": ...}``."""
        in_transaction = self._baton is not None
        try:
            body = self._post(self._base_url, {"baton": self._baton, "requests": requests})
            baton, base_url = body.get("baton"), body.get("base_url")
            results: list[dict[str, Any]] = body["results"]
            if not (baton is None or isinstance(baton, str)):
                raise InterfaceError(f"libSQL server {self.url} sent a baton that is no string")
            if not (base_url is None or isinstance(base_url, str)):
                raise InterfaceError(f"libSQL server {self.url} sent a base_url that is no string")
            if len(results) != len(requests) or not all(isinstance(r, dict) for r in results):
                raise InterfaceError(
                    f"libSQL server {self.url} sent {len(results)} results for"
                    f" {len(requests)} requests"
                )
        except Error as exc:
            self._baton = self._base_url = self._savepoint = None
            if in_transaction:
                self._broken = f"the transaction's stream was lost: {exc}"
            raise
        self._last_answer = time.monotonic()
        self._baton = baton
        # only the connection's own origin: a server (or whoever answers for it) must not be
        # able to send the token to another host or over plain http
        self._base_url = base_url if base_url and same_origin(base_url, self.url) else None
        return results

    def _post(self, base_url: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        url = (base_url or self.url).rstrip("/") + PIPELINE_PATH
        try:
            response = self._client.post(url, json=payload)
        except httpx.TransportError as exc:
            raise Disconnect(f"libSQL server {self.url} unreachable: {exc!r}") from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise InterfaceError(f"libSQL server {self.url}: {exc!r}") from exc
        if response.status_code in (401, 403):
            raise OperationalError(
                f"libSQL server {self.url} refused the auth token (HTTP {response.status_code}):"
                f" {response.text[:300].strip()} - check DATABASE_AUTH_TOKEN"
            )
        if response.status_code != 200:
            raise OperationalError(
                f"libSQL server {self.url} answered HTTP {response.status_code}:"
                f" {response.text[:300].strip()}"
            )
        try:
            body: dict[str, Any] = response.json()
            if not isinstance(body.get("results"), list):
                raise ValueError("no results")
        except (ValueError, AttributeError) as exc:
            raise InterfaceError(f"libSQL server {self.url} sent no pipeline result") from exc
        return body

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")

    def _check_usable(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise OperationalError(f"{self._broken}; roll back before going on")


class Cursor:
    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: tuple[tuple[str, None, None, None, None, None, None], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[object, ...]] = []
        self._pos = 0

    def execute(self, sql: str, parameters: Sequence[object] | Mapping[str, object] = ()) -> Cursor:
        self._load(sql, [self.connection.run(sql, parameters)])
        return self

    def executemany(
        self, sql: str, seq_of_parameters: Sequence[Sequence[object] | Mapping[str, object]]
    ) -> Cursor:
        seq = list(seq_of_parameters)
        self._load(sql, self.connection.run_many(sql, seq) if seq else [])
        return self

    def _load(self, sql: str, results: list[Result]) -> None:
        last = results[-1] if results else Result({})
        self.description = (
            tuple((name, None, None, None, None, None, None) for name in last.columns)
            if last.columns
            else None
        )
        self._rows, self._pos = last.rows, 0
        changes = verb(sql) in OPENS_TRANSACTION
        self.rowcount = sum(r.affected for r in results) if changes else -1
        if last.last_rowid is not None:
            self.lastrowid = last.last_rowid

    def fetchone(self) -> tuple[object, ...] | None:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[object, ...]]:
        size = self.arraysize if size is None else size
        rows = self._rows[self._pos : self._pos + size]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> list[tuple[object, ...]]:
        rows = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows, self._pos = [], 0

    def setinputsizes(self, sizes: object) -> None:
        pass

    def setoutputsize(self, size: object, column: object = None) -> None:
        pass
