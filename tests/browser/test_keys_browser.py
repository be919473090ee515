"""The console's keys and models pages in real Chromium: create a key (shown once), use it,
see its usage, revoke it; the models of MODELS_FILE and "Test connection" per upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from picgate.admin import auth
from tests.browser.test_admin_browser import browser, page, shot, wait_until
from tests.conftest import Gateway
from tests.support.admin import ADMIN_PASSWORD, ADMIN_USER
from tests.support.models_file import KEY_A, models_file, second_upstream_server, upstream_b
from tests.support.upstream import StubUpstream

pytestmark = pytest.mark.browser
__all__ = ["browser", "models_file", "page", "second_upstream_server", "upstream_b"]


def _login(page: Any, gateway: Gateway) -> None:
    gateway.services.db.write(
        lambda s: auth.set_admin(s, username=ADMIN_USER, password=ADMIN_PASSWORD)
    )
    page.goto(gateway.url + "/admin/login")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(gateway.url + "/admin")


def test_keys_page_create_use_revoke_in_chromium(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    page: Any,
) -> None:
    gateway = start_gateway(models_file=models_file)
    _login(page, gateway)

    page.click('[data-nav="keys"]')
    page.wait_for_url(gateway.url + "/admin/keys")
    wait_until(page, "!document.querySelector('#keys-empty').hidden")
    page.fill("#key-name", "team-a")
    page.fill("#key-limit", "1")
    page.click("#key-create")
    wait_until(page, "!document.querySelector('#key-new').hidden")
    key = page.input_value("#key-value")
    assert key.startswith("pg-")
    wait_until(page, "document.querySelector('.gwkey-row[data-name=\"team-a\"]')")
    row = page.locator('.gwkey-row[data-name="team-a"]')
    assert key[:10] in row.inner_text()
    assert key not in page.locator("#keys-table").inner_text()

    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "painter", "prompt": "cat"}
    url = gateway.url + "/v1/images/generations"
    assert httpx.post(url, headers=headers, json=body, timeout=30).status_code == 200
    assert httpx.post(url, headers=headers, json=body, timeout=30).status_code == 429

    page.reload()
    wait_until(page, "document.querySelector('.gwkey-row[data-name=\"team-a\"]')")
    cells = row.locator("td").all_inner_texts()
    # today: requests (the refused call is a request too) / images of the limit
    assert cells[4].replace(" ", "") == "2/1/1"
    assert cells[5].replace(" ", "") == "2/1"  # in total: requests / images
    shot(page, "keys")

    row.locator(".key-revoke").click()  # the confirm() is accepted by the fixture
    wait_until(page, "!document.querySelector('.gwkey-row[data-name=\"team-a\"] .key-revoke')")
    assert "已吊销" in row.inner_text()
    revoked = httpx.post(url, headers=headers, json=body, timeout=30)
    assert revoked.status_code == 401
    assert page.problems == []


def test_models_page_lists_models_and_tests_each_upstream_in_chromium(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
    page: Any,
) -> None:
    gateway = start_gateway(models_file=models_file)
    _login(page, gateway)
    page.goto(gateway.url + "/admin/models")
    wait_until(page, "document.querySelectorAll('.model-row').length === 3")
    models = page.locator("#models-body").inner_text()
    assert "painter" in models and "gpt-image-1" in models and "flux-dev" in models
    assert "MODELS_FILE" in page.inner_text("#models-source")
    assert KEY_A not in page.content()

    page.locator('.upstream-row[data-name="alpha"] .upstream-test').click()
    result = '.upstream-row[data-name="alpha"] .upstream-result'
    wait_until(page, f"document.querySelector('{result}').textContent.includes('✅')")
    assert upstream.last("/v1/models").headers["authorization"] == f"Bearer {KEY_A}"
    assert upstream_b.requests == []
    shot(page, "models")
    assert page.problems == []
