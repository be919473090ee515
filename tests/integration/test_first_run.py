"""What a newcomer meets on a first run, over real HTTP: ``/`` leads to the console, a base URL
without ``/v1`` gets a hint, the key wording is true, and the console says what is missing."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import closing

import httpx
import pytest

from tests.conftest import Gateway
from tests.support.admin import signed_in


def test_root_get_redirects_to_admin(gateway: Gateway) -> None:
    for method in ("GET", "HEAD"):
        answer = httpx.request(method, gateway.url + "/", follow_redirects=False)
        assert answer.status_code == 307 and answer.headers["location"] == "/admin"


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/images/generations"),
        ("POST", "/images/edits"),
        ("POST", "/chat/completions"),
        ("GET", "/models"),
    ],
)
def test_path_without_v1_error_hints_to_add_v1(gateway: Gateway, method: str, path: str) -> None:
    answer = httpx.request(method, gateway.url + path, headers=gateway.headers, json={})
    assert answer.status_code in (404, 405)
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert f"{path}. Did you mean {method} /v1{path}?" in error["message"]
    assert "base URL must end in /v1" in error["message"]


def test_unknown_path_error_has_no_v1_hint(gateway: Gateway) -> None:
    for method, path in (("POST", "/v1/nothing"), ("GET", "/nothing"), ("PUT", "/models")):
        answer = httpx.request(method, gateway.url + path)
        assert answer.status_code in (404, 405)
        assert "/v1" not in answer.json()["error"]["message"].replace(path, "")


def test_wrong_gateway_key_401_says_where_the_key_is_shown(gateway: Gateway) -> None:
    answer = httpx.get(
        gateway.url + "/v1/models", headers={"Authorization": "Bearer pg-wrong-key-000000"}
    )
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert "printed once" in message and "shown once on the admin dashboard" in message
    assert "generate a new one" in message and "GATEWAY_API_KEY" in message
    assert "use the key shown in the PicGate admin console" not in message


def dashboards(gateway: Gateway) -> dict[str, str]:
    """The dashboard in each language."""
    client, _ = signed_in(gateway.url)
    with closing(client):
        pages = {}
        for lang in ("en", "zh"):
            client.cookies.set("picgate_lang", lang)
            pages[lang] = client.get("/admin").text
        return pages


def test_dashboard_without_upstream_model_says_it_is_missing(
    start_gateway: Callable[..., Gateway],
) -> None:
    pages = dashboards(start_gateway(upstream_model_name=None))
    for lang, missing in (("en", "model missing"), ("zh", "缺少模型名")):
        assert 'id="upstream-no-model"' in pages[lang] and missing in pages[lang]
        assert "UPSTREAM_MODEL_NAME" in pages[lang]
        assert 'class="pill ok"' not in pages[lang]


def test_dashboard_with_upstream_model_says_configured(gateway: Gateway) -> None:
    page = dashboards(gateway)["en"]
    assert '<span class="pill ok">configured</span>' in page
    assert 'id="upstream-no-model"' not in page


def test_settings_fixed_secret_does_not_invite_a_new_value(gateway: Gateway) -> None:
    """The test gateway's keys come from the environment: read-only, no "type to replace"."""
    client, _ = signed_in(gateway.url)
    with closing(client):
        for lang, fixed, invite in (
            ("en", "by an environment variable", "type a new value"),
            ("zh", "已由环境变量设置", "输入新值即可替换"),
        ):
            client.cookies.set("picgate_lang", lang)
            page = client.get("/admin/settings").text
            start = page.index('id="f-upstream_api_key"')
            field = page[start : page.index(">", start)]
            assert fixed in field and invite not in field and "disabled" in field


def test_admin_logs_follow_console_language(gateway: Gateway) -> None:
    client, _ = signed_in(gateway.url)
    with closing(client):
        client.cookies.set("picgate_lang", "en")
        english = [e["message"] for e in client.get("/admin/api/logs").json()["entries"]]
        client.cookies.set("picgate_lang", "zh")
        chinese = [e["message"] for e in client.get("/admin/api/logs").json()["entries"]]
    assert "👤 Admin account created: admin" in english
    assert "🔐 Admin signed in: admin" in english
    assert not any(re.search(r"[\u4e00-\u9fff]", line) for line in english)
    assert "🔐 管理员已登录: admin" in chinese  # the stored text, as Chinese readers had it
