"""Models and upstreams kept in the database, edited through the console's JSON API, routed by
/v1 against stub upstreams on loopback; the file's entries win and stay read-only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from picgate.model_catalog import ROW_KEY, ConsoleModels
from picgate.routing.models_file import ModelEntry
from tests import orm
from tests.conftest import Gateway
from tests.orm import Setting
from tests.support.admin import signed_in
from tests.support.models_file import models_file, second_upstream_server, upstream_b
from tests.support.upstream import StubUpstream

__all__ = ["models_file", "second_upstream_server", "upstream_b"]  # fixtures used here

CONSOLE_KEY = "sk-console-upstream-0123456789abcdef"


class Console:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.client, self.csrf = signed_in(gateway.url)

    def send(self, method: str, path: str, body: object = None) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf}
        return self.client.request(method, "/admin/api" + path, json=body, headers=headers)

    def listing(self) -> dict[str, object]:
        r = self.client.get("/admin/api/models")
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body


@pytest.fixture
def console(start_gateway: Callable[..., Gateway]) -> Iterator[Console]:
    made = Console(start_gateway())
    yield made
    made.client.close()


def _add_painter(console: Console, upstream: StubUpstream) -> None:
    r = console.send(
        "PUT", "/upstreams/local", {"base_url": upstream.base_url, "api_key": CONSOLE_KEY}
    )
    assert r.status_code == 200, r.text
    r = console.send(
        "PUT",
        "/models/sketch",
        {"upstream": "local", "upstream_model": "gpt-image-1", "api": "images"},
    )
    assert r.status_code == 200, r.text


def _generate(gateway: Gateway, model: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": model, "prompt": "cat"},
        timeout=30,
    )


def test_console_models_without_models_file_route_and_unknown_is_404(
    console: Console, upstream: StubUpstream
) -> None:
    gateway = console.gateway
    _add_painter(console, upstream)
    listed = httpx.get(gateway.url + "/v1/models", headers=gateway.headers).json()
    assert [m["id"] for m in listed["data"]] == ["sketch"]
    r = _generate(gateway, "sketch")
    assert r.status_code == 200, r.text
    sent = upstream.last("/v1/images/generations")
    assert sent.json["model"] == "gpt-image-1"
    assert sent.headers["authorization"] == f"Bearer {CONSOLE_KEY}"
    unknown = _generate(gateway, "gpt-image-1")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_console_models_deleting_the_last_model_restores_the_single_upstream_rule(
    console: Console, upstream: StubUpstream
) -> None:
    _add_painter(console, upstream)
    assert console.send("DELETE", "/models/sketch").status_code == 200
    assert console.send("DELETE", "/upstreams/local").status_code == 200
    gone = console.listing()
    assert gone["models"] == [] and gone["upstreams"] == []
    # no model anywhere: any name goes to the settings' upstream with the settings' key again
    r = _generate(console.gateway, "whatever")
    assert r.status_code == 200, r.text
    assert upstream.last("/v1/images/generations").headers["authorization"] != (
        f"Bearer {CONSOLE_KEY}"
    )


def test_console_upstream_key_is_masked_sealed_and_redacted(
    console: Console, upstream: StubUpstream
) -> None:
    _add_painter(console, upstream)
    listing = console.client.get("/admin/api/models").text
    assert CONSOLE_KEY not in listing
    shown = console.listing()["upstreams"]
    assert isinstance(shown, list) and shown[0]["has_key"] is True
    assert shown[0]["key"].endswith(CONSOLE_KEY[-4:])
    services = console.gateway.services
    stored = orm.read(
        services.db, lambda s: s.scalars(select(Setting).where(Setting.key == ROW_KEY)).one()
    )
    assert stored.secret and CONSOLE_KEY not in stored.value
    assert services.events.redactor.text(f"echo {CONSOLE_KEY}") == "echo ***"


def test_console_upstream_edit_without_key_keeps_it_unless_the_host_moves(
    console: Console, upstream: StubUpstream, upstream_b: StubUpstream
) -> None:
    _add_painter(console, upstream)
    kept = console.send(
        "PUT", "/upstreams/local", {"base_url": upstream.base_url + "/", "retries": 2}
    )
    assert kept.status_code == 200, kept.text
    assert _generate(console.gateway, "sketch").status_code == 200
    assert upstream.last("/v1/images/generations").headers["authorization"] == (
        f"Bearer {CONSOLE_KEY}"
    )
    # the console's form sends only base_url and the key: what it does not show is kept
    again = console.send("PUT", "/upstreams/local", {"base_url": upstream.base_url})
    assert again.status_code == 200, again.text
    assert again.json()["upstream"]["retries"] == 2
    moved = console.send("PUT", "/upstreams/local", {"base_url": upstream_b.base_url})
    assert moved.status_code == 400
    assert moved.json()["error"]["param"] == "api_key"
    assert _generate(console.gateway, "sketch").status_code == 200
    assert upstream_b.requests == []


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/upstreams/x", {"base_url": "ftp://host"}, "base_url", "absolute http"),
        ("/upstreams/x", {"base_url": "http://h", "retries": 9}, "retries", "less than or equal"),
        ("/upstreams/bad%20name", {"base_url": "http://h"}, "name", "pattern"),
        ("/models/m", {"upstream": "nowhere"}, "upstream", "not defined"),
        ("/models/m", {"upstream": "nowhere", "api": "video"}, "api", "images"),
    ],
)
def test_console_models_bad_values_are_400_naming_the_field(
    console: Console, path: str, body: object, param: str, words: str
) -> None:
    r = console.send("PUT", path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert param in (error["param"] or "") or param in error["message"]
    assert words in error["message"]
    assert console.listing()["upstreams"] == []


def test_console_models_upstream_in_use_cannot_be_deleted(
    console: Console, upstream: StubUpstream
) -> None:
    _add_painter(console, upstream)
    r = console.send("DELETE", "/upstreams/local")
    assert r.status_code == 400
    assert "sketch" in r.json()["error"]["message"]
    assert console.send("DELETE", "/models/nothing").status_code == 404


def test_console_models_writes_need_the_csrf_token(
    console: Console, upstream: StubUpstream
) -> None:
    r = console.client.put("/admin/api/upstreams/local", json={"base_url": upstream.base_url})
    assert r.status_code == 403
    assert console.listing()["upstreams"] == []


def test_console_models_file_entries_are_read_only_and_win_a_clash(
    start_gateway: Callable[..., Gateway], models_file: Path, upstream: StubUpstream
) -> None:
    gateway = start_gateway(models_file=models_file)
    console = Console(gateway)
    try:
        clash = console.send("PUT", "/models/painter", {"upstream": "alpha"})
        assert clash.status_code == 400
        assert "MODELS_FILE" in clash.json()["error"]["message"]
        assert console.send("PUT", "/upstreams/alpha", {"base_url": "http://h"}).status_code == 400
        # a console entry the file took over later (the file changed): listed, never routed
        catalog = gateway.services.catalog
        shadow = ModelEntry(name="painter", upstream="beta", api="images")
        catalog._write(lambda doc: ConsoleModels(upstreams=doc.upstreams, models=[shadow]))
        models = console.listing()["models"]
        assert isinstance(models, list)
        origins = {(m["name"], m["origin"], m["shadowed"]) for m in models}
        assert ("painter", "file", False) in origins and ("painter", "console", True) in origins
        assert _generate(gateway, "painter").status_code == 200
        assert upstream.last("/v1/images/generations").json["model"] == "gpt-image-1"
        # a console model on a file upstream routes with that upstream's key
        added = console.send("PUT", "/models/extra", {"upstream": "alpha", "api": "images"})
        assert added.status_code == 200, added.text
        listed = httpx.get(gateway.url + "/v1/models", headers=gateway.headers).json()
        assert [m["id"] for m in listed["data"]] == ["painter", "flux", "talker", "extra"]
    finally:
        console.client.close()
