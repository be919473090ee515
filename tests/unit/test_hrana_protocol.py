"""The Hrana driver against a scripted server (``httpx.MockTransport``), no sqld needed.

The server (tests/support/hrana_server.py) speaks the pipeline protocol over a real SQLite
file; faults replace its answers with what a failing server or network sends: a transaction the
server timed out, an expired stream, a connection that breaks mid-transaction, a failed COMMIT,
5xx statuses, answers that are not JSON or not the protocol's shape. Each must surface as a
PEP 249 error (OperationalError, InterfaceError, ...), never a bare KeyError or TypeError, and a
transaction whose stream is lost must refuse every statement until it is rolled back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from picgate.db import hrana, statements
from picgate.db.engine import build_engine
from tests.support.hrana_server import HranaServer

_hosts = itertools.count()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HranaServer]:
    fake = HranaServer(tmp_path / "db.sqlite")
    yield fake
    fake.close()


@pytest.fixture
def conn(server: HranaServer) -> Iterator[hrana.Connection]:
    # a host of its own per test: the process's write gate is per server URL
    connection = hrana.connect(f"http://sqld-{next(_hosts)}.test", transport=server.transport)
    connection.cursor().execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
    server.requests.clear()
    yield connection
    connection.close()


def answer(status: int = 200, **kwargs: Any) -> Any:
    """A fault that sends this answer instead of the server's."""
    return lambda request, real: httpx.Response(status, **kwargs)


def broken_connection(request: httpx.Request, real: httpx.Response) -> httpx.Response:
    raise httpx.ReadError("connection reset by peer", request=request)


def rows(conn: hrana.Connection, sql: str = "SELECT k, v FROM t ORDER BY k") -> list[Any]:
    return conn.cursor().execute(sql).fetchall()


# -- the protocol on the happy path ------------------------------------------------------------


def test_hrana_read_outside_transaction_opens_and_closes_stream_in_one_request(
    conn: hrana.Connection, server: HranaServer
) -> None:
    cur = conn.cursor().execute("SELECT ? AS a, :b AS b", (1, "x"))
    assert cur.fetchall() == [(1, "x")] and cur.description is not None
    assert [d[0] for d in cur.description] == ["a", "b"] and cur.rowcount == -1
    (seen,) = server.requests
    assert seen.body["baton"] is None and seen.sql == ["SELECT ? AS a, :b AS b", "<close>"]
    assert not conn.in_transaction and server.streams == {}


def test_hrana_named_parameters_keep_or_gain_their_prefix(conn: hrana.Connection) -> None:
    cur = conn.cursor().execute("SELECT :a, @b, $c", {"a": 1, "@b": 2, "$c": b"\x00"})
    assert cur.fetchone() == (1, 2, b"\x00") and cur.fetchone() is None


def test_hrana_insert_opens_transaction_in_same_request_and_commit_closes_it(
    conn: hrana.Connection, server: HranaServer
) -> None:
    cur = conn.cursor().execute("INSERT INTO t (v) VALUES (?)", ("a",))
    assert cur.rowcount == 1 and cur.lastrowid == 1 and conn.in_transaction
    conn.cursor().execute("UPDATE t SET v = 'b'")
    conn.commit()
    assert not conn.in_transaction and server.streams == {}
    first, second, third = server.requests
    assert first.sql == ["BEGIN", "INSERT INTO t (v) VALUES (?)"]
    assert first.body["requests"][0]["batch"]["steps"][1]["condition"] == {
        "type": "ok",
        "step": 0,
    }
    assert second.body["baton"] and second.sql == ["UPDATE t SET v = 'b'"]
    assert third.body["baton"] and third.sql == ["COMMIT", "<close>"]
    assert rows(conn) == [(1, "b")]


def test_hrana_rollback_discards_the_transaction(conn: hrana.Connection) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    conn.rollback()
    assert rows(conn) == [] and not conn.in_transaction


