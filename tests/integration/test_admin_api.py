"""The admin console over real HTTP: setup, login, sessions, CSRF, rate limits, the JSON API."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from picgate.admin import auth
from picgate.app import create_app
from picgate.config import Settings
from picgate.library.records import ImageOrigin
from picgate.services import Services
from picgate.settings_store import mask
from tests import orm
from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway
from tests.orm import AdminSession, Image
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.support.admin import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    form_token,
    login,
    meta_token,
    setup_admin,
    setup_token,
    signed_in,
)
from tests.support.images import make_image
from tests.support.servers import ServerThread
from tests.support.upstream import StubUpstream

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGES = ["/admin", "/admin/settings", "/admin/cache", "/admin/images", "/admin/logs"]


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, follow_redirects=False, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: StubUpstream
) -> Iterator[tuple[Gateway, httpx.Client, str]]:
    """One signed-in console shared by the tests that only add to its state (starting a
    gateway and hashing passwords is most of the cost of a test here)."""
    root = tmp_path_factory.mktemp("console")
    settings = Settings(
        data_dir=root / "data",
        database_url=f"sqlite:///{root}/data/db/picgate.db",
        upstream_api_base=upstream_server.base_url,
        upstream_api_key=UPSTREAM_KEY,
        upstream_model_name="gpt-image-1",
        gateway_api_key=GATEWAY_KEY,
        secret_key="test-secret-key-0123456789",
    )
    services = Services(settings)
    with ServerThread(create_app(services=services)) as server:
        gateway = Gateway(server, services)
        client, token = signed_in(gateway.url)
        with closing(client):
            yield gateway, client, token


@pytest.fixture
def admin(console: tuple[Gateway, httpx.Client, str]) -> tuple[httpx.Client, str]:
    return console[1], console[2]


@pytest.fixture
def shared(console: tuple[Gateway, httpx.Client, str]) -> Gateway:
    return console[0]


def api_routes() -> list[tuple[str, str]]:
    from picgate.admin.api import router

    found = []
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/admin/api"):
            for method in sorted(route.methods or ()):
                found.append((method, route.path.replace("{image_id}", "x" * 22)))
    return found


def store_images(gateway: Gateway, count: int) -> list[str]:
    return [
        gateway.services.library.save_sync(
            make_image("PNG", 2000 + 400 * i, seed=i + 1), origin=ImageOrigin("test", f"cat {i}")
        ).id
        for i in range(count)
    ]


# -- first run, login, logout ------------------------------------------------------------------


def test_admin_pages_without_admin_redirect_to_setup(client: httpx.Client) -> None:
    for path in [*PAGES, "/admin/login", "/admin/password"]:
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/setup", path
    page = client.get("/admin/setup")
    assert page.status_code == 200
    for name in ("username", "password", "password_confirm"):
        assert f'name="{name}"' in page.text


def test_admin_setup_then_pages_need_login(client: httpx.Client) -> None:
    created = setup_admin(client)
    assert created.status_code == 303 and created.headers["location"] == "/admin/login?created=1"
    for path in PAGES:
        assert client.get(path).headers["location"] == "/admin/login"
    assert client.get("/admin/setup").headers["location"] == "/admin/login"
    # a second setup cannot take the account over
    again = client.post(
        "/admin/setup",
        data={"username": "mallory", "password": "x" * 12, "password_confirm": "x" * 12},
    )
    assert again.headers["location"] == "/admin/login"
    assert login(client, "mallory", "x" * 12).status_code == 401
    assert login(client).status_code == 303


def test_admin_setup_bad_input_rerenders_with_message(client: httpx.Client) -> None:
    token = form_token(client.get("/admin/setup").text)
    base = {"username": "admin", "csrf_token": token, "setup_token": setup_token()}
    short = client.post(
        "/admin/setup", data=base | {"password": "short", "password_confirm": "short"}
    )
    assert short.status_code == 422 and "8–256" in short.text
    mismatch = client.post(
        "/admin/setup", data=base | {"password": "long-enough-1", "password_confirm": "other-12345"}
    )
    assert mismatch.status_code == 422 and "两次输入的密码不一致" in mismatch.text
    no_csrf = client.post(
        "/admin/setup",
        data={
            "username": "admin",
            "password": "long-enough-1",
            "password_confirm": "long-enough-1",
            "setup_token": setup_token(),
        },
    )
    assert no_csrf.status_code == 403
    assert client.get("/admin").headers["location"] == "/admin/setup"


def test_admin_login_sets_hardened_cookie_and_stores_only_a_digest(
    gateway: Gateway, client: httpx.Client
) -> None:
    setup_admin(client)
    answer = login(client)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    token = client.cookies["picgate_session"]
    ids = orm.read(gateway.services.db, lambda s: list(s.scalars(select(AdminSession.id))))
    assert ids == [hashlib.sha256(token.encode()).hexdigest()]
    assert client.get("/admin").status_code == 200


def test_admin_login_unknown_user_and_wrong_password_answer_alike(client: httpx.Client) -> None:
    setup_admin(client)
    wrong = login(client, ADMIN_USER, "not-the-password")
    unknown = login(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    message = re.compile(r'<p class="notice error" id="error">([^<]+)</p>')
    assert message.search(wrong.text).group(1) == message.search(unknown.text).group(1)  # type: ignore[union-attr]
    assert "picgate_session" not in client.cookies


def test_admin_login_after_repeated_failures_is_throttled(client: httpx.Client) -> None:
    setup_admin(client)
    for _ in range(auth.MAX_USER_FAILURES):
        assert login(client, ADMIN_USER, "wrong-password").status_code == 401
    # locked: even the right password is refused, and so is a name that does not exist
    assert login(client).status_code == 429
    for _ in range(auth.MAX_USER_FAILURES):
        login(client, "ghost", "wrong-password")
    assert login(client, "ghost", "wrong-password").status_code == 429


def test_admin_login_throttle_is_per_ip_too(gateway: Gateway, client: httpx.Client) -> None:
    setup_admin(client)
    for i in range(auth.MAX_IP_FAILURES):
        login(client, f"user{i}", "wrong-password")
    assert login(client).status_code == 429


def test_admin_logout_invalidates_session_server_side(shared: Gateway) -> None:
    with httpx.Client(base_url=shared.url, follow_redirects=False, timeout=30) as client:
        assert login(client).status_code == 303
        token = meta_token(client.get("/admin/logs").text)
        stolen = client.cookies["picgate_session"]
        assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    replay = httpx.get(
        shared.url + "/admin/api/stats", cookies={"picgate_session": stolen}, timeout=10
    )
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "admin_login_required"


def test_admin_logout_without_csrf_is_refused(admin: tuple[httpx.Client, str]) -> None:
    client, _ = admin
    assert client.post("/admin/logout", data={}).status_code == 403
    assert client.get("/admin/api/stats").status_code == 200


def test_admin_password_change_ends_sessions_and_takes_new_password(gateway: Gateway) -> None:
    client, token = signed_in(gateway.url)
    form = {"csrf_token": token, "current_password": "wrong-one", "new_password": "brand-new-pass"}
    refused = client.post("/admin/password", data=form | {"password_confirm": "brand-new-pass"})
    assert refused.status_code == 422 and "当前密码不正确" in refused.text
    form["current_password"] = ADMIN_PASSWORD
    done = client.post("/admin/password", data=form | {"password_confirm": "brand-new-pass"})
    assert done.headers["location"] == "/admin/login?changed=1"
    assert client.get("/admin/api/stats").status_code == 401
    assert login(client).status_code == 401
    assert login(client, ADMIN_USER, "brand-new-pass").status_code == 303
    client.close()


# -- the JSON API: sessions, CSRF, errors ------------------------------------------------------


def test_admin_api_every_endpoint_needs_a_session(shared: Gateway) -> None:
    routes = api_routes()
    assert len(routes) >= 14
    for method, path in routes:
        answer = httpx.request(method, shared.url + path, json={}, timeout=10)
        assert answer.status_code == 401, (method, path)
        error = answer.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert error["code"] == "admin_login_required"


def test_admin_api_state_change_without_csrf_is_403(
    shared: Gateway, admin: tuple[httpx.Client, str]
) -> None:
    client, token = admin
    for method, path in api_routes():
        if method in ("GET", "HEAD"):
            continue
        answer = client.request(method, path, json={})
        assert answer.status_code == 403, (method, path)
        assert answer.json()["error"]["code"] == "csrf_failed"
    wrong = client.put("/admin/api/settings", json={"values": {}}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    right = client.put("/admin/api/settings", json={"values": {}}, headers={"X-CSRF-Token": token})
    assert right.status_code == 200


def test_admin_pages_carry_csp_and_no_inline_code(admin: tuple[httpx.Client, str]) -> None:
    client, _ = admin
    for path in [*PAGES, "/admin/password"]:
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        for script in re.findall(r"<script([^>]*)>", html):
            assert "src=" in script or 'type="application/json"' in script, path
        assert not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html), path
    static = client.get(re.search(r'href="(/admin/static/admin.css[^"]*)"', page.text).group(1))  # type: ignore[union-attr]
    assert static.status_code == 200 and "text/css" in static.headers["content-type"]
    assert client.get("/admin/static/..%2Fbase.html").status_code == 404


def test_admin_language_switch_sets_cookie(shared: Gateway) -> None:
    client = httpx.Client(base_url=shared.url, follow_redirects=False, timeout=30)
    with closing(client):
        assert login(client).status_code == 303
        _check_language_switch(client)


def _check_language_switch(client: httpx.Client) -> None:
    assert "仪表盘" in client.get("/admin").text
    switched = client.get("/admin/settings?lang=en")
    assert switched.status_code == 303 and switched.headers["location"] == "/admin/settings"
    assert "Settings" in client.get("/admin/settings").text
    assert 'lang="en"' in client.get("/admin").text


# -- settings ----------------------------------------------------------------------------------


def test_admin_settings_never_send_secrets(admin: tuple[httpx.Client, str]) -> None:
    client, _ = admin
    body = client.get("/admin/api/settings").text
    page = client.get("/admin/settings").text
    for secret in (UPSTREAM_KEY, GATEWAY_KEY, "test-secret-key-0123456789"):
        assert secret not in body and secret not in page
    assert mask(UPSTREAM_KEY) in body


def test_admin_settings_masked_echo_keeps_secret(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(upstream_api_key=None)
    client, token = signed_in(gateway.url)
    headers = {"X-CSRF-Token": token}
    with closing(client):
        saved = client.put(
            "/admin/api/settings",
            json={"values": {"upstream_api_key": "sk-new-upstream-9876"}},
            headers=headers,
        )
        assert saved.status_code == 200 and "sk-new-upstream-9876" not in saved.text
        for echo in (mask("sk-new-upstream-9876"), ""):
            again = client.put(
                "/admin/api/settings", json={"values": {"upstream_api_key": echo}}, headers=headers
            )
            assert again.status_code == 200
        assert gateway.services.config.current().upstream_api_key == "sk-new-upstream-9876"
        cleared = client.put(
            "/admin/api/settings", json={"values": {"upstream_api_key": None}}, headers=headers
        )
        assert cleared.status_code == 200
        assert gateway.services.config.current().upstream_api_key is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("public_base_url", "not a url"),
        ("local_cache_ttl_hours", "-1"),
        ("max_local_cache_mb", "lots"),
        ("r2_bucket_name", "half-configured"),
    ],
)
def test_admin_settings_invalid_value_is_refused_with_field(
    admin: tuple[httpx.Client, str], field: str, value: str
) -> None:
    client, token = admin
    if field == "r2_bucket_name":
        client.put(
            "/admin/api/settings",
            json={"values": {"r2_endpoint_url": "http://127.0.0.1:9"}},
            headers={"X-CSRF-Token": token},
        )
        client.put(
            "/admin/api/settings",
            json={"values": {"r2_access_key_id": "AKIA-only-this"}},
            headers={"X-CSRF-Token": token},
        )
    answer = client.put(
        "/admin/api/settings", json={"values": {field: value}}, headers={"X-CSRF-Token": token}
    )
    if field == "r2_bucket_name":
        # the key id alone was refused already; the bucket is refused the same way
        assert answer.status_code == 422
        assert answer.json()["error"]["param"] in {"r2_bucket_name", "r2_secret_access_key"}
        return
    assert answer.status_code == 422
    assert answer.json()["error"]["param"] == field


def test_admin_settings_env_fixed_fields_are_read_only(admin: tuple[httpx.Client, str]) -> None:
    client, token = admin
    groups = client.get("/admin/api/settings").json()["groups"]
    fields = {f["name"]: f for g in groups for f in g["fields"]}
    assert fields["upstream_api_base"]["fixed"] is True
    assert fields["gateway_model_name"]["fixed"] is False
    answer = client.put(
        "/admin/api/settings",
        json={"values": {"upstream_api_base": "http://example.com/v1"}},
        headers={"X-CSRF-Token": token},
    )
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "upstream_api_base"
    assert "disabled" in re.search(
        r'<input[^>]*id="f-upstream_api_base"[^>]*>', client.get("/admin/settings").text
    ).group(0)  # type: ignore[union-attr]


def test_admin_generated_key_is_shown_once_and_works(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(gateway_api_key=None)
    first_key = gateway.services.generated_key
    assert first_key
    client, token = signed_in(gateway.url)
    with closing(client):
        first = client.get("/admin").text
        assert first_key in first and 'id="key-notice"' in first
        assert first_key not in client.get("/admin").text
        made = client.post("/admin/api/settings/generate-key", headers={"X-CSRF-Token": token})
        key = made.json()["key"]
        assert key.startswith("pg-") and len(key) > 40
        assert key not in client.get("/admin/api/settings").text
    models = httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200
    old = httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {first_key}"})
    assert old.status_code == 401


def test_admin_test_upstream_reports_status_and_latency(admin: tuple[httpx.Client, str]) -> None:
    client, token = admin
    result = client.post("/admin/api/settings/test-upstream", headers={"X-CSRF-Token": token})
    body = result.json()
    assert body["ok"] is True and body["status"] == 200
    assert body["latency_ms"] >= 0 and body["models"] >= 1


def test_admin_test_upstream_unreachable_reports_failure(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(upstream_api_base="http://127.0.0.1:9/v1")
    client, token = signed_in(gateway.url)
    with closing(client):
        body = client.post(
            "/admin/api/settings/test-upstream", headers={"X-CSRF-Token": token}
        ).json()
    assert body["ok"] is False and body["status"] == 502


def test_admin_test_r2_runs_every_step(
    start_gateway: Callable[..., Gateway], s3_store: Any, s3_server: Any
) -> None:
    gateway = start_gateway()
    client, token = signed_in(gateway.url)
    headers = {"X-CSRF-Token": token}
    with closing(client):
        off = client.post("/admin/api/settings/test-r2", headers=headers).json()
        assert off["ok"] is False and off["detail"] == "not_configured"
        values = {
            "r2_endpoint_url": s3_server.endpoint_url,
            "r2_access_key_id": ACCESS_KEY_ID,
            "r2_secret_access_key": SECRET_ACCESS_KEY,
            "r2_bucket_name": "picgate-test",
        }
        assert (
            client.put("/admin/api/settings", json={"values": values}, headers=headers).status_code
            == 200
        )
        body = client.post("/admin/api/settings/test-r2", headers=headers).json()
        health = client.get("/admin/api/health").json()
    assert body["ok"] is True
    assert [s["step"] for s in body["steps"]] == ["bucket", "put", "get", "delete"]
    assert health["r2"]["reachable"] is True


# -- cache, images, logs -------------------------------------------------------------------------


def test_admin_cache_actions_run_and_report(
    shared: Gateway, admin: tuple[httpx.Client, str]
) -> None:
    client, token = admin
    before = client.get("/admin/api/cache").json()
    store_images(shared, 2)
    stats = client.get("/admin/api/cache").json()
    assert stats["total"] == before["total"] + 2 and stats["local"] == before["local"] + 2
    for action in (
        "clean-expired",
        "clear-local",
        "upload-pending",
        "retry-failed",
        "archive-local",
    ):
        answer = client.post(f"/admin/api/cache/{action}", headers={"X-CSRF-Token": token})
        assert answer.status_code == 200, action
        assert answer.json()["ok"] is True and "stats" in answer.json()
    unknown = client.post("/admin/api/cache/format-disk", headers={"X-CSRF-Token": token})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_admin_images_keyset_pages_cover_everything_once(
    shared: Gateway, admin: tuple[httpx.Client, str]
) -> None:
    client, _ = admin
    ids = store_images(shared, 7)
    for sort in ("created", "accessed", "size"):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"sort": sort, "limit": "3"} | ({"cursor": cursor} if cursor else {})
            page = client.get("/admin/api/images", params=params).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        listed = [i["id"] for i in seen]
        assert len(listed) == len(set(listed)) == page["total"], sort
        assert set(ids) <= set(listed), sort
    sizes = [i["size"] for i in seen]
    assert sizes == sorted(sizes, reverse=True)
    item = seen[0]
    assert item["short_id"] == item["id"][:8] and item["local"] is True and item["prompt"]
    bad = client.get("/admin/api/images", params={"cursor": "garbage!"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cursor"


def test_admin_images_delete_local_then_everything(
    shared: Gateway, admin: tuple[httpx.Client, str]
) -> None:
    client, token = admin
    first, second = store_images(shared, 2)
    headers = {"X-CSRF-Token": token}
    local = client.post(
        "/admin/api/images/delete", json={"ids": [first], "mode": "local"}, headers=headers
    )
    assert local.status_code == 200 and local.json()["result"]["local"] == 1
    row = orm.read(shared.services.db, lambda s: s.get(Image, first))
    assert row is not None and row.local is False
    everything = client.post(
        "/admin/api/images/delete", json={"ids": [first, second], "mode": "all"}, headers=headers
    )
    assert everything.json()["result"]["forgotten"] == 2
    assert orm.write(shared.services.db, lambda s: s.get(Image, second)) is None
    empty = client.post(
        "/admin/api/images/delete", json={"ids": [], "mode": "all"}, headers=headers
    )
    assert empty.status_code == 422


def test_admin_logs_newest_first_filtered_and_cleared(
    shared: Gateway, admin: tuple[httpx.Client, str]
) -> None:
    client, token = admin
    events = shared.services.events
    events.info("📤 first line")
    events.warning("⚠️ second line")
    events.error("❌ third line")
    entries = client.get("/admin/api/logs").json()["entries"]
    assert [e["message"] for e in entries[:3]] == [
        "❌ third line",
        "⚠️ second line",
        "📤 first line",
    ]
    errors = client.get("/admin/api/logs", params={"level": "error"}).json()["entries"]
    assert {e["level"] for e in errors} == {"ERROR"}
    assert client.get("/admin/api/logs", params={"level": "loud"}).status_code == 422
    cleared = client.post("/admin/api/logs/clear", headers={"X-CSRF-Token": token})
    assert cleared.json()["removed"] >= 3
    assert client.get("/admin/api/logs").json()["entries"] == []


def test_admin_dashboard_stats_have_the_six_figures(admin: tuple[httpx.Client, str]) -> None:
    client, _ = admin
    stats = client.get("/admin/api/stats").json()
    for key in ("total", "local", "r2", "disk_bytes", "pending", "failed"):
        assert key in stats
    assert {"requests_today", "errors_today", "last_cleanup_at"} <= set(stats)
    page = client.get("/admin").text
    for label in ("总图片数", "本地缓存", "R2 存储", "磁盘使用", "待上传", "上传失败"):
        assert label in page
    assert meta_token(page)


def test_admin_dashboard_counts_todays_requests_and_images(
    console: tuple[Gateway, httpx.Client, str], upstream_server: StubUpstream
) -> None:
    """images_today was always 0: nothing counted stored images. One request for 2 images is
    +1 request, +2 images (the UTC day)."""
    gateway, client, _ = console
    upstream_server.reset()
    before = client.get("/admin/api/stats").json()
    body = {"model": "picgate", "prompt": "two foxes", "n": 2}
    resp = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json=body, timeout=30
    )
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["data"]) == 2
    after = client.get("/admin/api/stats").json()
    assert after["requests_today"] == before["requests_today"] + 1
    assert after["images_today"] == before["images_today"] + 2
    page = client.get("/admin").text
    assert "今日新增图片" in page
    assert f'data-value="images_today">{after["images_today"]}<' in page


def test_admin_cli_creates_and_resets_the_admin(
    gateway: Gateway, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picgate.cli import main

    settings = gateway.services.settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    assert main(["admin", "create", "--username", "ops", "--password", "first-password"]) == 0
    assert login(client, "ops", "first-password").status_code == 303
    assert main(["admin", "create", "--username", "ops", "--password", "second-password"]) == 0
    assert client.get("/admin/api/stats").status_code == 401  # the reset ended the session
    assert login(client, "ops", "second-password").status_code == 303
    assert main(["admin", "create", "--username", "ops", "--password", "short"]) == 2


def test_admin_session_idle_or_past_absolute_expiry_is_refused(gateway: Gateway) -> None:
    client, _ = signed_in(gateway.url)
    with closing(client):
        digest = hashlib.sha256(client.cookies["picgate_session"].encode()).hexdigest()

        def age(**changes: Any) -> None:
            def work(session: Any) -> None:
                row = session.get(AdminSession, digest)
                for name, value in changes.items():
                    setattr(row, name, value)

            orm.write(gateway.services.db, work)

        now = auth.utcnow()
        age(last_seen_at=now - auth.IDLE + timedelta(minutes=5))
        assert client.get("/admin/api/stats").status_code == 200
        age(last_seen_at=now - auth.IDLE - timedelta(minutes=1))
        assert client.get("/admin/api/stats").status_code == 401
        assert orm.write(gateway.services.db, lambda s: s.get(AdminSession, digest)) is None

        assert login(client).status_code == 303
        digest = hashlib.sha256(client.cookies["picgate_session"].encode()).hexdigest()
        age(expires_at=now - timedelta(seconds=1))
        assert client.get("/admin").headers["location"] == "/admin/login"


def test_admin_cookie_is_secure_behind_https_proxy(client: httpx.Client) -> None:
    setup_admin(client)
    token = form_token(client.get("/admin/login").text)
    answer = client.post(
        "/admin/login",
        data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


def test_admin_login_lockout_from_one_address_leaves_others_free(client: httpx.Client) -> None:
    setup_admin(client)
    attacker = {"X-Forwarded-For": "203.0.113.66"}  # uvicorn trusts it from 127.0.0.1
    token = form_token(client.get("/admin/login").text)
    for _ in range(auth.MAX_USER_FAILURES):
        answer = client.post(
            "/admin/login",
            data={"username": ADMIN_USER, "password": "wrong-password", "csrf_token": token},
            headers=attacker,
        )
        assert answer.status_code == 401
    locked = client.post(
        "/admin/login",
        data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrf_token": token},
        headers=attacker,
    )
    assert locked.status_code == 429  # that address is locked out, even with the password
    # the admin signing in from another address is not
    assert login(client).status_code == 303
