"""Driving the admin console over HTTP: first-run setup, login, and the CSRF token of a page."""

from __future__ import annotations

import re

import httpx

from picgate.admin import auth
from picgate.settings_store import SecretBox

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery"
# the SECRET_KEY the test gateways run with (tests/conftest.py ``make_settings``)
TEST_SECRET_KEY = "test-secret-key-0123456789"


def setup_token(secret_key: str = TEST_SECRET_KEY) -> str:
    """The first-run setup token a gateway with this SECRET_KEY prints on its console."""
    return auth.setup_token(SecretBox(secret_key))


_FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def form_token(html: str) -> str:
    found = _FORM_TOKEN.search(html)
    assert found, "no csrf_token field in the page"
    return found.group(1)


def meta_token(html: str) -> str:
    found = _META_TOKEN.search(html)
    assert found, "no csrf-token meta tag in the page"
    return found.group(1)


def setup_admin(
    client: httpx.Client,
    username: str = ADMIN_USER,
    password: str = ADMIN_PASSWORD,
    *,
    token: str | None = None,
) -> httpx.Response:
    """First-run setup through the form, with the console's setup token (``token``; by default
    the one for TEST_SECRET_KEY)."""
    csrf = form_token(client.get("/admin/setup").text)
    return client.post(
        "/admin/setup",
        data={
            "username": username,
            "password": password,
            "password_confirm": password,
            "csrf_token": csrf,
            "setup_token": setup_token() if token is None else token,
        },
    )


def login(
    client: httpx.Client, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD
) -> httpx.Response:
    token = form_token(client.get("/admin/login").text)
    return client.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": token}
    )


def signed_in(base_url: str) -> tuple[httpx.Client, str]:
    """A client with a live admin session (setting the admin up first) and its CSRF token."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
    setup_admin(client)
    answer = login(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin", answer.text
    # not the dashboard: opening it would use up the one-time generated-key notice
    return client, meta_token(client.get("/admin/logs").text)
