"""pytest fixtures for a real libSQL server; ``tests/conftest.py`` star-imports them.

``sqld_server`` (session): one sqld for the whole run, for tests that make their own tables.
``start_sqld`` (function): a factory for a fresh sqld on an empty database (migrations, the
replica test, JWT auth), stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sqld import SqldServer

__all__ = ["sqld_server", "start_sqld"]


@pytest.fixture(scope="session")
def sqld_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqldServer]:
    with SqldServer(tmp_path_factory.mktemp("sqld")) as server:
        yield server


@pytest.fixture
def start_sqld(tmp_path: Path) -> Iterator[Callable[..., SqldServer]]:
    started: list[SqldServer] = []

    def start(**options: Any) -> SqldServer:
        server = SqldServer(tmp_path / f"sqld-{len(started)}", **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