def test_hrana_executemany_is_one_request_and_stops_at_first_error(
    conn: hrana.Connection, server: HranaServer
) -> None:
    cur = conn.cursor()
    cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
    assert cur.rowcount == 2 and len(server.requests) == 1
    with pytest.raises(hrana.IntegrityError, match="UNIQUE"):
        cur.executemany("INSERT INTO t VALUES (?, ?)", [(3, "c"), (1, "dup"), (4, "d")])
    conn.commit()
    assert [k for k, _ in rows(conn)] == [1, 2, 3]
    assert cur.executemany("INSERT INTO t VALUES (?, ?)", []).rowcount == 0  # as sqlite3


@pytest.mark.parametrize(
    "sql,verb",
    [
        ("WITH s AS (SELECT 1 AS x) INSERT INTO t (v) SELECT x FROM s", "INSERT"),
        (
            "with recursive s(x) as (select 1 union all select x+1 from s where x<3) "
            "delete from t where k in s",
            "DELETE",
        ),
        (
            "WITH s AS MATERIALIZED (SELECT 'INSERT' AS w) UPDATE t SET v = (SELECT w FROM s)",
            "UPDATE",
        ),
        ('WITH "insert" AS (SELECT 1) SELECT * FROM "insert"', "SELECT"),
        ("WITH s AS (SELECT 1) -- INSERT\n SELECT * FROM s", "SELECT"),
        ("WITH s AS (SELECT 1) /* UPDATE */ VALUES (1)", "VALUES"),
        ("WITH s AS (SELECT ')' AS p) REPLACE INTO t SELECT 1, p FROM s", "REPLACE"),
        ("  \n-- note\n/* a\n b */ savepoint sa_1", "SAVEPOINT"),
        ("\tBEGIN IMMEDIATE", "BEGIN"),
        ("WITH", "WITH"),
        ("/* unterminated", ""),
    ],
)
def test_hrana_verb_looks_past_with_comments_and_quotes(sql: str, verb: str) -> None:
    assert statements.verb(sql) == verb


@pytest.mark.parametrize(
    "sql,name",
    [
        ("SAVEPOINT sa_savepoint_1", "SA_SAVEPOINT_1"),
        ('RELEASE SAVEPOINT "Sp"', "SP"),
        ("RELEASE sp", "SP"),
        ("ROLLBACK TRANSACTION TO SAVEPOINT sp", "SP"),
        ("ROLLBACK TO sp", "SP"),
        ("ROLLBACK -- back to where we were", ""),
        ("ROLLBACK", ""),
        ("RELEASE", ""),
    ],
)
def test_hrana_savepoint_name_of_statement(sql: str, name: str) -> None:
    assert statements.savepoint_name(sql) == name


def test_hrana_with_insert_opens_a_transaction(conn: hrana.Connection, server: HranaServer) -> None:
    cur = conn.cursor().execute("WITH s AS (SELECT 5 AS x) INSERT INTO t (k) SELECT x FROM s")
    assert conn.in_transaction and cur.rowcount == 1
    assert server.requests[0].sql[0] == "BEGIN"
    conn.rollback()
    assert rows(conn) == []


def test_hrana_with_select_runs_in_autocommit(conn: hrana.Connection) -> None:
    cur = conn.cursor().execute("WITH s AS (SELECT 1 AS x) SELECT x FROM s")
    assert cur.fetchall() == [(1,)] and not conn.in_transaction


