"""The log the admin console shows: one line per event, kept in the database with a cap.

Every event also goes to stdout through ``logging`` (``docker logs``, CloudWatch). Lines are
buffered and written in batches (``flush``): by a background task in server mode, and before
the response leaves in serverless mode. Long base64 runs, anything shaped like a key and the
configured secrets (``redactor``, see ``picgate.redaction``) are scrubbed before a line is kept
or printed. Every flush that adds lines trims the table to ``max_entries``.

``api_error`` is the one place a failed API call is recorded: one line and one count on the
dashboard's error counter, whatever the failure.

Events anyone can trigger without a key or a session (wrong gateway keys, refused or throttled
admin sign-ins, a wrong setup token) are not one line each: a client retrying, or someone
guessing, would write a row per call and, 5000 calls later, have pushed every other line out.
``tally(kind, address)`` counts them per kind, source address and minute; each (minute, kind,
address) is one line, e.g. ``⚠️ 网关密钥错误 ×N 来自 ADDRESS``, whose count is updated in place
by later flushes. Those lines are *anonymous*: their ids end in ``ANONYMOUS_MARK`` and trimming
keeps at most ``ANONYMOUS_SHARE`` of ``max_entries`` of them, apart from the other lines, so
anonymous traffic can only push out anonymous lines, never the admin's or security entries.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update

from picgate.db.engine import Database
from picgate.db.models import DAILY_STATS, LOG_ENTRIES
from picgate.errors import AuthenticationFailed, KeyGuessingThrottled, PicGateError, UpstreamError
from picgate.redaction import Redactor

log = logging.getLogger("picgate")

MAX_MESSAGE = 500
# distinct addresses tracked per minute; beyond this, failures count under OTHER_ADDRESSES so
# that a flood from many addresses stays a bounded number of rows and dict entries
MAX_AUTH_SOURCES = 100
OTHER_ADDRESSES = "其他地址 (other addresses)"
# what each tally's line says (N: the count, ADDRESS: where it came from)
TALLIES: dict[str, str] = {
    "gateway_key": "⚠️ 网关密钥错误 ×{count} 来自 {address} (wrong gateway API key)",
    "gateway_throttled": (
        "🚫 网关密钥错误过多，已限流 ×{count} 来自 {address} (wrong gateway keys: throttled)"
    ),
    "login_failed": "⚠️ 管理员登录失败 ×{count} 来自 {address} (admin sign-in failed)",
    "login_throttled": (
        "🚫 管理员登录过于频繁，已暂时锁定 ×{count} 来自 {address} (admin sign-in locked)"
    ),
    "login_busy": "🚫 登录校验繁忙，已拒绝 ×{count} 来自 {address} (sign-in checks busy)",
    "setup_refused": "🚫 首次设置被拒绝：设置令牌错误 ×{count} 来自 {address} (wrong setup token)",
}
ANONYMOUS_MARK = "z"  # the last character of an anonymous line's id (others end in a hex digit)
ANONYMOUS_SHARE = 0.5
_BASE64_RUN = re.compile(r"(?:data:[\w/.+-]+;base64,)?[A-Za-z0-9+/_-]{120,}={0,2}")
_KEYLIKE = re.compile(r"\b(sk|pg|rk)-[A-Za-z0-9_-]{8,}")


def scrub(message: str) -> str:
    message = _BASE64_RUN.sub("[base64]", message)
    message = _KEYLIKE.sub(lambda m: m.group(1) + "-***", message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_log_id(now_ns: int | None = None, *, anonymous: bool = False) -> str:
    """Time-ordered; an anonymous line's id ends in ``ANONYMOUS_MARK`` (no schema change)."""
    suffix = secrets.token_hex(4)
    if anonymous:
        suffix = suffix[:-1] + ANONYMOUS_MARK
    return f"{now_ns or time.time_ns():020d}{suffix}"


