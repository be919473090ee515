"""The admin console in real Chromium: first run, every page, every button, both languages.

One walk through the console (starting Chromium costs seconds, so the steps share a browser
and a gateway). Screenshots of each page are taken on every run (a page that cannot render
fails); they land in docs/screenshots/ only with ``PICGATE_SCREENSHOTS=1`` (the README's pictures),
otherwise in pytest's temporary folder, so a test run leaves the tree clean. The page must never
log a CSP violation or a script error.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picgate.library.records import ImageOrigin
from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.admin import ADMIN_PASSWORD, ADMIN_USER, setup_token, signed_in
from tests.support.images import make_image

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("PICGATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "picgate-screenshots"
)
MIB = 2**20
GRID_IMAGES = 6


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # reduced motion: no bar caught halfway through its transition in a screenshot
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", reduced_motion="reduce"
    )
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"{msg.text} @ {msg.location.get('url')}")
            if msg.type == "error"
            else None
        ),
    )
    tab.on("dialog", lambda dialog: dialog.accept())  # every confirm() is answered "yes"
    tab.problems = problems
    yield tab
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill_cache_to(gateway: Gateway, ratio: float, cap_mb: int = 1) -> None:
    """Store one more image so that local usage is ``ratio`` of a ``cap_mb`` cap."""
    missing = int(ratio * cap_mb * MIB) - gateway.services.cache.usage()
    assert missing > 5000, "the cache is already too full for this step"
    gateway.services.library.save_sync(
        make_image("PNG", missing, seed=int(ratio * 1000)), origin=ImageOrigin("test", "filler")
    )


def wait_until(page: Any, script: str, timeout: float = 10.0) -> None:
    """Poll a JS expression from Python: ``wait_for_function`` evals a string in the page,
    which the console's CSP (rightly) forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({script})"):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(100)


def cap_percent(page: Any) -> float:
    text = page.locator("#cap-fill").evaluate("el => el.style.width")
    return float(text.rstrip("%"))