def test_hrana_savepoint_opens_transaction_and_release_of_it_commits(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("SAVEPOINT outer_sp")
    assert conn.in_transaction and server.requests[0].sql == ["SAVEPOINT outer_sp"]
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    conn.cursor().execute("SAVEPOINT inner_sp")
    conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    conn.cursor().execute("ROLLBACK TO inner_sp")
    conn.cursor().execute("RELEASE inner_sp")
    assert conn.in_transaction  # the inner savepoint ends nothing
    conn.cursor().execute("RELEASE SAVEPOINT outer_sp")
    assert not conn.in_transaction and server.streams == {}
    conn.commit()  # nothing left to commit: no request
    assert rows(conn) == [(1, "a")]


def test_hrana_savepoint_inside_begin_keeps_transaction_after_release(
    conn: hrana.Connection,
) -> None:
    conn.cursor().execute("BEGIN")
    conn.cursor().execute("SAVEPOINT sp")
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    conn.cursor().execute("RELEASE sp")
    assert conn.in_transaction
    conn.cursor().execute("COMMIT")
    assert not conn.in_transaction and rows(conn) == [(1, "a")]


def test_hrana_failed_begin_leaves_no_stream_open(
    conn: hrana.Connection, server: HranaServer
) -> None:
    with pytest.raises(hrana.OperationalError):
        conn.cursor().execute("SAVEPOINT")  # a syntax error: no transaction
    assert not conn.in_transaction
    assert server.requests[-1].sql == ["<close>"] and server.streams == {}


def test_hrana_connection_as_context_manager_closes(server: HranaServer) -> None:
    with hrana.connect("http://ctx.test", transport=server.transport) as conn:
        assert conn.cursor().execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(hrana.ProgrammingError, match="closed"):
        conn.cursor()


def test_hrana_cursor_fetch_helpers_walk_the_rows(conn: hrana.Connection) -> None:
    conn.cursor().executemany("INSERT INTO t VALUES (?, ?)", [(i, str(i)) for i in range(5)])
    conn.commit()
    cur = conn.cursor().execute("SELECT k FROM t ORDER BY k")
    assert cur.fetchone() == (0,)
    assert cur.fetchmany() == [(1,)] and cur.fetchmany(2) == [(2,), (3,)]
    assert list(cur) == [(4,)] and cur.fetchall() == []
    cur.setinputsizes(None)
    cur.setoutputsize(1)
    cur.close()
    assert cur.fetchall() == []


# -- a server that ends the transaction, loses the stream, or fails COMMIT ----------------------


def test_hrana_server_transaction_timeout_breaks_transaction_until_rollback(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    timeout = {"message": "Transaction timed out", "code": "TRANSACTION_TIMEOUT"}
    server.close()  # the server rolled the transaction back
    server.fault(
        answer(
            json={
                "baton": None,
                "base_url": None,
                "results": [
                    {
                        "type": "ok",
                        "response": {
                            "type": "batch",
                            "result": {"step_results": [None], "step_errors": [timeout]},
                        },
                    }
                ],
            }
        )
    )
    with pytest.raises(hrana.OperationalError, match="timed out"):
        conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    assert conn.in_transaction  # lost, but not over until the caller rolls back
    with pytest.raises(hrana.OperationalError, match="roll back before going on"):
        conn.cursor().execute("SELECT 1")
    with pytest.raises(hrana.OperationalError, match="roll back"):
        conn.commit()
    conn.rollback()
    assert not conn.in_transaction and rows(conn) == []


def test_hrana_expired_stream_is_operational_error_and_transaction_is_lost(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(server.expire(400, "The stream has expired due to inactivity"))
    with pytest.raises(hrana.OperationalError, match=r"HTTP 400.*expired"):
        conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    with pytest.raises(hrana.OperationalError, match="stream was lost"):
        conn.cursor().execute("INSERT INTO t VALUES (3, 'c')")
    conn.rollback()
    conn.cursor().execute("INSERT INTO t VALUES (4, 'd')")
    conn.commit()
    assert 4 in [k for k, _ in rows(conn)]


def test_hrana_unknown_baton_from_real_server_answer_is_operational_error(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.close()  # the server forgot every stream (a restart)
    with pytest.raises(hrana.OperationalError, match="invalid baton"):
        conn.commit()
    assert conn.in_transaction  # whether it committed is unknown: the caller rolls back
    conn.rollback()
    assert not conn.in_transaction and rows(conn) == []


def test_hrana_connection_broken_mid_transaction_is_a_disconnect(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(broken_connection)
    with pytest.raises(hrana.Disconnect, match="unreachable"):
        conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    assert isinstance(hrana.Disconnect("x"), hrana.OperationalError)
    with pytest.raises(hrana.OperationalError, match="stream was lost"):
        conn.cursor().execute("SELECT 1")
    conn.rollback()
    assert not conn.in_transaction


def test_hrana_failed_commit_raises_and_ends_the_transaction(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    busy = {"message": "SQLite error: database is locked", "code": "SQLITE_BUSY"}
    server.fault(
        answer(
            json={
                "baton": None,
                "base_url": None,
                "results": [{"type": "error", "error": busy}, {"type": "ok", "response": {}}],
            }
        )
    )
    with pytest.raises(hrana.OperationalError, match="database is locked") as info:
        conn.commit()
    assert info.value.sqlite_errorname == "SQLITE_BUSY"
    assert not conn.in_transaction
    conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")  # the connection goes on
    conn.commit()


def test_hrana_commit_over_broken_connection_raises_rollback_does_not(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(broken_connection)
    with pytest.raises(hrana.Disconnect):
        conn.commit()
    conn.rollback()
    conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    server.fault(broken_connection)
    conn.rollback()  # the server rolls an abandoned stream back by itself
    assert not conn.in_transaction


def test_hrana_close_rolls_back_an_open_transaction(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    conn.close()
    assert server.requests[-1].sql == ["ROLLBACK", "<close>"]
    conn.close()  # twice is fine
    with pytest.raises(hrana.ProgrammingError, match="closed"):
        conn.cursor()
    with pytest.raises(hrana.ProgrammingError, match="closed"):
        conn.rollback()


# -- HTTP statuses and answers that are not the protocol's ------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_hrana_http_5xx_is_operational_error_naming_the_status(
    conn: hrana.Connection, server: HranaServer, status: int
) -> None:
    server.fault(answer(status, text="upstream trouble"))
    with pytest.raises(hrana.OperationalError, match=f"HTTP {status}: upstream trouble"):
        conn.cursor().execute("SELECT 1")


@pytest.mark.parametrize("status", [401, 403])
def test_hrana_refused_token_names_database_auth_token(
    conn: hrana.Connection, server: HranaServer, status: int
) -> None:
    server.fault(answer(status, text="Unauthorized"))
    with pytest.raises(hrana.OperationalError, match="DATABASE_AUTH_TOKEN"):
        conn.cursor().execute("SELECT 1")


def test_hrana_5xx_inside_transaction_loses_it(conn: hrana.Connection, server: HranaServer) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(answer(503, text="overloaded"))
    with pytest.raises(hrana.OperationalError, match="503"):
        conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    with pytest.raises(hrana.OperationalError, match="roll back"):
        conn.cursor().execute("INSERT INTO t VALUES (3, 'c')")
    conn.rollback()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": "<html>bad gateway</html>"},
        {"content": b"\xff\xfe\x00"},
        {"json": ["results"]},
        {"json": {"baton": None}},
        {"json": {"results": "many"}},
        {"headers": {"content-encoding": "gzip"}, "content": b"not gzip at all"},
    ],
    ids=["html", "binary", "json-list", "no-results", "results-not-list", "bad-encoding"],
)
def test_hrana_answer_that_is_no_pipeline_result_is_interface_error(
    conn: hrana.Connection, server: HranaServer, kwargs: dict[str, Any]
) -> None:
    server.fault(answer(200, **kwargs))
    with pytest.raises(hrana.InterfaceError):
        conn.cursor().execute("SELECT 1")
    assert rows(conn, "SELECT 2") == [(2,)]  # the next call works


def _ok_batch(step: object, error: object = None) -> dict[str, Any]:
    return {
        "baton": None,
        "results": [
            {
                "type": "ok",
                "response": {"result": {"step_results": [step], "step_errors": [error]}},
            },
            {"type": "ok", "response": {"type": "close"}},
        ],
    }


MALFORMED: dict[str, dict[str, Any]] = {
    "too-few-results": {"baton": None, "results": []},
    "result-not-object": {"baton": None, "results": ["ok", "ok"]},
    "unknown-result-type": {"baton": None, "results": [{"type": "maybe"}, {"type": "ok"}]},
    "error-not-object": {"baton": None, "results": [{"type": "error", "error": "no"}, {}]},
    "no-response": {"baton": None, "results": [{"type": "ok"}, {"type": "ok"}]},
    "no-step-results": {
        "baton": None,
        "results": [{"type": "ok", "response": {"result": {}}}, {"type": "ok"}],
    },
    "steps-mismatch": {
        "baton": None,
        "results": [
            {"type": "ok", "response": {"result": {"step_results": [], "step_errors": [None]}}},
            {"type": "ok"},
        ],
    },
    "step-result-not-object": _ok_batch([1, 2]),
    "step-error-not-object": _ok_batch(None, "boom"),
    "cols-not-list": _ok_batch({"cols": 3, "rows": []}),
    "row-value-missing": _ok_batch({"cols": [{"name": "a"}], "rows": [[{"type": "integer"}]]}),
    "integer-not-number": _ok_batch(
        {"cols": [{"name": "a"}], "rows": [[{"type": "integer", "value": "x"}]]}
    ),
    "float-not-number": _ok_batch(
        {"cols": [{"name": "a"}], "rows": [[{"type": "float", "value": {}}]]}
    ),
    "blob-not-base64": _ok_batch(
        {"cols": [{"name": "a"}], "rows": [[{"type": "blob", "base64": "!!!!"}]]}
    ),
    "unknown-value-type": _ok_batch({"cols": [{"name": "a"}], "rows": [[{"type": "date"}]]}),
    "rows-not-list": _ok_batch({"cols": [], "rows": 7}),
    "affected-not-number": _ok_batch({"cols": [], "rows": [], "affected_row_count": "many"}),
    "rowid-not-number": _ok_batch({"cols": [], "rows": [], "last_insert_rowid": "x"}),
    "baton-not-string": {"baton": 5, "results": [{"type": "ok"}, {"type": "ok"}]},
    "base-url-not-string": {
        "baton": None,
        "base_url": ["http://x"],
        "results": [{"type": "ok"}, {"type": "ok"}],
    },
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_hrana_malformed_answer_is_interface_error_never_bare_error(
    conn: hrana.Connection, server: HranaServer, body: dict[str, Any]
) -> None:
    server.fault(answer(json=body))
    with pytest.raises(hrana.InterfaceError, match="libSQL server"):
        conn.cursor().execute("SELECT 1")
    assert rows(conn, "SELECT 2") == [(2,)]


@pytest.mark.parametrize(
    "body",
    [
        {
            "baton": "b1",
            "results": [
                {"type": "ok", "response": {"result": {"step_results": [[]], "step_errors": []}}}
            ],
        },
        {"baton": "b1", "results": [{"type": "ok", "response": {}}]},
        MALFORMED["too-few-results"],
    ],
    ids=["steps-mismatch", "no-result", "too-few-results"],
)
def test_hrana_malformed_answer_in_transaction_loses_it(
    conn: hrana.Connection, server: HranaServer, body: dict[str, Any]
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(answer(json=body))
    with pytest.raises(hrana.InterfaceError):
        conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    with pytest.raises(hrana.OperationalError, match="roll back"):
        conn.commit()
    conn.rollback()
    assert not conn.in_transaction


def test_hrana_malformed_commit_answer_is_interface_error(
    conn: hrana.Connection, server: HranaServer
) -> None:
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    server.fault(answer(json={"baton": None, "results": [{"type": "?"}, {"type": "ok"}]}))
    with pytest.raises(hrana.InterfaceError):
        conn.commit()
    assert conn.in_transaction  # whether it committed is unknown: the caller rolls back
    conn.rollback()
    conn.cursor().execute("INSERT INTO t VALUES (2, 'b')")
    server.fault(answer(json={"baton": None, "results": [{"type": "?"}, {"type": "ok"}]}))
    conn.rollback()  # a rollback's answer does not matter


# -- where the stream continues, TLS, pre-ping ---------------------------------------------------


@pytest.mark.parametrize(
    "base_url,followed",
    [
        ("http://{host}/db", True),
        ("http://{host}:80/db/", True),
        ("https://{host}", False),  # another scheme
        ("http://evil.test", False),
        ("http://{host}:8080", False),
        ("http://{host}:notaport", False),
        ("ftp://{host}", False),
    ],
)
def test_hrana_base_url_followed_only_on_same_scheme_host_and_port(
    server: HranaServer, base_url: str, followed: bool
) -> None:
    host = f"sqld-{next(_hosts)}.test"
    server.base_url = base_url.format(host=host)
    conn = hrana.connect(f"http://{host}", transport=server.transport)
    conn.cursor().execute("CREATE TABLE t (k)")
    conn.cursor().execute("INSERT INTO t VALUES (1)")
    conn.commit()
    second_url = server.requests[-1].url
    expected = f"http://{host}/db" if followed else f"http://{host}"
    assert second_url == f"{expected}/v2/pipeline"
    conn.close()


def test_hrana_https_base_url_never_downgraded_to_http(server: HranaServer) -> None:
    server.base_url = "http://secure.test"
    conn = hrana.connect("https://secure.test", auth_token="tok", transport=server.transport)
    conn.cursor().execute("CREATE TABLE t (k)")
    conn.cursor().execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert {seen.url for seen in server.requests} == {"https://secure.test/v2/pipeline"}
    conn.close()


def test_hrana_connection_uses_the_ssl_context_it_is_given(server: HranaServer) -> None:
    context = httpx.create_ssl_context()
    conn = hrana.connect("https://a.test", ssl_context=context, transport=server.transport)
    assert conn.ssl_context is context
    conn.close()


def test_hrana_ping_after_idle_sends_select_else_nothing(
    conn: hrana.Connection, server: HranaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn.ping()  # the fixture's CREATE TABLE was just answered
    assert server.requests == []
    monkeypatch.setattr(hrana, "PING_AFTER_IDLE_SECONDS", 0.0)
    conn.ping()
    assert server.requests[-1].sql == ["SELECT 1", "<close>"]
    conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    before = len(server.requests)
    conn.ping()  # inside a transaction: the next statement finds out
    assert len(server.requests) == before
    conn.rollback()
    server.fault(broken_connection)
    with pytest.raises(hrana.Disconnect):
        conn.ping()
    conn.close()
    with pytest.raises(hrana.ProgrammingError):
        conn.ping()


def test_hrana_malformed_answer_to_opening_insert_leaves_no_transaction(
    conn: hrana.Connection, server: HranaServer
) -> None:
    server.fault(answer(json={"baton": "b1", "results": [{"type": "ok", "response": {}}]}))
    with pytest.raises(hrana.InterfaceError):
        conn.cursor().execute("INSERT INTO t VALUES (1, 'a')")
    assert not conn.in_transaction
    assert server.requests[-1].body == {"baton": "b1", "requests": [{"type": "close"}]}


def test_hrana_unknown_server_value_type_is_interface_error() -> None:
    with pytest.raises(hrana.InterfaceError, match="unknown value type"):
        hrana.decode_value({"type": "date", "value": "2024"})


# -- through SQLAlchemy: one TLS context per engine, pooled connections pre-pinged ----------------


def _engine_on(server: HranaServer, url: str) -> Engine:
    engine = build_engine(url)

    @event.listens_for(engine, "do_connect")
    def on_the_fake(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        cparams["transport"] = server.transport

    return engine


def test_dialect_engine_builds_one_ssl_context_for_all_its_connections(
    server: HranaServer,
) -> None:
    engine = _engine_on(server, "libsql://tls.test")
    one, two = engine.raw_connection(), engine.raw_connection()
    try:
        first, second = one.dbapi_connection, two.dbapi_connection
        assert isinstance(first, hrana.Connection) and isinstance(second, hrana.Connection)
        assert first is not second
        assert first.ssl_context is not None and first.ssl_context is second.ssl_context
        other = _engine_on(server, "libsql://tls.test")
        assert other.dialect.ssl_context is not first.ssl_context  # type: ignore[attr-defined]
        other.dispose()
    finally:
        one.close()
        two.close()
        engine.dispose()


def test_dialect_pre_ping_replaces_a_pooled_connection_that_lost_the_server(
    server: HranaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine_on(server, "sqlite+libsql://ping.test?secure=false")
    with engine.connect() as connection:
        first = connection.connection.dbapi_connection
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    monkeypatch.setattr(hrana, "PING_AFTER_IDLE_SECONDS", 0.0)
    server.requests.clear()
    server.fault(broken_connection)  # the ping's request breaks off
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 2").scalar() == 2
        assert connection.connection.dbapi_connection is not first
    # the ping, then the statement on a fresh connection (a new one is not pinged)
    assert [seen.sql[0] for seen in server.requests] == ["SELECT 1", "SELECT 2"]
    engine.dispose()
