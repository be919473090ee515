"""A DATABASE_URL PicGate cannot use is refused when the Database is built, in one line that
names the setting and the fix, without the password it may carry; good URLs pass."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from picgate.config import Settings, SettingsError
from picgate.db.engine import Database, DatabaseUrlError, checked_url, private_file


@pytest.mark.parametrize(
    "raw,says",
    [
        ("foo", "is not a database URL"),
        ("", "is not a database URL"),
        ("http://[::1", "is not a database URL"),
        ("mysql://x", "does not support mysql://"),
        ("mysql+pymysql://u:secret@db.example/pics", "does not support mysql+pymysql://"),
        ("oracle://scott:tiger@h/db", "does not support oracle://"),
    ],
)
def test_database_url_unusable_is_one_line_naming_setting_and_forms(raw: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError, match=re.escape(says)) as info:
        Database(raw)
    message = str(info.value)
    assert isinstance(info.value, SettingsError)
    assert message.startswith("DATABASE_URL") and "\n" not in message
    assert "sqlite:///./data/db/picgate.db" in message and "postgresql://" in message
    assert "secret" not in message and "tiger" not in message


def test_database_url_postgres_without_psycopg_says_install_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    for raw in ("postgresql+psycopg://u:pw@h/db", "postgresql://u:pw@h/db", "postgres://h/db"):
        with pytest.raises(DatabaseUrlError, match=r"pip install 'picgate\[postgres\]'") as info:
            Database(raw)
        assert str(info.value).startswith("DATABASE_URL") and "\n" not in str(info.value)
        assert "pw" not in str(info.value)


def test_database_url_sqlite_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    with pytest.raises(DatabaseUrlError, match=r"^DATABASE_URL: cannot create .*plain/db"):
        Database(f"sqlite:///{tmp_path}/plain/db/picgate.db")
    assert not (tmp_path / "plain" / "db").exists()


def test_database_url_sqlite_naming_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUrlError, match="which is a folder"):
        Database(f"sqlite:///{tmp_path}")


def test_database_url_file_that_cannot_be_made_at_start_is_settings_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(DatabaseUrlError, match="cannot create the database file"):
        private_file(tmp_path / "plain" / "x.db")


@pytest.mark.parametrize(
    "raw,driver",
    [
        ("sqlite:///./data/db/picgate.db", "sqlite"),
        ("sqlite+aiosqlite:///./data/db/picgate.db", "sqlite"),
        ("sqlite://", "sqlite"),
        ("libsql://pics.turso.io", "sqlite+libsql"),
        ("https://pics.turso.io", "sqlite+libsql"),
        ("postgresql://u:p@h/db", "postgresql+psycopg"),
        ("postgres://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
    ],
)
def test_database_url_accepted_forms_pass_without_creating_anything(
    raw: str, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert checked_url(raw).drivername == driver
    assert list(tmp_path.iterdir()) == []


def test_settings_default_database_url_names_the_driver_picgate_uses() -> None:
    assert Settings().database_url == "sqlite:///./data/db/picgate.db"