def test_admin_console_end_to_end_in_chromium(
    start_gateway: Callable[..., Gateway], page: Any
) -> None:
    gateway = start_gateway(gateway_api_key=None)  # first start: PicGate makes a key
    first_key = gateway.services.generated_key
    assert first_key
    url = gateway.url
    for i in range(GRID_IMAGES):
        gateway.services.library.save_sync(
            make_image("PNG", 30_000 + 5_000 * i, seed=100 + i),
            origin=ImageOrigin("images.generations", f"画一只可爱的猫 #{i}"),
        )

    # -- first run: every page leads to setup, then login ----------------------------------
    page.goto(url + "/admin/images")
    assert page.url.endswith("/admin/setup")
    # without the console's token the form asks for it, and a wrong one is refused
    page.fill("input[name=setup_token]", "not-the-token")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.fill("input[name=password_confirm]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    assert "设置令牌" in page.inner_text("#error")
    # the link printed on the console carries the token in a hidden field
    page.goto(url + "/admin/setup?token=" + setup_token())
    assert page.locator("input[name=setup_token]").get_attribute("type") == "hidden"
    shot(page, "setup")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.fill("input[name=password_confirm]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/login"))
    assert "请登录" in page.inner_text("#notice")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    assert "用户名或密码错误" in page.inner_text("#error")
    shot(page, "login")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/admin")

    # -- dashboard ---------------------------------------------------------------------------
    for label in ("总图片数", "本地缓存", "R2 存储", "磁盘使用", "待上传", "上传失败"):
        assert label in page.inner_text("#stats")
    assert page.inner_text('[data-value="total"]') == str(GRID_IMAGES)
    assert "已配置" in page.inner_text("#health")
    assert page.input_value("#generated-key") == first_key
    shot(page, "dashboard")
    page.reload()
    assert page.locator("#key-notice").count() == 0  # shown once

    # -- settings: autosave, invalid value, tests, key generation ----------------------------
    page.click('a[data-nav="settings"]')
    page.fill("#f-gateway_model_name", "picgate-browser")
    page.wait_for_selector("#save-state.ok", timeout=8000)
    assert "已保存" in page.inner_text("#save-state")
    assert gateway.services.config.current().gateway_model_name == "picgate-browser"
    page.fill("#f-public_base_url", "not a url")
    page.wait_for_selector('[data-field="public_base_url"].has-error', timeout=8000)
    assert "保存失败" in page.inner_text('[data-status-for="public_base_url"]')
    page.fill("#f-public_base_url", "")
    page.wait_for_selector("#save-state.ok", timeout=8000)
    assert page.is_disabled("#f-upstream_api_base")  # pinned by the environment
    assert "只读" in page.inner_text('[data-field="upstream_api_base"]')
    page.click("#test-upstream")
    page.wait_for_selector("#test-upstream-result.ok")
    assert "HTTP 200" in page.inner_text("#test-upstream-result")
    page.click("#test-r2")
    page.wait_for_selector("#test-r2-result.error")
    assert "尚未配置" in page.inner_text("#test-r2-result")
    page.click("#generate-key")
    page.wait_for_selector("#new-key-box:not([hidden])")
    new_key = page.input_value("#new-key")
    assert new_key.startswith("pg-")
    assert gateway.services.config.current().gateway_api_key == new_key
    assert new_key not in page.get_attribute("#f-gateway_api_key", "placeholder")
    shot(page, "settings")

    # -- cache: the five operations and the cap bar ------------------------------------------
    page.click('a[data-nav="cache"]')
    page.click('[data-action="clean-expired"]')
    page.wait_for_selector("#op-result.ok")
    page.click('[data-action="upload-pending"]')
    page.wait_for_selector("#op-result.ok")
    page.click('[data-action="retry-failed"]')
    page.wait_for_selector("#op-result.ok")
    page.click('[data-action="archive-local"]')  # its confirm() is answered yes
    page.wait_for_selector("#op-result.ok")
    assert "归档未上传的图片" in page.inner_text("#op-result")
    page.click('[data-action="clear-local"]')
    page.wait_for_selector("#op-result.ok")
    assert "完成" in page.inner_text("#op-result")
    fill_cache_to(gateway, 0.85)
    page.fill("#cap-mb", "1")
    page.click("#cap-save")
    page.wait_for_selector("#cap-bar.warn")
    assert 80 < cap_percent(page) <= 95
    shot(page, "cache")
    fill_cache_to(gateway, 0.97)
    page.reload()
    page.wait_for_selector("#cap-bar.danger")
    assert cap_percent(page) > 95
    assert gateway.services.cache.usage() < MIB  # under the cap: nothing was evicted

    # -- images: grid, sort, select, batch delete, lightbox ----------------------------------
    page.click('a[data-nav="images"]')
    tiles = page.locator(".tile")
    tiles.first.wait_for()
    total = GRID_IMAGES + 2
    assert tiles.count() == total
    wait_until(
        page,
        "document.querySelector('.tile img') && document.querySelector('.tile img').naturalWidth > 0",
    )
    # thumbnails are the public variants of the images, cached beside them
    first_src = page.locator(".tile img").first.get_attribute("src") or ""
    assert first_src.endswith("?w=384&h=384&format=webp")
    page.select_option("#img-sort", "size")
    wait_until(page, "document.querySelector('.tile .prompt').textContent === 'filler'")
    assert "本地" in tiles.first.inner_text()
    shot(page, "images")
    # the prompt filter narrows the grid (Enter applies it); emptied, the grid is whole again
    page.fill("#img-filter-q", "猫 #1")
    page.press("#img-filter-q", "Enter")
    wait_until(page, "document.querySelectorAll('.tile').length === 1")
    assert "猫 #1" in tiles.first.inner_text()
    page.fill("#img-filter-q", "")
    page.press("#img-filter-q", "Enter")
    wait_until(page, f"document.querySelectorAll('.tile').length === {total}")

    target = tiles.nth(1).get_attribute("data-id")
    tiles.nth(1).locator(".pick").check()
    page.click('[data-delete="local"]')
    wait_until(page, f"!document.querySelector('.tile[data-id=\"{target}\"] .badge.local')")
    row = orm.read(gateway.services.db, lambda s: s.get(Image, target))
    assert row is not None and row.local is False

    page.check("#img-select-all")
    assert f"已选 {total}" in page.inner_text("#img-summary")
    page.uncheck("#img-select-all")
    assert "已选 0" in page.inner_text("#img-summary")

    victim = tiles.nth(2).get_attribute("data-id")
    tiles.nth(2).locator(".thumb").click()
    page.wait_for_selector("#lightbox:not([hidden])")
    wait_until(page, "document.getElementById('lb-img').naturalWidth > 0")
    assert page.input_value("#lb-url").endswith(".png") and victim in page.input_value("#lb-url")
    page.click("#lb-copy")
    shot(page, "lightbox")
    page.click("#lb-delete")
    page.wait_for_selector("#lightbox", state="hidden")
    assert orm.write(gateway.services.db, lambda s: s.get(Image, victim)) is None
    assert page.locator(".tile").count() == total - 1

    # -- logs: colours, filter, auto-refresh, clear ------------------------------------------
    gateway.services.events.warning("⚠️ 浏览器测试的警告")
    gateway.services.events.error("❌ 上游返回错误: HTTP 401")
    page.click('a[data-nav="logs"]')
    page.locator(".log-row").first.wait_for()
    assert "上游返回错误" in page.inner_text(".log-row >> nth=0")  # newest first
    colours = {
        level: page.locator(f".level-{level}").first.evaluate("el => getComputedStyle(el).color")
        for level in ("INFO", "WARNING", "ERROR")
    }
    assert colours == {
        "INFO": "rgb(22, 163, 74)",
        "WARNING": "rgb(202, 138, 4)",
        "ERROR": "rgb(220, 38, 38)",
    }
    shot(page, "logs")
    page.select_option("#log-level", "ERROR")
    wait_until(
        page,
        "[...document.querySelectorAll('.log-row .level')].every(e => e.textContent === 'ERROR')",
    )
    page.select_option("#log-level", "")
    page.check("#log-auto")
    gateway.services.events.info("🔄 自动刷新测试")
    wait_until(
        page,
        "document.querySelector('.log-row .msg').textContent.includes('自动刷新测试')",
        timeout=9,
    )
    page.uncheck("#log-auto")
    page.click("#log-clear")
    page.wait_for_selector("#log-empty:not([hidden])")
    assert page.locator(".log-row").count() == 0

    # -- language switch, password page, logout -------------------------------------------------
    page.click("a.lang-switch")
    page.wait_for_selector("text=Auto-refresh")
    page.click('a[data-nav="dashboard"]')
    assert "Total images" in page.inner_text("#stats")
    shot(page, "dashboard-en")
    page.click("a.lang-switch")
    page.wait_for_selector("text=总图片数")
    page.goto(url + "/admin/password")
    shot(page, "password")
    page.click("#logout")
    page.wait_for_url(re.compile(r"/admin/login$"))
    page.goto(url + "/admin/settings")
    assert page.url.endswith("/admin/login")

    # expected failures: the wrong setup token (403), the wrong password (401) and the refused
    # setting (422)
    expected = (
        "(Forbidden) @ " + url + "/admin/setup",
        "(Unauthorized) @ " + url + "/admin/login",
        "Entity) @ " + url + "/admin/api/settings",
    )
    assert [p for p in page.problems if not p.endswith(expected)] == []


