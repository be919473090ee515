"""pytest fixtures for a real PostgreSQL server; ``tests/conftest.py`` star-imports them.

``postgres_server`` (session): one throwaway cluster for the whole run, started on first use;
each test asks it for a fresh database (``server.database_url(name)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import PostgresServer

__all__ = ["postgres_server"]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server
