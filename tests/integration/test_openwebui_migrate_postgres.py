"""``picgate openwebui migrate`` on an Open WebUI 0.12.4 database kept in a real PostgreSQL.

The fixture's content (tests/fixtures/openwebui) is written into a fresh database of the
session's throwaway PostgreSQL server the way Open WebUI writes it there (SQLAlchemy over psycopg
3; ``JSON`` columns are ``json``). The images land in a PicGate served on a real socket, whose
URLs must give back the bytes the chats held.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy

from picgate.cli import main
from picgate.openwebui import postgres
from picgate.openwebui.database import ChatRecord, StoredText
from picgate.openwebui.postgres import PostgresDatabase
from picgate.storage.codec import decode_base64
from tests.conftest import GATEWAY_KEY, Gateway
from tests.fixtures.openwebui.build_webui_db import USER_ID, build_postgres
from tests.postgres import PostgresServer
from tests.support.servers import free_port

DATA_URL = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/]+=*")
TEXTS = (
    ("chat", "id", "chat"),
    ("chat_message", "id", "content"),
    ("chat_message", "id", "output"),
    ("chat_message", "id", "files"),
    ("shared_chat", "id", "chat"),
)
DISTINCT_IMAGES = 13  # 14 per chat; chat c-0004 repeats c-0001's cat
_names = itertools.count()

Texts = dict[tuple[str, str, str], str]


@pytest.fixture
def owui_url(postgres_server: PostgresServer) -> str:
    """A new PostgreSQL database holding the Open WebUI fixture's chats."""
    url = postgres_server.database_url(f"owui_{os.getpid()}_{next(_names)}")
    build_postgres(url)
    return url


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


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _texts(url: str) -> Texts:
    """Every JSON text the fixture keeps images in, as PostgreSQL stores it."""
    with _connect(url) as db:
        return {
            (table, str(key), column): value
            for table, key_column, column in TEXTS
            for key, value in db.execute(
                f'SELECT {key_column}, "{column}"::text FROM {table}'
            ).fetchall()
            if value is not None
        }


