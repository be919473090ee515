"""A real PostgreSQL server for tests: Debian's ``postgres`` in a subprocess on 127.0.0.1.

    with PostgresServer(tmp_path) as server:
        db = Database(server.database_url("pics"))

The binaries come from ``PICGATE_PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin``
(scripts/test.sh installs Debian's ``postgresql``); without them ``postgres_bin()`` raises: the
PostgreSQL tests never skip. PostgreSQL refuses to run as root, so under root the cluster lives
in a folder of its own owned by the ``postgres`` user, and ``initdb``/``postgres`` run as that
user. The cluster trades durability for speed (``fsync=off``): it is thrown away after the run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from tests.support.processes import ServerProcess
from tests.support.servers import free_port

START_TIMEOUT = 30.0
SUPERUSER = "picgate"


def postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres``; raises (never skips) when missing."""
    raw = os.environ.get("PICGATE_PG_BIN")
    candidates = (
        [Path(raw)]
        if raw
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name),
            reverse=True,
        )
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise RuntimeError(
        f"no PostgreSQL server binaries (PICGATE_PG_BIN={raw!r}, /usr/lib/postgresql/*/bin): "
        "run the tests through scripts/test.sh, which installs Debian's postgresql"
    )


class PostgresServer(ServerProcess):
    """One throwaway cluster on a free port; output goes to ``root/postgres.log``."""

    name = "postgres"
    start_timeout = START_TIMEOUT

    def __init__(self, root: Path) -> None:
        super().__init__(root / "postgres.log")
        self.root = root
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self._cluster: Path | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database_url(self, database: str) -> str:
        """A URL to a new, empty database ``database`` on this server."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def _user(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres"} if self._as_root else {}

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        binaries = postgres_bin()
        # the pytest tmp tree is root's and closed to others: under root the cluster lives apart
        self._cluster = Path(tempfile.mkdtemp(prefix="picgate-pg-")) if self._as_root else self.root
        data = self._cluster / "data"
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self._cluster, owner.pw_uid, owner.pw_gid)
        env = {**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust"]
        done = subprocess.run(
            [*initdb, "-E", "UTF8", "--no-sync", "--no-instructions"],
            env=env,
            capture_output=True,
            text=True,
            cwd=self._cluster,
            check=False,
            **self._user(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr[-2000:]}")
        command = [str(binaries / "postgres"), "-D", str(data), "-p", str(self.port)]
        command += ["-h", "127.0.0.1", "-k", str(self._cluster)]
        # not UTC on purpose: a timestamp that went through the server's time zone shows
        options = (
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "timezone=Asia/Shanghai",
        )
        for option in options:
            command += ["-c", option]
        self._launch(command, env, **self._user())
        return self

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False  # not listening yet, or still starting up

    def stop(self) -> None:
        super().stop()
        if self._as_root and self._cluster is not None:
            shutil.rmtree(self._cluster, ignore_errors=True)
            self._cluster = None
