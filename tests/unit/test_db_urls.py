"""libSQL/Turso URLs: normalisation, the auth token, TLS, and a local libSQL file.

The remote cases check what would be passed to ``picgate.db.hrana.connect`` (server URL,
``auth_token``), never a connection; tests/integration/test_libsql.py talks to a real sqld. The
local-file case (``sqlite+libsql:///file.db``, opened as the SQLite file it is) runs end to end
through ``Services``: migrations, an image stored and read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from picgate.config import Settings
from picgate.db import hrana
from picgate.db.engine import HEAD_REVISION, Database, build_engine, normalize_url
from picgate.library.records import ImageOrigin
from picgate.services import Services
from tests.support.images import b64, make_image


def connect_call(raw: str, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """What the engine for ``raw`` would pass to picgate.db.hrana.connect."""
    engine = build_engine(raw, **kwargs)
    args, _ = engine.dialect.create_connect_args(engine.url)
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def capture(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        seen.update(cargs=list(cargs), cparams=dict(cparams))
        raise _Captured

    with pytest.raises(_Captured):  # stop before any connection is attempted
        engine.connect()
    engine.dispose()
    assert seen["cargs"] == args
    return seen["cargs"], seen["cparams"]


class _Captured(Exception):
    pass


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("libsql://pics-me.turso.io", "sqlite+libsql://pics-me.turso.io?secure=true"),
        ("sqlite+libsql://pics-me.turso.io", "sqlite+libsql://pics-me.turso.io?secure=true"),
        ("sqlite+aiolibsql://pics-me.turso.io", "sqlite+libsql://pics-me.turso.io?secure=true"),
        (
            "sqlite+libsql://pics-me.turso.io?secure=true",
            "sqlite+libsql://pics-me.turso.io?secure=true",
        ),
        (
            "sqlite+libsql://127.0.0.1:8080?secure=false",
            "sqlite+libsql://127.0.0.1:8080?secure=false",
        ),
        ("sqlite+libsql:///data/pics.db", "sqlite+libsql:///data/pics.db"),
        ("https://pics-me.turso.io", "sqlite+libsql://pics-me.turso.io?secure=true"),
        ("http://127.0.0.1:8080", "sqlite+libsql://127.0.0.1:8080?secure=false"),
    ],
)
def test_normalize_url_libsql_remote_defaults_to_tls(raw: str, expected: str) -> None:
    assert normalize_url(raw).render_as_string(hide_password=False) == expected


def test_build_engine_token_in_url_moves_to_connect_args() -> None:
    args, params = connect_call(
        "sqlite+libsql://pics-me.turso.io/?authToken=tok-in-url&secure=true"
    )
    assert args == ["https://pics-me.turso.io"]
    assert params["auth_token"] == "tok-in-url"
    assert "tok-in-url" not in repr(args)


def test_build_engine_token_argument_wins_and_remote_is_pooled() -> None:
    engine = build_engine("libsql://pics-me.turso.io?authToken=old", auth_token="from-env")
    assert "authToken" not in str(engine.url) and isinstance(engine.pool, QueuePool)
    engine.dispose()
    args, params = connect_call("libsql://pics-me.turso.io", auth_token="from-env")
    assert args == ["https://pics-me.turso.io"]
    assert params["auth_token"] == "from-env"
    assert engine.dialect.driver == "libsql"
    assert engine.dialect.dbapi is hrana  # type: ignore[comparison-overlap]  # a module object


def test_build_engine_secure_false_uses_plain_http_for_local_sqld() -> None:
    args, params = connect_call("sqlite+libsql://127.0.0.1:8080?secure=false")
    assert args == ["http://127.0.0.1:8080"]
    assert "auth_token" not in params


def test_database_auth_token_setting_reaches_the_driver(tmp_path: Path) -> None:
    settings = Settings(
        database_url="libsql://pics-me.turso.io", database_auth_token="tok-from-setting"
    )
    db = Database(settings.database_url, auth_token=settings.database_auth_token)
    _, params = connect_call(db.raw_url, auth_token=db._auth_token)
    assert params["auth_token"] == "tok-from-setting"


def test_libsql_local_file_migrates_and_stores_image_through_services(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+libsql:///{tmp_path}/libsql/picgate.db",
        secret_key="libsql-test-secret-0123456789",
        gateway_api_key="pg-libsql-key-0123456789",
    )
    services = Services(settings)
    try:
        services.prepare()
        assert services.db.url.drivername == "sqlite+libsql"
        assert services.db.engine.dialect.driver == "pysqlite"
        assert services.db.current_revision() == HEAD_REVISION
        data = make_image("PNG", 5_000, seed=11)

        async def store_and_read() -> tuple[str, bytes]:

            stored = await services.library.save_encoded(
                b64(data), origin=ImageOrigin("generations")
            )
            services.library.rows.forget(stored.id)  # read back through the database row
            return stored.id, await services.library.serving.read_bytes(stored.id)

        image_id, read_back = anyio.run(store_and_read)
        assert read_back == data
        row = services.library.get(image_id)
        assert row is not None and row.size == len(data)
        # a second Database on the same file sees the migrated schema and the row
        again = Database(settings.database_url)
        assert again.current_revision() == HEAD_REVISION
        again.dispose()
    finally:
        services.flush()
        anyio.run(services.http.aclose)
        services.db.dispose()
