"""Which database a command used, said so a user who runs it from the wrong folder notices.

``picgate admin create`` and ``picgate cleanup`` open the database that ``DATABASE_URL`` names,
and the default is a SQLite file relative to the current folder: run from elsewhere, they
would quietly create a second, empty database. ``Whereabouts`` is taken before the command
opens the database (did the file exist?) and ``lines()`` after: the URL with its password and
token masked, the file's absolute path, and a warning when the file is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from picgate.db.engine import DatabaseUrlError, normalize_url, sqlite_file

MASK = "***"
# query parameters that carry a credential (libSQL's token, PostgreSQL's password)
SECRET_PARAMS = frozenset({"authtoken", "auth_token", "password", "token"})


def shown_url(raw: str) -> str:
    """``raw`` with any password and token replaced by ``***`` (safe to print)."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return "(not a database URL)"
    masked = {k: MASK for k in url.query if k.lower() in SECRET_PARAMS}
    if masked:
        url = url.update_query_dict(masked)
    # the query is URL-encoded when rendered: show the mask as the password's is shown
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)


def local_file(raw: str) -> Path | None:
    """The absolute path of the SQLite file ``raw`` names; None for remote or memory URLs."""
    try:
        file = sqlite_file(normalize_url(raw))
    except DatabaseUrlError:  # a URL PicGate refuses names no file
        return None
    return None if file is None else file.resolve()


@dataclass(frozen=True)
class Whereabouts:
    """Where a command's database is, and whether it was there before the command ran."""

    url: str
    file: Path | None
    existed: bool

    @classmethod
    def before_opening(cls, raw: str) -> Whereabouts:
        file = local_file(raw)
        # an empty file is what opening leaves behind; it holds no database yet
        existed = file is None or (file.is_file() and file.stat().st_size > 0)
        return cls(url=shown_url(raw), file=file, existed=existed)

    def lines(self) -> list[str]:
        """What to print once the command has used the database."""
        where = f"database: {self.url}"
        if self.file is not None:
            where += f" ({self.file})"
        if self.existed:
            return [where]
        return [
            where,
            f"no database was found there, so a new one was created at {self.file}; if you "
            "meant an existing one, run from the folder that holds it or set DATABASE_URL",
        ]