@dataclass(frozen=True)
class Event:
    id: str
    created_at: datetime
    level: str
    message: str


class EventLog:
    def __init__(self, db: Database, *, max_entries: int = 5000) -> None:
        self.db = db
        self.max_entries = max_entries
        self._buffer: list[Event] = []
        self._counters: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: a minute's line is one row
        # (minute, kind, address) -> events not yet written; and -> (row id, total) once written
        self._auth_pending: dict[tuple[str, str, str], int] = {}
        self._auth_rows: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._warned: set[str] = set()
        self.redactor = Redactor()  # ConfigService replaces it whenever the settings change

    def scrub(self, message: str) -> str:
        """``message`` without base64 runs, key-shaped words and the configured secrets."""
        return scrub(self.redactor.text(message))

    def add(self, level: str, message: str, *, counted: bool = True) -> None:
        """One log line; an ERROR line also counts on the dashboard unless ``counted`` is off."""
        message = self.scrub(message)
        log.log(getattr(logging, level, logging.INFO), message)
        now = _utcnow()
        event = Event(new_log_id(), now, level, message)
        with self._lock:
            self._buffer.append(event)
            if level == "ERROR" and counted:
                key = (now.strftime("%Y-%m-%d"), "errors")
                self._counters[key] = self._counters.get(key, 0) + 1

    def info(self, message: str) -> None:
        self.add("INFO", message)

    def warning(self, message: str) -> None:
        self.add("WARNING", message)

    def warn_once(self, message: str) -> None:
        """``warning``, the first time this process sees ``message`` (a standing condition)."""
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        self.warning(message)

    def error(self, message: str) -> None:
        self.add("ERROR", message)

    def api_error(
        self, exc: PicGateError, source: str | None = None, *, in_stream: bool = False
    ) -> None:
        """Record one failed ``/v1`` call: counted once, one log line (a wrong gateway key from
        ``source`` is counted per address and minute instead: one line, not one per call).
        ``in_stream``: the failure ended a stream after its first byte."""
        if isinstance(exc, AuthenticationFailed) and source is not None:
            self.tally("gateway_key", source)
        elif isinstance(exc, KeyGuessingThrottled) and source is not None:
            self.tally("gateway_throttled", source)
        elif in_stream:
            self.add("ERROR", f"❌ 对话流中断: {exc.message}", counted=False)
        elif isinstance(exc, UpstreamError):
            self.add(
                "ERROR", f"❌ 上游返回错误: HTTP {exc.status_code}: {exc.message}", counted=False
            )
        elif exc.status_code >= 500:
            self.add("ERROR", f"❌ 请求失败: HTTP {exc.status_code}: {exc.message}", counted=False)
        else:
            self.warning(f"⚠️ 请求被拒绝: HTTP {exc.status_code}: {exc.message}")
        self.count("errors")

    def auth_failure(self, address: str) -> None:
        """Count one call refused for a wrong or missing gateway key from ``address``."""
        self.tally("gateway_key", address)

    def tally(self, kind: str, address: str) -> None:
        """Count one anonymous event of ``kind`` (a key of ``TALLIES``) from ``address``: one
        line per kind, address and minute, at most ``MAX_AUTH_SOURCES`` addresses per kind and
        minute (the rest are counted together)."""
        now = _utcnow()
        minute = now.strftime("%Y-%m-%d %H:%M")
        address = self.scrub(address[:64])
        with self._lock:
            key = (minute, kind, address)
            if key not in self._auth_pending and key not in self._auth_rows:
                sources = {
                    a
                    for m, k, a in (*self._auth_pending, *self._auth_rows)
                    if (m, k) == (minute, kind)
                }
                if len(sources) >= MAX_AUTH_SOURCES:
                    key = (minute, kind, OTHER_ADDRESSES)
                else:
                    # stdout gets the first event of each kind, address and minute, not all
                    log.warning("%s from %s", kind.replace("_", " "), address)
            self._auth_pending[key] = self._auth_pending.get(key, 0) + 1

    def count(self, name: str, amount: int = 1) -> None:
        key = (_utcnow().strftime("%Y-%m-%d"), name)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + amount

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            events, self._buffer = self._buffer, []
            counters, self._counters = self._counters, {}
            auth, self._auth_pending = self._auth_pending, {}
            rows = dict(self._auth_rows)
        if not events and not counters and not auth:
            return
        written: dict[tuple[str, str, str], tuple[str, int]] = {}

        def work(conn: Connection) -> None:
            written.clear()  # the database layer may run this again after a conflict
            if events:
                conn.execute(
                    insert(LOG_ENTRIES),
                    [
                        {
                            "id": e.id,
                            "created_at": e.created_at,
                            "level": e.level,
                            "message": e.message,
                        }
                        for e in events
                    ],
                )
            for key, amount in auth.items():
                row_id, total = rows.get(key, ("", 0))
                total += amount
                message = TALLIES[key[1]].format(count=total, address=key[2])
                if row_id:
                    result = conn.execute(
                        update(LOG_ENTRIES)
                        .where(LOG_ENTRIES.c.id == row_id)
                        .values(message=message)
                    )
                    if getattr(result, "rowcount", 1):
                        written[key] = (row_id, total)
                        continue
                # first line of this minute, or its row was cleared
                row_id = new_log_id(anonymous=True)
                conn.execute(
                    insert(LOG_ENTRIES).values(
                        id=row_id, created_at=_utcnow(), level="WARNING", message=message
                    )
                )
                written[key] = (row_id, total)
            for (day, name), amount in counters.items():
                stat = DAILY_STATS.c
                added = conn.execute(
                    update(DAILY_STATS)
                    .where(stat.day == day, stat.name == name)
                    .values(value=stat.value + amount)
                )
                if not added.rowcount:
                    conn.execute(insert(DAILY_STATS).values(day=day, name=name, value=amount))
            if events or auth:
                trim_logs(conn, self.max_entries)

        try:
            self.db.write(work)
        except Exception as exc:  # the log must never take a request down with it
            log.warning("could not write %d log lines: %s", len(events) + len(auth), exc)
            return
        minute = _utcnow().strftime("%Y-%m-%d %H:%M")
        with self._lock:
            self._auth_rows.update(written)
            # a past minute's line is final: forget it so the dict stays small
            for key in [k for k in self._auth_rows if k[0] != minute]:
                del self._auth_rows[key]

    async def aflush(self) -> None:
        import anyio.to_thread

        if self._buffer or self._counters or self._auth_pending:
            await anyio.to_thread.run_sync(self.flush)


def auth_failure_message(address: str, count: int) -> str:
    return TALLIES["gateway_key"].format(count=count, address=address)


def trim_logs(conn: Connection, max_entries: int) -> int:
    """Keep the newest ``max_entries`` lines, of which at most ``ANONYMOUS_SHARE`` anonymous:
    the anonymous lines are trimmed to their share first, then the other lines to what is
    left, so a flood of anonymous lines removes only older anonymous lines. Returns how many
    were removed."""
    anonymous = LOG_ENTRIES.c.id.endswith(ANONYMOUS_MARK)
    removed = _trim(conn, anonymous, int(max_entries * ANONYMOUS_SHARE))
    left = max_entries - (conn.scalar(select(func.count()).where(anonymous)) or 0)
    return removed + _trim(conn, ~anonymous, left)


def _trim(conn: Connection, where: ColumnElement[bool], keep: int) -> int:
    entry_id = LOG_ENTRIES.c.id
    cutoff = conn.scalar(
        select(entry_id).where(where).order_by(entry_id.desc()).offset(keep).limit(1)
    )
    if cutoff is None:
        return 0
    result = conn.execute(delete(LOG_ENTRIES).where(where, entry_id <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