def _migrate(url: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["openwebui", "migrate", "--database-url", url, "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _normal(text: str, base: str) -> str:
    """The text with every image (data URL or PicGate URL, bare or in markdown) as one token."""
    text = DATA_URL.sub("<img>", text)
    text = re.sub(re.escape(base) + r"/images/[A-Za-z0-9_-]{22}\.[a-z]+", "<img>", text)
    return text.replace("![image](<img>)", "<img>")


def _images(picgate: Gateway, sql: str) -> list[Any]:
    return picgate.services.db.read(lambda s: [tuple(r) for r in s.execute(sqlalchemy.text(sql))])


def test_openwebui_postgres_fixture_columns_are_text_preserving_json(owui_url: str) -> None:
    database = PostgresDatabase(owui_url)
    try:
        database.inspect()
        types = database.column_types()
    finally:
        database.close()
    assert types == {
        "chat.chat": "json",
        "chat_message.content": "json",
        "chat_message.output": "json",
        "chat_message.files": "json",
        "chat_message.embeds": "json",
        "shared_chat.chat": "json",
    }


def test_migrate_postgres_moves_every_image_and_keeps_the_rest(
    owui_url: str, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _texts(owui_url)
    code, report = _migrate(owui_url, "--vacuum", capsys=capsys)
    assert code == 0, report
    after = _texts(owui_url)

    assert report["chats_scanned"] == 12
    assert report["chats_rewritten"] == 11
    assert report["images_found"] == sum(len(DATA_URL.findall(t)) for t in before.values())
    assert report["bytes_after"] < report["bytes_before"] // 5
    assert report["file_bytes_after"] < report["file_bytes_before"]
    assert set(after) == set(before)
    with _connect(owui_url) as db:
        left = db.execute(
            "SELECT (SELECT COUNT(*) FROM chat WHERE chat::text LIKE '%data:image%')"
            " + (SELECT COUNT(*) FROM chat_message WHERE concat(content::text, output::text,"
            " files::text, embeds::text) LIKE '%data:image%')"
            " + (SELECT COUNT(*) FROM shared_chat WHERE chat::text LIKE '%data:image%')"
        ).fetchone()
    assert left == (0,)

    with httpx.Client(base_url=picgate.url) as client:
        for where, old in before.items():
            new = after[where]
            # json columns keep their text: nothing but the images changed, byte for byte
            assert _normal(new, picgate.url) == _normal(old, picgate.url), where
            json.loads(new)
            old_images = DATA_URL.findall(old)
            new_urls = re.findall(
                re.escape(picgate.url) + r"(/images/[A-Za-z0-9_-]{22}\.[a-z]+)", new
            )
            assert len(old_images) == len(new_urls), where
            for data_url, path in zip(old_images, new_urls, strict=True):
                served = client.get(path)
                assert served.status_code == 200, path
                assert served.content == decode_base64(data_url)
    counts = _images(picgate, "SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images")
    assert counts == [(DISTINCT_IMAGES, DISTINCT_IMAGES)]
    found = _images(
        picgate,
        "SELECT chat_id, message_id, user_id, source FROM images WHERE chat_id = 'c-0002'",
    )
    assert sorted(found) == [
        ("c-0002", "a-0002-3d4c", USER_ID, "openwebui"),
        ("c-0002", "u-0002-1f2e", USER_ID, "openwebui"),
    ]


def test_migrate_postgres_second_run_changes_nothing(
    owui_url: str, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _migrate(owui_url, capsys=capsys)[0] == 0
    first = _texts(owui_url)
    code, report = _migrate(owui_url, capsys=capsys)
    assert code == 0
    assert (report["images_found"], report["chats_rewritten"]) == (0, 0)
    assert report["bytes_after"] == report["bytes_before"]
    assert _texts(owui_url) == first


def test_migrate_postgres_dry_run_changes_nothing_and_reports(
    owui_url: str, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    original = _texts(owui_url)
    code, report = _migrate(owui_url, "--dry-run", capsys=capsys)
    assert code == 0
    assert report["dry_run"] is True
    assert report["images_found"] > DISTINCT_IMAGES
    assert report["chats_rewritten"] == 0
    assert report["bytes_after"] < report["bytes_before"]
    assert _texts(owui_url) == original
    assert _images(picgate, "SELECT COUNT(*) FROM images") == [(0,)]


def _chat_states(url: str, original: Texts) -> Iterator[str]:
    """ "old" | "new" | "broken" for every chat (all its texts taken together)."""
    with _connect(url) as db:
        owners = dict(
            db.execute(
                "SELECT id, chat_id FROM chat_message UNION ALL SELECT id, chat_id FROM shared_chat"
            ).fetchall()
        )
    by_chat: dict[str, list[tuple[str, str]]] = {}
    for where, text in _texts(url).items():
        table, key, _ = where
        by_chat.setdefault(key if table == "chat" else owners[key], []).append(
            (original[where], text)
        )
    for pairs in by_chat.values():
        if all(old == new for old, new in pairs):
            yield "old"
        elif all("data:image" not in new for _, new in pairs):
            yield "new"
        else:
            yield "broken"


def test_migrate_postgres_killed_mid_transaction_leaves_chats_whole_and_rerun_completes(
    owui_url: str, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    original = _texts(owui_url)
    env = {**os.environ, "PICGATE_OPENWEBUI_HOLD_AT": "5", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "picgate.cli", "openwebui", "migrate"]
    process = subprocess.Popen(
        [*command, "--database-url", owui_url],
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
        # the fifth chat's updates are sent, its commit is not: PostgreSQL must roll it back
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    states = sorted(_chat_states(owui_url, original))
    assert "broken" not in states
    assert states.count("new") == 4  # the four committed before the kill

    code, report = _migrate(owui_url, capsys=capsys)
    assert code == 0, report
    assert set(_chat_states(owui_url, original)) <= {"new", "old"}
    assert not any("data:image" in t for t in _texts(owui_url).values())
    assert _images(picgate, "SELECT COUNT(DISTINCT sha256) - COUNT(*) FROM images") == [(0,)]
    assert report["chats_rewritten"] == 7


class _CountingPostgres(PostgresDatabase):
    """Tells the test when a write found a row locked."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.locked = threading.Event()

    def _is_locked(self, exc: BaseException) -> bool:
        locked = super()._is_locked(exc)
        if locked:
            self.locked.set()
        return locked


def test_openwebui_postgres_write_waits_out_a_row_lock_and_sees_the_new_chat(
    owui_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT", "50ms")
    database = _CountingPostgres(owui_url)
    database.inspect()
    seen: list[str] = []
    done: list[int] = []

    def rewrite(record: ChatRecord) -> list[StoredText]:
        seen.append(record.texts[0].text)
        return [StoredText("chat", record.chat_id, "chat", '{"title": "rewritten"}')]

    with _connect(owui_url) as holder:
        # Open WebUI in the middle of saving chat c-0003
        holder.execute("BEGIN")
        holder.execute(
            """UPDATE chat SET chat = '{"title": "saved by Open WebUI"}' WHERE id = 'c-0003'"""
        )
        worker = threading.Thread(target=lambda: done.append(database.write("c-0003", rewrite)))
        worker.start()
        try:
            assert database.locked.wait(30)
        finally:
            holder.execute("COMMIT")
            worker.join(60)
            database.close()
        assert done == [1]
        # the write read the chat again under its lock: Open WebUI's save, not the old text
        assert seen[-1] == '{"title": "saved by Open WebUI"}'
        row = holder.execute("SELECT chat::text FROM chat WHERE id = 'c-0003'").fetchone()
    assert row == ('{"title": "rewritten"}',)


def test_migrate_postgres_unreachable_is_one_line_without_the_password(
    picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg2://owui:s3cret-pw@127.0.0.1:{free_port()}/webui"
    code = main(["openwebui", "migrate", "--database-url", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("picgate openwebui migrate: --database-url: cannot connect")
    assert "s3cret-pw" not in "\n".join(err)
    assert "Traceback" not in "\n".join(err)


def test_migrate_postgres_not_an_open_webui_database_is_refused(
    postgres_server: PostgresServer, picgate: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_server.database_url(f"empty_{os.getpid()}_{next(_names)}")
    assert main(["openwebui", "migrate", "--database-url", url]) == 2
    assert "no Open WebUI chat table" in capsys.readouterr().err
