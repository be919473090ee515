"""``picgate openwebui migrate`` on an Open WebUI 0.12.4 database (tests/fixtures/openwebui).

The images land in a PicGate served on a real socket, whose URLs must give back the very bytes
the chats held; the chats must keep everything else as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from picgate.cli import main
from picgate.openwebui.database import SQLiteDatabase, StoredText
from picgate.storage.codec import decode_base64
from tests.conftest import GATEWAY_KEY, Gateway
from tests.fixtures.openwebui.build_webui_db import DEFAULT_OUT as FIXTURE_DB

DATA_URL = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/]+=*")
# (table, key, column): every JSON text the fixture keeps images in
TEXTS = (
    ("chat", "id", "chat"),
    ("chat_message", "id", "content"),
    ("chat_message", "id", "output"),
    ("chat_message", "id", "files"),
    ("shared_chat", "id", "chat"),
)
DISTINCT_IMAGES = 13  # 14 per chat; chat c-0004 repeats c-0001's cat


def _connect(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path))


def _texts(path: Path) -> dict[tuple[str, str, str], str]:
    with _connect(path) as db:
        return {
            (table, str(key), column): value
            for table, key_column, column in TEXTS
            for key, value in db.execute(f"SELECT {key_column}, {column} FROM {table}")
            if value is not None
        }


def _chat_of(db_path: Path) -> dict[str, str]:
    with _connect(db_path) as db:
        rows = db.execute(
            "SELECT id, chat_id FROM chat_message UNION ALL SELECT id, chat_id FROM shared_chat"
        ).fetchall()
    owners = {str(k): str(c) for k, c in rows}
    return owners


@pytest.fixture
def webui_db(tmp_path: Path) -> Path:
    path = tmp_path / "owui" / "webui.db"
    path.parent.mkdir()
    shutil.copy(FIXTURE_DB, path)
    return path


@pytest.fixture
def picgate(
    start_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """A PicGate on a socket; the CLI run in this process sees the same settings."""
    gateway = start_gateway(runtime_mode="server")
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/data/db/picgate.db",
        "GATEWAY_API_KEY": GATEWAY_KEY,
        "SECRET_KEY": "test-secret-key-0123456789",
        "PUBLIC_BASE_URL": gateway.url,
        "RUNTIME_MODE": "server",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return gateway


def _migrate(
    db: Path, *extra: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = main(["openwebui", "migrate", "--database-url", f"sqlite:///{db}", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _normal(text: str, base: str) -> str:
    """The text with every image (data URL or PicGate URL, bare or in markdown) as one token."""
    text = DATA_URL.sub("<img>", text)
    text = re.sub(re.escape(base) + r"/images/[A-Za-z0-9_-]{22}\.[a-z]+", "<img>", text)
    return text.replace("![image](<img>)", "<img>")


def test_migrate_fixture_moves_every_image_and_keeps_the_rest(
    webui_db: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _texts(webui_db)
    code, report = _migrate(webui_db, "--vacuum", capsys=capsys)
    assert code == 0, report
    after = _texts(webui_db)

    assert report["chats_scanned"] == 12
    assert report["chats_rewritten"] == 11
    assert report["images_found"] == sum(len(DATA_URL.findall(t)) for t in before.values())
    assert report["bytes_after"] < report["bytes_before"] // 5
    assert b"data:image" not in webui_db.read_bytes()
    assert not any("data:image" in text for text in after.values())
    # smaller on disk after --vacuum
    assert report["file_bytes_after"] < report["file_bytes_before"]
    assert webui_db.stat().st_size == report["file_bytes_after"]

    with httpx.Client(base_url=picgate.url) as client:
        for where, old in before.items():
            new = after[where]
            # nothing but the images changed, byte for byte
            assert _normal(new, picgate.url) == _normal(old, picgate.url), where
            json.loads(new)
            # and each new URL serves the bytes the data URL held, in the same order
            old_images = DATA_URL.findall(old)
            new_urls = re.findall(
                re.escape(picgate.url) + r"(/images/[A-Za-z0-9_-]{22}\.[a-z]+)", new
            )
            assert len(old_images) == len(new_urls), where
            for data_url, path in zip(old_images, new_urls, strict=True):
                served = client.get(path)
                assert served.status_code == 200, path
                assert served.content == decode_base64(data_url)
    # the same image twice is stored once
    rows = picgate.services.db.read(
        lambda s: s.execute(
            sqlalchemy.text("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images")
        ).one()
    )
    assert tuple(rows) == (DISTINCT_IMAGES, DISTINCT_IMAGES)
    # each image records where it was found
    found = picgate.services.db.read(
        lambda s: sorted(
            tuple(r)
            for r in s.execute(
                sqlalchemy.text(
                    "SELECT chat_id, message_id, user_id, source FROM images WHERE chat_id = 'c-0002'"
                )
            )
        )
    )
    user = "9b0c2f8e-0f0e-4c1b-9a55-5d6f1c0a7e11"
    assert found == [
        ("c-0002", "a-0002-3d4c", user, "openwebui"),
        ("c-0002", "u-0002-1f2e", user, "openwebui"),
    ]


def test_migrate_chat_json_keeps_its_messages_and_ids(
    webui_db: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    def shape(path: Path) -> dict[str, Any]:
        with _connect(path) as db:
            chats = {cid: json.loads(doc) for cid, doc in db.execute("SELECT id, chat FROM chat")}
            rows = sorted(db.execute("SELECT id, chat_id, role, parent_id FROM chat_message"))
        return {
            "history": {c: sorted(d["history"]["messages"]) for c, d in chats.items()},
            "current": {c: d["history"]["currentId"] for c, d in chats.items()},
            "legacy": {c: [m["id"] for m in d["messages"]] for c, d in chats.items()},
            "rows": rows,
        }

    expected = shape(webui_db)
    code, _ = _migrate(webui_db, capsys=capsys)
    assert code == 0
    assert shape(webui_db) == expected


def test_migrate_second_run_changes_nothing(
    webui_db: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _migrate(webui_db, capsys=capsys)[0] == 0
    first = webui_db.read_bytes()
    code, report = _migrate(webui_db, capsys=capsys)
    assert code == 0
    assert (report["images_found"], report["chats_rewritten"]) == (0, 0)
    assert report["bytes_after"] == report["bytes_before"]
    assert webui_db.read_bytes() == first


def test_migrate_dry_run_changes_nothing_and_reports(
    webui_db: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    original = webui_db.read_bytes()
    code, report = _migrate(webui_db, "--dry-run", "--vacuum", capsys=capsys)
    assert code == 0
    assert report["dry_run"] is True
    assert report["images_found"] > DISTINCT_IMAGES
    assert report["chats_rewritten"] == 0
    assert report["bytes_after"] < report["bytes_before"]
    assert webui_db.read_bytes() == original
    count = picgate.services.db.read(
        lambda s: s.execute(sqlalchemy.text("SELECT COUNT(*) FROM images")).scalar()
    )
    assert count == 0


def test_migrate_without_base_url_is_one_line_and_changes_nothing(
    webui_db: Path,
    picgate: Gateway,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PUBLIC_BASE_URL")
    original = webui_db.read_bytes()
    code = main(["openwebui", "migrate", "--database-url", str(webui_db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "PUBLIC_BASE_URL" in err[-1] and "--base-url" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert webui_db.read_bytes() == original


@pytest.mark.parametrize(
    ("url", "says"),
    [("/nowhere/webui.db", "no SQLite database"), ("mysql://x/y", "unsupported --database-url")],
)
def test_migrate_bad_database_url_is_one_line(
    url: str, says: str, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["openwebui", "migrate", "--database-url", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert says in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_migrate_not_an_open_webui_database_is_refused(
    tmp_path: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    assert main(["openwebui", "migrate", "--database-url", str(other)]) == 2
    assert "no Open WebUI chat table" in capsys.readouterr().err


def _chat_states(db: Path, original: dict[tuple[str, str, str], str]) -> Iterator[tuple[str, str]]:
    """(chat id, "old" | "new" | "broken") for every chat."""
    owners = _chat_of(db)
    now = _texts(db)
    by_chat: dict[str, list[tuple[str, str]]] = {}
    for where, text in now.items():
        table, key, _ = where
        chat_id = key if table == "chat" else owners[key]
        by_chat.setdefault(chat_id, []).append((original[where], text))
    for chat_id, pairs in by_chat.items():
        if all(old == new for old, new in pairs):
            yield chat_id, "old"
        elif all("data:image" not in new for _, new in pairs):
            yield chat_id, "new"
        else:
            yield chat_id, "broken"


def test_migrate_killed_mid_transaction_leaves_chats_whole_and_rerun_completes(
    webui_db: Path, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    original = _texts(webui_db)
    env = {**os.environ, "PICGATE_OPENWEBUI_HOLD_AT": "5", "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "picgate.cli",
            "openwebui",
            "migrate",
            "--database-url",
            str(webui_db),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("holding chat"):
                break
        else:
            pytest.fail(f"the run ended without holding: exit {process.wait()}")
        # the fifth chat's updates are written, its commit is not
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    states = dict(_chat_states(webui_db, original))
    assert "broken" not in states.values()
    assert sorted(states.values()).count("new") == 4  # the four committed before the kill

    code, report = _migrate(webui_db, capsys=capsys)
    assert code == 0
    assert set(dict(_chat_states(webui_db, original)).values()) <= {"new", "old"}
    assert not any("data:image" in t for t in _texts(webui_db).values())
    # images the killed run stored for the held chat were found again, not stored twice
    count = picgate.services.db.read(
        lambda s: s.execute(
            sqlalchemy.text("SELECT COUNT(DISTINCT sha256) - COUNT(*) FROM images")
        ).scalar()
    )
    assert count == 0
    assert report["chats_rewritten"] == 7


class _CountingSQLite(SQLiteDatabase):
    """Tells the test when a write found the database locked."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.locked = threading.Event()

    def _is_locked(self, exc: BaseException) -> bool:
        locked = super()._is_locked(exc)
        if locked:
            self.locked.set()
        return locked


