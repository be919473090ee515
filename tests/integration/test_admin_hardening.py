"""The admin console against an outside attacker: first-run setup, secrets that follow a moved
host, lockouts, log floods, hostile setting values, and what the public schema shows.
Everything over real HTTP on loopback."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from picgate.admin import auth
from picgate.services import Services
from tests import orm
from tests.conftest import UPSTREAM_KEY, Gateway
from tests.orm import AdminUser, LogEntry, Setting
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.support.admin import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    form_token,
    login,
    setup_admin,
    setup_token,
    signed_in,
)
from tests.support.upstream import StubUpstream


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, follow_redirects=False, timeout=30) as c:
        yield c


@pytest.fixture
def elsewhere() -> Iterator[StubUpstream]:
    """A second HTTP server on loopback: the host an attacker would point PicGate at."""
    stub = StubUpstream().start()
    yield stub
    stub.stop()


def admin_count(gateway: Gateway) -> int:
    return orm.read(gateway.services.db, lambda s: s.scalar(select(func.count(AdminUser.id))) or 0)


# -- 1. first-run setup needs the console's token ------------------------------------------------


def test_admin_setup_without_or_with_wrong_token_is_refused(
    gateway: Gateway, client: httpx.Client
) -> None:
    page = client.get("/admin/setup")
    assert 'name="setup_token"' in page.text and 'type="hidden" name="setup_token"' not in page.text
    base = {
        "username": "mallory",
        "password": "x" * 12,
        "password_confirm": "x" * 12,
        "csrf_token": form_token(page.text),
    }
    for data in (base, base | {"setup_token": "guess"}, base | {"setup_token": ""}):
        answer = client.post("/admin/setup", data=data)
        assert answer.status_code == 403 and "设置令牌" in answer.text
    assert admin_count(gateway) == 0
    assert client.get("/admin").headers["location"] == "/admin/setup"
    assert setup_admin(client).headers["location"] == "/admin/login?created=1"
    assert login(client).status_code == 303


def test_admin_setup_link_carries_the_token_hidden_across_a_language_switch(
    client: httpx.Client,
) -> None:
    token = setup_token()
    switched = client.get(f"/admin/setup?token={token}&lang=en")
    assert switched.headers["location"] == f"/admin/setup?token={token}"
    page = client.get(switched.headers["location"])
    assert f'type="hidden" name="setup_token" value="{token}"' in page.text
    for name in ("username", "password"):
        assert f'name="{name}"' in page.text


def test_admin_setup_language_links_keep_the_token_both_ways(client: httpx.Client) -> None:
    """The switch link as the page renders it (English, then back to Chinese) keeps the token."""
    token = setup_token()
    page = client.get(f"/admin/setup?token={token}")
    for expected_lang in ("en", "zh"):
        href = re.search(r'class="lang-switch" href="([^"]+)"', page.text)
        assert href is not None
        link = html.unescape(href.group(1))
        assert f"token={token}" in link and f"lang={expected_lang}" in link
        switched = client.get("/admin/setup" + link)
        assert switched.headers["location"] == f"/admin/setup?token={token}"
        page = client.get(switched.headers["location"])
        assert f'<html lang="{"en" if expected_lang == "en" else "zh-CN"}">' in page.text
        assert f'type="hidden" name="setup_token" value="{token}"' in page.text


def test_services_prepare_prints_setup_link_only_while_no_admin(
    make_services: Callable[..., Services], capsys: pytest.CaptureFixture[str]
) -> None:
    services = make_services(public_base_url="https://img.example.com")
    printed = capsys.readouterr().out
    assert f"https://img.example.com/admin/setup?token={setup_token()}" in printed
    services.db.write(lambda s: auth.set_admin(s, username="ops", password="long-password-1"))
    make_services()  # the same database, a new process
    assert "/admin/setup?token=" not in capsys.readouterr().out


# -- 2. a stored secret never goes to a host typed afterwards -------------------------------------


def test_admin_moving_upstream_host_needs_the_key_again_and_test_never_sends_it(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, elsewhere: StubUpstream
) -> None:
    gateway = start_gateway(upstream_api_base=None, upstream_api_key=None)
    client, token = signed_in(gateway.url)
    headers = {"X-CSRF-Token": token}
    with closing(client):

        def save(**values: Any) -> httpx.Response:
            return client.put("/admin/api/settings", json={"values": values}, headers=headers)

        assert save(upstream_api_base=upstream.base_url, upstream_api_key=UPSTREAM_KEY).is_success
        moved = save(upstream_api_base=elsewhere.base_url)
        assert moved.status_code == 422
        assert moved.json()["error"]["param"] == "upstream_api_base"
        assert "UPSTREAM_API_KEY" in moved.json()["error"]["message"]
        tested = client.post("/admin/api/settings/test-upstream", headers=headers).json()
        # a path on the same host is no move
        assert save(upstream_api_base=upstream.origin + "/v1/").is_success
        moved_with_key = save(upstream_api_base=elsewhere.base_url, upstream_api_key="sk-other-1")
    assert tested["ok"] is True
    assert upstream.last("/v1/models").headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert moved_with_key.is_success
    assert gateway.services.config.current().upstream_api_key == "sk-other-1"
    assert all(UPSTREAM_KEY not in str(r.headers) for r in elsewhere.requests)


def test_admin_moving_r2_endpoint_needs_the_secret_again_and_test_never_reaches_it(
    start_gateway: Callable[..., Gateway], s3_server: Any, s3_store: Any, elsewhere: StubUpstream
) -> None:
    gateway = start_gateway()
    client, token = signed_in(gateway.url)
    headers = {"X-CSRF-Token": token}
    with closing(client):
        values = {
            "r2_endpoint_url": s3_server.endpoint_url,
            "r2_access_key_id": ACCESS_KEY_ID,
            "r2_secret_access_key": SECRET_ACCESS_KEY,
            "r2_bucket_name": "picgate-test",
        }
        put = client.put("/admin/api/settings", json={"values": values}, headers=headers)
        assert put.is_success
        moved = client.put(
            "/admin/api/settings",
            json={"values": {"r2_endpoint_url": elsewhere.origin}},
            headers=headers,
        )
        tested = client.post("/admin/api/settings/test-r2", headers=headers).json()
    assert moved.status_code == 422 and moved.json()["error"]["param"] == "r2_endpoint_url"
    assert tested["ok"] is True  # still the saved endpoint
    assert elsewhere.requests == []
    assert gateway.services.config.current().r2_endpoint_url == s3_server.endpoint_url


# -- 3. guessing from many addresses slows the account down, never locks it -----------------------


def test_admin_login_many_addresses_slow_but_never_lock_the_account(
    gateway: Gateway, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_admin(client)
    db = gateway.services.db
    for i in range(110):  # the red-team run: 110 failures over 6 addresses
        address = f"198.51.100.{i % 6}"
        db.write(partial(auth.record_failure, username=ADMIN_USER, ip=address))
    assert db.write(lambda s: auth.account_delay(s, username=ADMIN_USER)) == auth.ACCOUNT_DELAY_MAX
    monkeypatch.setattr(auth, "ACCOUNT_DELAY_MAX", 0.0)  # the wait is real; skip it here
    token = form_token(client.get("/admin/login").text)

    def attempt(address: str) -> int:
        return client.post(
            "/admin/login",
            data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf_token": token},
            headers={"X-Forwarded-For": address},
        ).status_code

    assert attempt("198.51.100.0") == 429  # the guessing addresses stay locked
    assert attempt("203.0.113.7") == 303  # the admin from anywhere else gets in


def test_admin_login_delay_grows_with_failures_and_is_capped() -> None:
    assert auth.delay_for(0) == auth.delay_for(auth.ACCOUNT_SLOWDOWN_AFTER - 1) == 0.0
    delays = [auth.delay_for(auth.ACCOUNT_SLOWDOWN_AFTER + n) for n in range(10)]
    assert delays == sorted(delays) and delays[0] > 0
    assert auth.delay_for(10**9) == auth.ACCOUNT_DELAY_MAX


def test_admin_unlock_cli_clears_a_lockout(
    gateway: Gateway, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picgate.cli import main

    setup_admin(client)
    for _ in range(auth.MAX_USER_FAILURES):
        assert login(client, ADMIN_USER, "wrong-password").status_code == 401
    assert login(client).status_code == 429
    settings = gateway.services.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    assert main(["admin", "unlock", "--username", "someone-else"]) == 0
    assert login(client).status_code == 429
    assert main(["admin", "unlock", "--username", ADMIN_USER.upper()]) == 0
    assert login(client).status_code == 303


# -- 4. a flood of wrong keys is one log line per address and minute ------------------------------


def test_gateway_wrong_key_flood_is_one_counted_log_line_per_address(gateway: Gateway) -> None:
    url = gateway.url + "/v1/models"
    with httpx.Client() as c:
        for i in range(30):
            forwarded = {"X-Forwarded-For": "192.0.2.9"} if i % 3 == 0 else {}
            answer = c.get(url, headers={"Authorization": "Bearer wrong-key"} | forwarded)
            assert answer.status_code == 401
            if i == 14:
                gateway.services.events.flush()  # later flushes update the same lines
    error = answer.json()["error"]
    assert "GATEWAY_API_KEY" in error["message"] and error["code"] == "invalid_api_key"
    gateway.services.events.flush()
    lines = orm.write(
        gateway.services.db,
        lambda s: [e.message for e in s.scalars(select(LogEntry)) if "网关密钥错误" in e.message],
    )
    assert sorted(lines) == [
        "⚠️ 网关密钥错误 ×10 来自 192.0.2.9 (wrong gateway API key)",
        "⚠️ 网关密钥错误 ×20 来自 127.0.0.1 (wrong gateway API key)",
    ]


def test_eventlog_keeps_log_max_entries_on_every_flush(
    make_services: Callable[..., Services],
) -> None:
    events = make_services(log_max_entries=100).events
    for round_ in range(3):
        for i in range(150):
            events.info(f"line {round_}-{i}")
        events.flush()
        rows = orm.read(events.db, lambda s: s.scalar(select(func.count(LogEntry.id))) or 0)
        assert rows <= 100, f"after flush {round_ + 1}: {rows} rows"


# -- 5. hostile setting values are refused, and bad stored ones are skipped ----------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gateway_model_name", "bad\ud800name"),
        ("gateway_model_name", "bad\x00name"),
        ("upstream_model_name", "x" * 5000),
        ("local_cache_ttl_hours", 1e308),
        ("local_cache_ttl_hours", "nan"),
        ("metadata_retention_days", 1e12),
        ("max_local_cache_mb", 2**62),
    ],
)
def test_admin_settings_hostile_values_are_422_and_never_stored(
    start_gateway: Callable[..., Gateway], field: str, value: Any
) -> None:
    gateway = start_gateway()
    client, token = signed_in(gateway.url)
    with closing(client):
        answer = client.put(
            "/admin/api/settings",
            content=json.dumps({"values": {field: value}}),  # keeps the lone surrogate escaped
            headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
        )
        assert answer.status_code == 422
        assert answer.json()["error"]["param"] == field
        assert field in answer.json()["error"]["message"]
        stored = orm.read(gateway.services.db, lambda s: s.get(Setting, field))
        assert stored is None
        assert client.get("/admin/settings").status_code == 200
    assert httpx.get(gateway.url + "/v1/models", headers=gateway.headers).status_code == 200


def test_config_bad_values_already_stored_fall_back_to_defaults(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    bad = {
        "gateway_model_name": '"bad\\ud800"',
        "local_cache_ttl_hours": "1e308",
        "metadata_retention_days": "not json",
        "upstream_model_name": '"kept-model"',
    }

    def plant(session: Any) -> None:
        for key, raw in bad.items():
            session.merge(Setting(key=key, value=raw, secret=False, updated_at=auth.utcnow()))

    orm.write(gateway.services.db, plant)
    settings = gateway.services.config.reload()
    assert settings.gateway_model_name == "picgate"
    assert settings.local_cache_ttl_hours == 72.0 and settings.metadata_retention_days == 365
    models = httpx.get(gateway.url + "/v1/models", headers=gateway.headers)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "picgate"


@pytest.mark.parametrize(
    ("sort", "raw"),
    [("size", [1e400, "x"]), ("size", [2**70, "x"]), ("size", [True, "x"]), ("created", [1, "x"])],
)
def test_admin_images_bad_cursor_is_400(
    start_gateway: Callable[..., Gateway], sort: str, raw: Any
) -> None:
    gateway = start_gateway()
    cursor = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
    client, _ = signed_in(gateway.url)
    with closing(client):
        answer = client.get("/admin/api/images", params={"sort": sort, "cursor": cursor})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "cursor"


# -- 6. the public schema leaves the console out ---------------------------------------------------


def test_openapi_public_schema_has_no_admin_routes_full_one_needs_a_session(
    gateway: Gateway,
) -> None:
    public = httpx.get(gateway.url + "/openapi.json").json()
    assert "/v1/models" in public["paths"]
    assert not [p for p in public["paths"] if p.startswith("/admin")]
    assert httpx.get(gateway.url + "/admin/api/openapi.json").status_code == 401
    client, _ = signed_in(gateway.url)
    with closing(client):
        full = client.get("/admin/api/openapi.json").json()
    assert "/admin/api/settings" in full["paths"] and "/v1/models" in full["paths"]
