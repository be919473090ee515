"""A migration that dies half-way: on SQLite it leaves nothing (transactional DDL); a schema
left half-applied anyway (libSQL, an older PicGate) is one line saying what to do, from the
``Database`` and from ``picgate cleanup``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.operations import Operations
from sqlalchemy import inspect, text

from picgate import cli
from picgate.db import engine as engine_module
from picgate.db.engine import Database
from picgate.db.migration_state import HalfMigrated


def tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_migration_dying_half_way_on_sqlite_leaves_no_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade dies after its first tables were created (as a killed process would)."""
    calls = 0
    create_index = Operations.create_index

    def dying(self: Operations, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the process died here")
        return create_index(self, *args, **kwargs)

    monkeypatch.setattr(Operations, "create_index", dying)
    db = Database(f"sqlite:///{tmp_path}/picgate.db")
    with pytest.raises(RuntimeError):
        db.migrate()
    assert tables(db) == set()  # before: images was there, with no revision recorded
    db.dispose()
    monkeypatch.setattr(Operations, "create_index", create_index)
    again = Database(f"sqlite:///{tmp_path}/picgate.db")
    again.migrate()  # and the next start simply migrates
    assert "images" in tables(again)
    again.dispose()


def half_migrated(path: Path) -> str:
    """A SQLite file holding part of the schema and no revision (what libSQL can be left with)."""
    url = f"sqlite:///{path}"
    db = Database(url)
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP TABLE admin_sessions"))
    db.dispose()
    return url


def test_half_applied_schema_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "MIGRATION_WAIT_SECONDS", 0.2)
    db = Database(half_migrated(tmp_path / "picgate.db"))
    with pytest.raises(HalfMigrated) as caught:
        db.migrate()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("DATABASE_URL:")
    assert "half-applied" in message and "admin_sessions" in message
    assert "restore it from a backup" in message
    db.dispose()


def test_half_applied_schema_cleanup_prints_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(engine_module, "MIGRATION_WAIT_SECONDS", 0.2)
    monkeypatch.setenv("DATABASE_URL", half_migrated(tmp_path / "picgate.db"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789")
    assert cli.main(["cleanup"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "half-applied schema migration" in err[0]
