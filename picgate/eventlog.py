"""The log the admin console shows: one line per event, kept in the database with a cap.

Every event also goes to stdout through ``logging`` (``docker logs``, CloudWatch). Lines are
buffered and written in batches (``flush``): by a background task in server mode, and before
the response leaves in serverless mode. Long base64 runs and anything shaped like a key are
scrubbed before a line is kept.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from picgate.db.engine import Database
from picgate.db.models import DailyStat, LogEntry

log = logging.getLogger("picgate")

MAX_MESSAGE = 500
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


def new_log_id(now_ns: int | None = None) -> str:
    return f"{now_ns or time.time_ns():020d}{secrets.token_hex(4)}"


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
        self._flushes = 0

    def add(self, level: str, message: str) -> None:
        message = scrub(message)
        log.log(getattr(logging, level, logging.INFO), message)
        now = _utcnow()
        event = Event(new_log_id(), now, level, message)
        with self._lock:
            self._buffer.append(event)
            if level == "ERROR":
                key = (now.strftime("%Y-%m-%d"), "errors")
                self._counters[key] = self._counters.get(key, 0) + 1

    def info(self, message: str) -> None:
        self.add("INFO", message)

    def warning(self, message: str) -> None:
        self.add("WARNING", message)

    def error(self, message: str) -> None:
        self.add("ERROR", message)

    def count(self, name: str, amount: int = 1) -> None:
        key = (_utcnow().strftime("%Y-%m-%d"), name)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + amount

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        with self._lock:
            events, self._buffer = self._buffer, []
            counters, self._counters = self._counters, {}
        if not events and not counters:
            return
        self._flushes += 1
        trim = self._flushes % 20 == 1

        def work(session: Session) -> None:
            for e in events:
                session.add(
                    LogEntry(id=e.id, created_at=e.created_at, level=e.level, message=e.message)
                )
            for (day, name), amount in counters.items():
                row = session.get(DailyStat, (day, name))
                if row is None:
                    session.add(DailyStat(day=day, name=name, value=amount))
                else:
                    session.execute(
                        update(DailyStat)
                        .where(DailyStat.day == day, DailyStat.name == name)
                        .values(value=DailyStat.value + amount)
                    )
            if trim:
                trim_logs(session, self.max_entries)

        try:
            self.db.call(work)
        except Exception as exc:  # the log must never take a request down with it
            log.warning("could not write %d log lines: %s", len(events), exc)

    async def aflush(self) -> None:
        import anyio.to_thread

        if self._buffer or self._counters:
            await anyio.to_thread.run_sync(self.flush)


def trim_logs(session: Session, max_entries: int) -> int:
    """Keep the newest ``max_entries`` lines; returns how many were removed."""
    cutoff = session.scalar(
        select(LogEntry.id).order_by(LogEntry.id.desc()).offset(max_entries).limit(1)
    )
    if cutoff is None:
        return 0
    result = session.execute(delete(LogEntry).where(LogEntry.id <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
