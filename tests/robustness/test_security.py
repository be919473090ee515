"""Security checks end to end: SSRF through the real endpoints, admin login, sessions, CSRF, CSP,
and secrets that never leave the server.

SSRF targets are refused before any connection: a listener on loopback records every connection
it gets, and the suite's audit hook (conftest) blocks and records any attempt to leave loopback.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests import orm
from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway
from tests.orm import LogEntry
from tests.robustness.sessions import ADMIN_PASSWORD, admin_session
from tests.support.images import make_image
from tests.support.upstream import StubUpstream


class Listener:
    """A TCP listener that counts the connections it accepts (and answers none)."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[tuple[Listener, Listener | None]]:
    v4 = Listener("127.0.0.1")
    try:
        v6: Listener | None = Listener("::1")
    except OSError:  # no IPv6 loopback in this sandbox
        v6 = None
    yield v4, v6
    v4.close()
    if v6 is not None:
        v6.close()


def ssrf_urls(port: int, port6: int | None) -> list[str]:
    urls = [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",  # a name that resolves to loopback
        f"http://2130706433:{port}/a.png",  # 127.0.0.1 as one decimal number
        f"http://0177.0.0.1:{port}/a.png",  # octal
        f"http://0x7f.0.0.1:{port}/a.png",  # hex
        f"http://127.1:{port}/a.png",  # short form
        f"http://[::ffff:127.0.0.1]:{port}/a.png",  # IPv4-mapped IPv6
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.1/a.png",
        "http://172.16.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://100.64.0.1/a.png",
        "http://0.0.0.0/a.png",
        "http://[fd00::1]/a.png",
        "http://[64:ff9b::7f00:1]/a.png",  # NAT64 form of 127.0.0.1
    ]
    urls.append(f"http://[::1]:{port6 or port}/a.png")
    return urls


def assert_4xx_openai(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


def test_security_edits_url_images_refused_for_private_targets(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    listeners: tuple[Listener, Listener | None],
) -> None:
    v4, v6 = listeners
    gateway = start_gateway(allow_external_image_fetch=True)
    for url in ssrf_urls(v4.port, v6.port if v6 else None):
        answer = httpx.post(
            gateway.url + "/v1/images/edits",
            headers=gateway.headers,
            json={"prompt": "p", "image": url},
            timeout=30,
        )
        error = assert_4xx_openai(answer)
        assert error["code"] in ("blocked_url", "unresolvable_url", "invalid_url"), (url, error)
    assert v4.accepted == 0
    assert v6 is None or v6.accepted == 0
    assert not any(r.path == "/v1/images/edits" for r in upstream.requests)


def test_security_edits_url_images_not_fetched_when_external_fetch_off(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    listeners: tuple[Listener, Listener | None],
) -> None:
    v4, _v6 = listeners
    gateway = start_gateway()  # ALLOW_EXTERNAL_IMAGE_FETCH defaults to off
    upstream.files["pub.png"] = (make_image("PNG", 2_000, seed=3), "image/png")
    for url in (f"http://127.0.0.1:{v4.port}/a.png", f"{upstream.origin}/files/pub.png"):
        answer = httpx.post(
            gateway.url + "/v1/images/edits",
            headers=gateway.headers,
            json={"prompt": "p", "image": {"image_url": {"url": url}}},
        )
        assert assert_4xx_openai(answer)["code"] == "external_fetch_disabled"
    assert v4.accepted == 0
    assert not any(r.path.startswith("/files/") for r in upstream.requests)


def test_security_edits_own_image_urls_still_work_when_external_fetch_off(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    made = httpx.post(
        gateway.url + "/v1/images/generations", headers=gateway.headers, json={"prompt": "p"}
    )
    own_url = made.json()["data"][0]["url"]
    answer = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        json={"prompt": "p", "image": own_url},
    )
    assert answer.status_code == 200, answer.text
    assert upstream.last("/v1/images/edits").form["image"][0][1] == upstream.image


def chat_with_image(gateway: Gateway, url: str) -> httpx.Response:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=gateway.headers,
        json={"model": "picgate", "messages": [{"role": "user", "content": content}]},
        timeout=30,
    )


def test_security_chat_url_images_refused_for_private_targets(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    listeners: tuple[Listener, Listener | None],
) -> None:
    v4, v6 = listeners
    gateway = start_gateway(allow_external_image_fetch=True)
    for url in ssrf_urls(v4.port, v6.port if v6 else None):
        assert_4xx_openai(chat_with_image(gateway, url))
    assert v4.accepted == 0
    assert v6 is None or v6.accepted == 0
    assert not any(r.path == "/v1/chat/completions" for r in upstream.requests)


def test_security_chat_url_images_pass_through_untouched_when_fetch_off(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    listeners: tuple[Listener, Listener | None],
) -> None:
    v4, _v6 = listeners
    gateway = start_gateway()
    url = f"http://127.0.0.1:{v4.port}/a.png"
    assert chat_with_image(gateway, url).status_code == 200
    sent = upstream.last("/v1/chat/completions").json["messages"][0]["content"][1]
    assert sent["image_url"]["url"] == url
    assert v4.accepted == 0


# -- admin login, sessions, CSRF, CSP --------------------------------------------------------


