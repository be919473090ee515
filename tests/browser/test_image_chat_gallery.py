"""Images an image-only model makes in a chat (``api: images`` in MODELS_FILE, called through
the openai SDK) show in the console's gallery in real Chromium, with their model and prompt."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.browser.test_admin_browser import browser, page, shot, wait_until
from tests.browser.test_keys_browser import _login
from tests.conftest import Gateway
from tests.support.models_file import models_file, second_upstream_server, upstream_b
from tests.support.upstream import StubUpstream

pytestmark = pytest.mark.browser
__all__ = ["browser", "models_file", "page", "second_upstream_server", "upstream_b"]

IMAGE_ID = re.compile(r"/images/([A-Za-z0-9_-]+)\.png")


def test_image_chat_images_listed_in_console_gallery_with_model_and_prompt(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
    page: Any,
) -> None:
    gateway = start_gateway(models_file=models_file)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    first = client.chat.completions.create(
        model="painter", messages=[{"role": "user", "content": "a red cat"}]
    )
    answer = first.choices[0].message.content or ""
    second = client.chat.completions.create(
        model="painter",
        messages=[
            {"role": "user", "content": "a red cat"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "make it blue"},
        ],
    )
    ids = [IMAGE_ID.search(m.choices[0].message.content or "") for m in (first, second)]
    made = [m.group(1) for m in ids if m]
    assert len(made) == 2, (answer, second.choices[0].message.content)
    assert upstream.last("/v1/images/edits") is not None  # turn 2 edited turn 1's image

    _login(page, gateway)
    page.goto(gateway.url + "/admin/images")
    for image_id in made:
        wait_until(page, f"document.querySelector('.tile[data-id=\"{image_id}\"]')")
    tile = page.locator(f'.tile[data-id="{made[1]}"]')
    assert "make it blue" in tile.inner_text()
    assert "painter" in tile.inner_text()
    wait_until(
        page,
        f"document.querySelector('.tile[data-id=\"{made[1]}\"] img')"
        f" && document.querySelector('.tile[data-id=\"{made[1]}\"] img').naturalWidth > 0",
    )
    shot(page, "image-chat-gallery")
