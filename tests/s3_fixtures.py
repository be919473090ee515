"""pytest fixtures for a real S3 server; ``tests/conftest.py`` star-imports them.

``s3_server`` (session): one moto server for the whole run. A test may stop and start it
(outages); ``s3_store`` starts it again if a test left it stopped.
``s3_store`` (function): a reset server with an empty bucket ``S3_TEST_BUCKET``, and an
S3ObjectStore on it (default timeouts). The store object is shared across tests, since building
a boto3 client costs ~0.2 s; tests that need other options call ``s3_server.make_store``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from picgate.storage.s3_store import S3ObjectStore
from tests.s3server import S3Server

# _s3_shared_store is listed so that `from tests.s3_fixtures import *` brings it along.
__all__ = ["S3_TEST_BUCKET", "_s3_shared_store", "s3_server", "s3_store"]

S3_TEST_BUCKET = "picgate-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(log_dir=tmp_path_factory.mktemp("s3server"))
    with server:
        yield server


@pytest.fixture(scope="session")
def _s3_shared_store(s3_server: S3Server) -> S3ObjectStore:
    return s3_server.make_store(S3_TEST_BUCKET)


@pytest.fixture
def s3_store(s3_server: S3Server, _s3_shared_store: S3ObjectStore) -> S3ObjectStore:
    s3_server.start()
    s3_server.reset()
    s3_server.create_bucket(S3_TEST_BUCKET)
    return _s3_shared_store
