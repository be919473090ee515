"""Named gateway keys by CLI against a running PicGate: create, use, usage, limit, revoke."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from picgate.cli import main
from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.upstream import StubUpstream


@pytest.fixture
def keyed_gateway(
    start_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    gateway = start_gateway()
    # the CLI reads the same database from the environment
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/data/db/picgate.db")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return gateway


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _create(capsys: pytest.CaptureFixture[str], name: str, *extra: str) -> dict[str, Any]:
    code, out, _ = _cli(capsys, "keys", "create", "--name", name, "--json", *extra)
    assert code == 0
    created: dict[str, Any] = json.loads(out)
    return created


def _usage(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
    code, out, _ = _cli(capsys, "keys", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    return rows[name]  # type: ignore[no-any-return]


def _generate(gateway: Gateway, key: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "a cat"},
        timeout=30,
    )


def _key_names(gateway: Gateway) -> list[str | None]:
    return list(orm.read(gateway.services.db, lambda s: s.scalars(select(Image.key_name)).all()))


def test_keys_create_use_list_limit_revoke(
    keyed_gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    created = _create(capsys, "alice", "--daily-images", "1")
    key = created["key"]
    assert created["name"] == "alice" and key.startswith("pg-") and len(key) > 40
    assert created["prefix"] == key[:10]
    assert created["daily_images"] == 1

    first = _generate(keyed_gateway, key)
    assert first.status_code == 200
    # the image row records the named key it was made with
    assert _key_names(keyed_gateway) == ["alice"]
    usage = _usage(capsys, "alice")
    assert (usage["requests_today"], usage["images_today"]) == (1, 1)
    assert (usage["requests_total"], usage["images_total"]) == (1, 1)
    assert usage["last_used_at"] is not None
    assert "key" not in usage

    limited = _generate(keyed_gateway, key)
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "resets at 00:00 UTC" in error["message"]
    assert int(limited.headers["retry-after"]) > 0
    # the env's key is not limited by alice's quota; its images record "env"
    assert _generate(keyed_gateway, keyed_gateway.key).status_code == 200
    assert sorted(str(name) for name in _key_names(keyed_gateway)) == ["alice", "env"]

    code, out, _ = _cli(capsys, "keys", "revoke", "alice")
    assert code == 0 and "revoked" in out
    revoked = _generate(keyed_gateway, key)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "revoked_api_key"
    assert _usage(capsys, "alice")["revoked"] is True
    assert _cli(capsys, "keys", "revoke", "alice")[0] == 1


def test_keys_plain_output_shows_key_once_and_table(
    keyed_gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "keys", "create", "--name", "bob")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("pg-")
    code, listing, _ = _cli(capsys, "keys", "list")
    assert code == 0
    assert "bob" in listing and key[:10] in listing
    assert key not in listing


def test_keys_create_taken_or_bad_name_is_refused(
    keyed_gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(capsys, "carol")
    code, _, err = _cli(capsys, "keys", "create", "--name", "carol")
    assert code == 2 and "exists already" in err
    for reserved in ("env", "default"):  # "env" is what GATEWAY_API_KEY's images record
        code, _, err = _cli(capsys, "keys", "create", "--name", reserved)
        assert code == 2 and "GATEWAY_API_KEY" in err
    code, _, err = _cli(capsys, "keys", "create", "--name", "bad name!")
    assert code == 2 and "key name" in err


def test_keys_chat_stream_images_count_for_the_key(
    keyed_gateway: Gateway, upstream: StubUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _create(capsys, "dave")["key"]
    with httpx.stream(
        "POST",
        keyed_gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "draw"}]},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert "/images/" in body
    usage = _usage(capsys, "dave")
    assert usage["requests_today"] == 1
    assert usage["images_today"] == body.count("/images/") >= 1


def test_keys_unknown_key_is_401_invalid_api_key(keyed_gateway: Gateway) -> None:
    r = _generate(keyed_gateway, "pg-not-a-key-at-all-0123456789")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
