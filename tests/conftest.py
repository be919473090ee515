"""Shared fixtures: a clean environment, a stub upstream, and PicGate on a real socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from picgate.app import create_app
from picgate.config import Settings
from picgate.services import Services
from tests.postgres_fixtures import *  # noqa: F403  (postgres_server)
from tests.s3_fixtures import *  # noqa: F403  (s3_server, s3_store)
from tests.sqld_fixtures import *  # noqa: F403  (sqld_server, start_sqld)
from tests.support.servers import ServerThread
from tests.support.upstream import StubUpstream

GATEWAY_KEY = "pg-test-key-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-key"

APP_ENV = [name.upper() for name in Settings.model_fields] + ["AWS_LAMBDA_FUNCTION_NAME"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app reads its settings from the environment: start every test from none."""
    for name in APP_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[StubUpstream]:
    stub = StubUpstream().start()
    yield stub
    stub.stop()


@pytest.fixture
def upstream(upstream_server: StubUpstream) -> StubUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def make_settings(tmp_path: Path, upstream: StubUpstream) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": f"sqlite:///{tmp_path}/data/db/picgate.db",
            "upstream_api_base": upstream.base_url,
            "upstream_api_key": UPSTREAM_KEY,
            "upstream_model_name": "gpt-image-1",
            "gateway_api_key": GATEWAY_KEY,
            "secret_key": "test-secret-key-0123456789",
        }
        values.update(overrides)
        # None means "not set at all" (an explicit None would pin the field as environment-set)
        return Settings(**{k: v for k, v in values.items() if v is not None})

    return make


@pytest.fixture
def make_services(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Services]]:
    """Services (prepared, server mode) on the test's data folder; closed after the test."""
    import anyio

    from picgate.storage.object_store import ObjectStore

    made: list[Services] = []

    def make(objects: ObjectStore | None = None, **overrides: Any) -> Services:
        overrides.setdefault("runtime_mode", "server")
        services = Services(make_settings(**overrides), objects=objects)
        services.prepare()
        made.append(services)
        return services

    yield make
    for services in made:
        anyio.run(services.http.aclose)
        services.db.dispose()


@pytest.fixture
def r2_settings(s3_server: Any, s3_store: Any) -> dict[str, Any]:
    """R2 settings pointing at the moto server (the ``s3_store`` fixture made the bucket)."""
    from tests.s3_fixtures import S3_TEST_BUCKET

    return {
        "r2_endpoint_url": s3_server.endpoint_url,
        "r2_access_key_id": "testing",
        "r2_secret_access_key": "testing",
        "r2_bucket_name": S3_TEST_BUCKET,
    }


@dataclass
class Gateway:
    server: ServerThread
    services: Services
    key: str = GATEWAY_KEY

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def start_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(**overrides: Any) -> Gateway:
        settings = make_settings(**overrides)
        services = Services(settings)
        app = create_app(services=services)
        server = ServerThread(app).start()
        gateway = Gateway(server, services)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.server.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway()


@pytest.fixture
def openai_client(gateway: Gateway) -> Any:
    import openai

    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


def pytest_report_header() -> list[str]:
    from tests.support.fixtures import FIXTURES

    return [f"PicGate fixtures: {FIXTURES}"]
