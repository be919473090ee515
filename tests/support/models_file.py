"""Two stub upstreams on loopback and a ``MODELS_FILE`` routing models to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.upstream import StubUpstream

KEY_A = "sk-upstream-a-0123456789abcdef"
KEY_B = "sk-upstream-b-fedcba9876543210"


def write_models_file(path: Path, a: StubUpstream, b: StubUpstream, extra: str = "") -> Path:
    """Upstream ``a`` (key from ``$PG_TEST_KEY_A``) and ``b`` (key written in the file), with an
    image model on each, a chat model on ``b`` and a drawing model on ``a`` used from chat."""
    path.write_text(
        f"""
upstreams:
  - name: alpha
    base_url: {a.base_url}
    api_key: ${{PG_TEST_KEY_A}}
  - name: beta
    base_url: {b.base_url}
    api_key: {KEY_B}
    retries: 1
models:
  - name: painter
    upstream: alpha
    upstream_model: gpt-image-1
    api: images
    params:
      size: 256x256
      quality: low
  - name: flux
    upstream: beta
    upstream_model: flux-dev
    api: images
  - name: talker
    upstream: beta
    upstream_model: gemini-image
    api: chat
    params:
      temperature: 0.5
{extra}""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def second_upstream_server() -> Iterator[StubUpstream]:
    stub = StubUpstream().start()
    yield stub
    stub.stop()


@pytest.fixture
def upstream_b(second_upstream_server: StubUpstream) -> StubUpstream:
    second_upstream_server.reset()
    return second_upstream_server


@pytest.fixture
def models_file(
    tmp_path: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.setenv("PG_TEST_KEY_A", KEY_A)
    return write_models_file(tmp_path / "models.yaml", upstream, upstream_b)
