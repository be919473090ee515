"""Driving the admin console over HTTP: first-run setup, login, and the CSRF token of a page."""

from __future__ import annotations

import re

import httpx

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery"

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
    client: httpx.Client, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD
) -> httpx.Response:
    token = form_token(client.get("/admin/setup").text)
    return client.post(
        "/admin/setup",
        data={
            "username": username,
            "password": password,
            "password_confirm": password,
            "csrf_token": token,
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
