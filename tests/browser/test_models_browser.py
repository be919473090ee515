"""The console's Models page in real Chromium: create an upstream and a model kept in the
database, call the model through /v1 against a stub upstream on loopback, edit it, delete it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.test_admin_browser import browser, page, shot, wait_until
from tests.browser.test_keys_browser import _login
from tests.conftest import Gateway
from tests.support.upstream import StubUpstream

pytestmark = pytest.mark.browser
__all__ = ["browser", "page"]

CONSOLE_KEY = "sk-console-browser-0123456789abcdef"
ROW = "document.querySelector('.model-row[data-name=\"sketch\"]')"


def _generate(gateway: Gateway, model: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": model, "prompt": "cat"},
        timeout=30,
    )


def test_models_page_create_call_edit_delete_in_chromium(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream, page: Any
) -> None:
    gateway = start_gateway()
    _login(page, gateway)
    page.goto(gateway.url + "/admin/models")

    page.fill("#upstream-name", "local")
    page.fill("#upstream-base", upstream.base_url)
    page.fill("#upstream-key", CONSOLE_KEY)
    page.click("#upstream-save")
    wait_until(page, "document.querySelector('.upstream-row[data-name=\"local\"]')")
    assert CONSOLE_KEY not in page.content()

    page.fill("#model-name", "sketch")
    page.select_option("#model-upstream", "local")
    page.fill("#model-target", "gpt-image-1")
    page.select_option("#model-api", "images")
    page.fill("#model-params", '{"size": "256x256"}')
    page.click("#model-save")
    wait_until(page, ROW)

    r = _generate(gateway, "sketch")
    assert r.status_code == 200, r.text
    sent = upstream.last("/v1/images/generations")
    assert (sent.json["model"], sent.json["size"]) == ("gpt-image-1", "256x256")
    assert sent.headers["authorization"] == f"Bearer {CONSOLE_KEY}"

    page.locator('.model-row[data-name="sketch"] .model-edit').click()
    assert page.input_value("#model-target") == "gpt-image-1"
    page.fill("#model-target", "gpt-image-1-mini")
    page.fill("#model-params", "")
    page.click("#model-save")
    wait_until(page, f"{ROW}.textContent.includes('gpt-image-1-mini')")
    shot(page, "models-console")

    # the edit reaches routing at once in this process (the catalog is re-read on save)
    r = _generate(gateway, "sketch")
    assert r.status_code == 200, r.text
    sent = upstream.last("/v1/images/generations")
    assert sent.json["model"] == "gpt-image-1-mini" and "size" not in sent.json

    page.locator('.model-row[data-name="sketch"] .model-delete').click()  # confirm() accepted
    wait_until(page, f"!{ROW}")
    page.locator('.upstream-row[data-name="local"] .upstream-delete').click()
    wait_until(page, "!document.querySelector('.upstream-row[data-name=\"local\"]')")
    # no model left anywhere: the single upstream rule is back, so define one to see the 404
    page.fill("#upstream-name", "other")
    page.fill("#upstream-base", upstream.base_url)
    page.click("#upstream-save")
    wait_until(page, "document.querySelector('.upstream-row[data-name=\"other\"]')")
    page.fill("#model-name", "kept")
    page.select_option("#model-upstream", "other")
    page.click("#model-save")
    wait_until(page, "document.querySelector('.model-row[data-name=\"kept\"]')")
    gone = _generate(gateway, "sketch")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"
    assert page.problems == []