def test_admin_browser_delete_local_only_copy_asks_twice_then_forces(
    start_gateway: Callable[..., Gateway], page: Any
) -> None:
    """R2 configured but unreachable: the image's local copy is its only one. "Delete local"
    is refused by the API (409), the console shows why and asks again, then forces it."""
    dead_r2 = {
        "r2_endpoint_url": "http://127.0.0.1:9",
        "r2_access_key_id": "testing",
        "r2_secret_access_key": "testing",
        "r2_bucket_name": "nowhere",
    }
    gateway = start_gateway(**dead_r2)
    url = gateway.url
    image = gateway.services.library.save_sync(
        make_image("PNG", 5_000, seed=31), origin=ImageOrigin("test", "only copy")
    )
    path = gateway.services.cache.path(image.id, image.ext)
    client, _ = signed_in(url)  # the admin, made over HTTP
    client.close()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.goto(url + "/admin/login")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/admin")
    page.goto(url + "/admin/images")
    tile = page.locator(f'.tile[data-id="{image.id}"]')
    tile.locator(".pick").check()
    page.click('[data-delete="local"]')
    wait_until(page, f"!document.querySelector('.tile[data-id=\"{image.id}\"] .badge.local')")
    assert len(dialogs) == 2, dialogs  # the usual confirm, then the only-copy one
    assert "R2" in dialogs[1] and "唯一" in dialogs[1]
    assert not path.exists()
    assert [p for p in page.problems if "(Conflict) @ " not in p] == []  # the expected 409