def login_form(client: httpx.Client) -> str:
    page = client.get("/admin/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def login(client: httpx.Client, password: str, **headers: str) -> httpx.Response:
    token = login_form(client)
    return client.post(
        "/admin/login",
        data={"username": "admin", "password": password, "csrf_token": token},
        headers=headers,
    )


@pytest.fixture
def admin_gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    gateway = start_gateway()
    admin_session(gateway)  # creates the account
    return gateway


def test_security_login_brute_force_locked_after_five_failures(admin_gateway: Gateway) -> None:
    with httpx.Client(base_url=admin_gateway.url) as client:
        statuses = [login(client, f"wrong-password-{i}").status_code for i in range(7)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        # locked: even the right password is refused until the lockout ends
        assert login(client, ADMIN_PASSWORD).status_code == 429
    admin_gateway.services.events.flush()
    messages = orm.write(
        admin_gateway.services.db, lambda s: [e.message for e in s.scalars(select(LogEntry))]
    )
    assert any("锁定" in m for m in messages)


def test_security_session_cookie_flags(admin_gateway: Gateway) -> None:
    with httpx.Client(base_url=admin_gateway.url) as client:
        answer = login(client, ADMIN_PASSWORD)
        assert answer.status_code in (302, 303)
        cookie = answer.headers["set-cookie"]
    assert cookie.startswith("picgate_session=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/admin" in lowered
    assert "secure" not in lowered.replace("samesite", "")  # plain http: no Secure flag
    # behind a TLS proxy on loopback (uvicorn trusts X-Forwarded-Proto from 127.0.0.1)
    with httpx.Client(base_url=admin_gateway.url) as client:
        answer = login(client, ADMIN_PASSWORD, **{"X-Forwarded-Proto": "https"})
        assert "; secure" in answer.headers["set-cookie"].lower()


def test_security_csrf_refused_without_or_with_wrong_token(admin_gateway: Gateway) -> None:
    token, csrf = admin_session(admin_gateway)
    cookies = {"picgate_session": token}
    url = admin_gateway.url + "/admin/api/logs/clear"
    for headers in ({}, {"X-CSRF-Token": "x" * 43}, {"X-CSRF-Token": ""}):
        answer = httpx.post(url, cookies=cookies, headers=headers)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "csrf_failed"
    assert httpx.post(url, cookies=cookies, headers={"X-CSRF-Token": csrf}).status_code == 200
    # the login form's double-submit token: a forged form post is refused
    with httpx.Client(base_url=admin_gateway.url) as client:
        login_form(client)
        forged = client.post(
            "/admin/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": "forged"},
        )
        assert forged.status_code == 403
        assert "picgate_session" not in forged.headers.get("set-cookie", "")


def test_security_admin_pages_carry_strict_csp(admin_gateway: Gateway) -> None:
    token, _ = admin_session(admin_gateway)
    for path in ("/admin/login", "/admin", "/admin/settings", "/admin/api/stats"):
        answer = httpx.get(admin_gateway.url + path, cookies={"picgate_session": token})
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"


# -- secrets ---------------------------------------------------------------------------------

R2_SECRET = "r2-secret-access-key-abcdefghijklmnop"
R2_ACCESS = "r2-access-key-id-0123456789"
SECRET_KEY = "session-secret-key-do-not-leak-42"


def test_security_secrets_never_in_responses_or_logs(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gateway = start_gateway(
        secret_key=SECRET_KEY,
        r2_access_key_id=R2_ACCESS,
        r2_secret_access_key=R2_SECRET,
        r2_bucket_name="bucket",
        r2_endpoint_url="http://127.0.0.1:9",  # nothing listens: uploads fail and get logged
    )
    secrets = [GATEWAY_KEY, UPSTREAM_KEY, R2_SECRET, R2_ACCESS, SECRET_KEY]
    token, csrf = admin_session(gateway)
    cookies = {"picgate_session": token}
    seen: list[str] = []

    def record(answer: httpx.Response) -> None:
        seen.append(str(answer.headers) + answer.text)

    v1 = gateway.url + "/v1"
    record(httpx.get(v1 + "/models", headers=gateway.headers))
    record(httpx.get(v1 + "/models", headers={"Authorization": "Bearer wrong-key-123456"}))
    record(httpx.post(v1 + "/images/generations", headers=gateway.headers, json={"prompt": "p"}))
    del upstream.handlers["/v1/images/generations"]  # the upstream now answers 404
    record(httpx.post(v1 + "/images/generations", headers=gateway.headers, json={"prompt": "p"}))
    for path in ("stats", "health", "settings", "cache", "images", "logs"):
        record(httpx.get(f"{gateway.url}/admin/api/{path}", cookies=cookies))
    for path in ("settings/test-upstream", "settings/test-r2", "cache/upload-pending"):
        record(
            httpx.post(
                f"{gateway.url}/admin/api/{path}", cookies=cookies, headers={"X-CSRF-Token": csrf}
            )
        )
    for page in ("", "/settings", "/logs", "/cache"):
        record(httpx.get(f"{gateway.url}/admin{page}", cookies=cookies))
    gateway.services.events.flush()
    logged = orm.read(
        gateway.services.db, lambda s: [e.message for e in s.scalars(select(LogEntry))]
    )
    assert logged, "the log table should have lines to check"
    texts = {
        "responses": "\n".join(seen),
        "log table": "\n".join(logged),
        "python log": caplog.text,
    }
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:6]}... found in {where}"
            assert base64.b64encode(secret.encode()).decode() not in text, where
