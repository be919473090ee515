"""``picgate images list|delete`` and the console's image filters, on images made through
PicGate with the headers Open WebUI forwards."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from picgate.cli import main
from tests.conftest import GATEWAY_KEY, Gateway
from tests.integration.test_openwebui_headers import OWUI_HEADERS
from tests.support.admin import signed_in
from tests.support.upstream import StubUpstream

CHAT_A = OWUI_HEADERS["X-OpenWebUI-Chat-Id"]
CHAT_B = "chat-b"


@pytest.fixture
def made(
    gateway: Gateway, upstream: StubUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """Three images in chat A (user 1, prompt "a red fox"), one in chat B (user 2)."""
    for headers, prompt, n in (
        (OWUI_HEADERS, "a red fox", 3),
        ({**OWUI_HEADERS, "X-OpenWebUI-Chat-Id": CHAT_B, "X-OpenWebUI-User-Id": "u2"}, "owl", 1),
    ):
        reply = httpx.post(
            gateway.url + "/v1/images/generations",
            json={"model": "picgate", "prompt": prompt, "n": n},
            headers={**gateway.headers, **headers},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    for name, value in {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/data/db/picgate.db",
        "GATEWAY_API_KEY": GATEWAY_KEY,
        "SECRET_KEY": "test-secret-key-0123456789",
        "PUBLIC_BASE_URL": "https://pg.example",
    }.items():
        monkeypatch.setenv(name, value)
    return gateway


def _list(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["images", "list", "--json", *args]) == 0
    listed: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return listed


def test_images_list_by_user_and_chat_has_the_ids(
    made: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = _list(capsys, "--user", OWUI_HEADERS["X-OpenWebUI-User-Id"])
    assert len(mine) == 3
    for item in mine:
        assert {
            "id",
            "url",
            "user_id",
            "chat_id",
            "message_id",
            "model",
            "created_at",
            "bytes",
        } <= set(item)
        assert item["chat_id"] == CHAT_A
        assert item["message_id"] == OWUI_HEADERS["X-OpenWebUI-Message-Id"]
        assert item["model"] == "picgate"
        assert item["url"] == f"https://pg.example/images/{item['id']}.png"
        assert item["bytes"] > 0
    assert [i["user_id"] for i in _list(capsys, "--chat", CHAT_B)] == ["u2"]
    assert len(_list(capsys, "--model", "picgate", "--limit", "2")) == 2
    assert _list(capsys, "--model", "other") == []


def test_images_delete_chat_asks_and_no_keeps_everything(
    made: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["images", "delete", "--chat", CHAT_A]) == 2
    assert "3 image(s)" in capsys.readouterr().out
    assert len(_list(capsys, "--chat", CHAT_A)) == 3


def test_images_delete_chat_yes_removes_file_and_row(
    made: Gateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doomed = _list(capsys, "--chat", CHAT_A)
    assert main(["images", "delete", "--chat", CHAT_A, "--yes"]) == 0
    assert "deleted 3 image(s)" in capsys.readouterr().out
    assert _list(capsys, "--chat", CHAT_A) == []
    assert len(_list(capsys, "--chat", CHAT_B)) == 1
    for item in doomed:
        assert not list((tmp_path / "data").rglob(f"{item['id']}.*"))
        gone = httpx.get(made.url + f"/images/{item['id']}.png")
        assert gone.status_code == 404


def test_console_image_filters_narrow_the_grid(made: Gateway) -> None:
    client, _csrf = signed_in(made.url)

    def ids(**params: str) -> tuple[int, list[str | None]]:
        page = client.get("/admin/api/images", params=params).json()
        return page["total"], [i["chat_id"] for i in page["items"]]

    try:
        assert ids() == (4, [CHAT_B, CHAT_A, CHAT_A, CHAT_A])
        assert ids(user="u2") == (1, [CHAT_B])
        assert ids(chat=CHAT_A)[0] == 3
        assert ids(model="picgate")[0] == 4
        assert ids(q="red f") == (3, [CHAT_A] * 3)
        assert ids(q="%")[0] == 0  # a literal, not a wildcard
    finally:
        client.close()


def test_dashboard_counts_images_per_user_and_escapes_names(
    made: Gateway, upstream: StubUpstream
) -> None:
    hostile = {
        **OWUI_HEADERS,
        "X-OpenWebUI-User-Id": "u3",
        "X-OpenWebUI-User-Name": "<script>x</script>",
    }
    reply = httpx.post(
        made.url + "/v1/images/generations",
        json={"prompt": "p"},
        headers={**made.headers, **hostile},
        timeout=30,
    )
    assert reply.status_code == 200
    client, _csrf = signed_in(made.url)
    try:
        per_user = client.get("/admin/api/stats").json()["per_user"]
        page = client.get("/admin").text
    finally:
        client.close()
    assert per_user == [
        {
            "user_id": OWUI_HEADERS["X-OpenWebUI-User-Id"],
            "user_name": "张三 Zhang",
            "today": 3,
            "total": 3,
        },
        {"user_id": "u2", "user_name": "张三 Zhang", "today": 1, "total": 1},
        {"user_id": "u3", "user_name": "<script>x</script>", "today": 1, "total": 1},
    ]
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