def test_openwebui_database_write_waits_out_a_lock(webui_db: Path) -> None:
    database = _CountingSQLite(webui_db)
    database.inspect()
    holder = sqlite3.connect(webui_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # Open WebUI in the middle of a write
    done: list[int] = []

    def rewrite(record: Any) -> list[StoredText]:
        return [StoredText("chat", record.chat_id, "chat", '{"title": "rewritten"}')]

    worker = threading.Thread(target=lambda: done.append(database.write("c-0003", rewrite)))
    worker.start()
    assert database.locked.wait(30)
    holder.execute("COMMIT")
    worker.join(60)
    holder.close()
    database.close()
    assert done == [1]
    with _connect(webui_db) as db:
        assert db.execute("SELECT chat FROM chat WHERE id = 'c-0003'").fetchone()[0] == (
            '{"title": "rewritten"}'
        )


def test_fixture_builder_makes_the_shipped_database(tmp_path: Path) -> None:
    from tests.fixtures.openwebui.build_webui_db import build

    fresh = build(tmp_path / "webui.db")

    def content(path: Path) -> list[Any]:
        with _connect(path) as db:
            schema = sorted(db.execute("SELECT type, name, sql FROM sqlite_master"))
            rows = [
                sorted(db.execute(f"SELECT * FROM {t}"))
                for t in ("chat", "chat_message", "shared_chat")
            ]
        return [schema, rows]

    assert content(fresh) == content(FIXTURE_DB)
    assert hashlib.sha256(FIXTURE_DB.read_bytes()).hexdigest()  # shipped, readable
