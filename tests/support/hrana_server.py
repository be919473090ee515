"""A Hrana-over-HTTP server in memory for driver tests: an ``httpx.MockTransport`` handler that
answers ``POST /v2/pipeline`` as sqld does, over a real SQLite file through the stdlib driver.

    server = HranaServer(tmp_path / "db.sqlite")
    conn = hrana.connect("http://sqld.test", transport=server.transport)

Each stream is its own sqlite3 connection (autocommit, so ``BEGIN``/``COMMIT`` are the
client's), named by a fresh baton in every answer; an unknown baton is sqld's HTTP 400
"Received an invalid baton". ``requests`` records every pipeline body and URL. ``fault`` lets a
test replace the next answers: a callable gets the request and the answer the server would have
given (an ``httpx.Response``) and returns the one to send, or raises (``httpx.ReadError``: the
connection broke). The server has executed the request before a fault sees it, as when an answer
is lost on the way back.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Fault = Callable[[httpx.Request, httpx.Response], httpx.Response]


@dataclass
class Seen:
    url: str
    body: dict[str, Any]

    @property
    def sql(self) -> list[str]:
        """Every statement of the pipeline, batch steps flattened, in order."""
        out: list[str] = []
        for request in self.body["requests"]:
            if request["type"] == "execute":
                out.append(request["stmt"]["sql"])
            elif request["type"] == "batch":
                out += [step["stmt"]["sql"] for step in request["batch"]["steps"]]
            else:
                out.append(f"<{request['type']}>")
        return out


@dataclass
class HranaServer:
    path: Path
    base_url: str | None = None  # sent in every answer that keeps a stream open
    requests: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    streams: dict[str, sqlite3.Connection] = field(default_factory=dict)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fault(self, *faults: Fault) -> None:
        """Replace the next answers, one fault per request."""
        self.faults.extend(faults)

    def expire(self, status: int, text: str) -> Fault:
        """A fault: the server drops every stream (rolling back their transactions), then
        answers ``status`` with ``text``."""

        def fault(request: httpx.Request, real: httpx.Response) -> httpx.Response:
            self.close()
            return httpx.Response(status, text=text)

        return fault

    def close(self) -> None:
        for conn in self.streams.values():
            conn.close()
        self.streams.clear()

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(Seen(str(request.url), body))
        answer = self._answer(body)
        if self.faults:
            return self.faults.pop(0)(request, answer)
        return answer

    def _answer(self, body: dict[str, Any]) -> httpx.Response:
        baton = body.get("baton")
        if baton is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        elif baton in self.streams:
            conn = self.streams.pop(baton)
        else:
            return httpx.Response(400, text="Received an invalid baton")
        results: list[dict[str, Any]] = []
        open_ = True
        for req in body["requests"]:
            if req["type"] == "close":
                conn.close()
                open_ = False
                results.append({"type": "ok", "response": {"type": "close"}})
            elif req["type"] == "execute":
                try:
                    result = _execute(conn, req["stmt"])
                except sqlite3.Error as exc:
                    results.append({"type": "error", "error": _error(exc)})
                else:
                    results.append(
                        {"type": "ok", "response": {"type": "execute", "result": result}}
                    )
            elif req["type"] == "batch":
                results.append(
                    {"type": "ok", "response": {"type": "batch", "result": _batch(conn, req)}}
                )
            else:
                return httpx.Response(400, text=f"unknown variant `{req['type']}`")
        new_baton = None
        if open_:
            new_baton = secrets.token_urlsafe(16)
            self.streams[new_baton] = conn
        return httpx.Response(
            200,
            json={
                "baton": new_baton,
                "base_url": self.base_url if open_ else None,
                "results": results,
            },
        )


def _batch(conn: sqlite3.Connection, req: dict[str, Any]) -> dict[str, Any]:
    step_results: list[dict[str, Any] | None] = []
    step_errors: list[dict[str, Any] | None] = []
    for step in req["batch"]["steps"]:
        condition = step.get("condition")
        if condition is not None and step_results[condition["step"]] is None:
            step_results.append(None)
            step_errors.append(None)
            continue
        try:
            step_results.append(_execute(conn, step["stmt"]))
            step_errors.append(None)
        except sqlite3.Error as exc:
            step_results.append(None)
            step_errors.append(_error(exc))
    return {"step_results": step_results, "step_errors": step_errors}


def _execute(conn: sqlite3.Connection, stmt: dict[str, Any]) -> dict[str, Any]:
    params: Any = [_decode(v) for v in stmt.get("args", [])]
    if stmt.get("named_args"):
        params = {a["name"].lstrip(":@$"): _decode(a["value"]) for a in stmt["named_args"]}
    before = conn.total_changes
    cur = conn.execute(stmt["sql"], params)
    rows = cur.fetchall()
    return {
        "cols": [{"name": d[0], "decltype": None} for d in cur.description or ()],
        "rows": [[_encode(v) for v in row] for row in rows],
        "affected_row_count": conn.total_changes - before,
        "last_insert_rowid": str(cur.lastrowid) if cur.lastrowid else None,
    }


def _error(exc: sqlite3.Error) -> dict[str, Any]:
    code = getattr(exc, "sqlite_errorname", "") or "SQLITE_ERROR"
    return {"message": f"SQLite error: {exc}", "code": code}


def _decode(value: dict[str, Any]) -> object:
    kind = value["type"]
    if kind == "integer":
        return int(value["value"])
    if kind == "blob":
        return base64.b64decode(value["base64"])
    return None if kind == "null" else value["value"]


def _encode(value: object) -> dict[str, Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, int):
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, bytes):
        # sqld leaves the padding off
        return {"type": "blob", "base64": base64.b64encode(value).decode().rstrip("=")}
    return {"type": "text", "value": str(value)}
