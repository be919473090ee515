"""A models file's image models in chat (task prompts, tools, ``response_format``) and the daily
image limits applied only to calls that make images, over real sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests import orm
from tests.conftest import Gateway
from tests.orm import Image
from tests.support.models_file import models_file, second_upstream_server, upstream_b
from tests.support.models_file import write_models_file as write_models
from tests.support.upstream import StubUpstream

__all__ = ["models_file", "second_upstream_server", "upstream_b"]  # fixtures used here

CHAT = "/v1/chat/completions"
GENERATIONS = "/v1/images/generations"
PROMPTS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "openwebui" / "task_prompts.json").read_text()
)["prompts"]
TOOLS = [{"type": "function", "function": {"name": "search_web", "parameters": {}}}]
USER = {"X-OpenWebUI-User-Id": "user-over-the-limit"}
EXTRA = """
  - name: gpt-image-direct
    upstream: alpha
    upstream_model: gpt-image-1
    api: images
    response_format: url
  - name: flux-b64
    upstream: beta
    upstream_model: flux-dev
    api: images
    response_format: b64_json
  - name: careful-talker
    upstream: beta
    upstream_model: gemini-image
    api: chat
    drop_tools: true
"""


def _post(gateway: Gateway, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.url + path, json=body, headers={**gateway.headers, **headers}, timeout=60
    )


def _stored(gateway: Gateway) -> int:
    count = orm.read(
        gateway.services.db, lambda s: s.scalar(select(func.count()).select_from(Image))
    )
    return int(count or 0)


@pytest.fixture
def routed(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
) -> Callable[..., Gateway]:
    write_models(models_file, upstream, upstream_b, EXTRA)

    def start(**overrides: Any) -> Gateway:
        return start_gateway(models_file=models_file, **overrides)

    return start


@pytest.mark.parametrize("task", ["title", "tags", "follow_ups"])
def test_chat_task_prompt_to_images_model_answered_without_image_call(
    routed: Callable[..., Gateway], upstream: StubUpstream, upstream_b: StubUpstream, task: str
) -> None:
    gateway = routed()
    reply = _post(gateway, CHAT, {**PROMPTS[task], "model": "flux"})
    assert reply.status_code == 200, reply.text[:300]
    answer = json.loads(reply.json()["choices"][0]["message"]["content"])
    assert list(answer) == [task]
    assert upstream.requests == [] and upstream_b.requests == []
    assert _stored(gateway) == 0


def test_chat_task_prompt_to_chat_model_goes_upstream(
    routed: Callable[..., Gateway], upstream_b: StubUpstream
) -> None:
    gateway = routed()
    reply = _post(gateway, CHAT, {**PROMPTS["title"], "model": "talker"})
    assert reply.status_code == 200, reply.text[:300]
    assert upstream_b.last(CHAT).json["messages"] == PROMPTS["title"]["messages"]


@pytest.mark.parametrize(
    ("model", "kept"), [("talker", True), ("careful-talker", False)], ids=["default", "drop"]
)
def test_chat_tools_follow_the_models_drop_tools(
    routed: Callable[..., Gateway], upstream_b: StubUpstream, model: str, kept: bool
) -> None:
    gateway = routed()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    assert _post(gateway, CHAT, {**body, "tool_choice": "auto"}).status_code == 200
    sent = upstream_b.last(CHAT).json
    assert ("tools" in sent, "tool_choice" in sent) == (kept, kept)


@pytest.mark.parametrize(
    ("model", "asked", "answered"),
    [
        ("gpt-image-direct", None, "url"),  # the entry overrides the gpt-image name rule
        ("flux-b64", None, "b64_json"),
        ("flux-b64", "url", "url"),  # the client's own choice wins
        ("flux", None, "url"),  # no entry setting: the name rule
    ],
)
def test_generations_response_format_default_from_the_model_entry(
    routed: Callable[..., Gateway], model: str, asked: str | None, answered: str
) -> None:
    gateway = routed()
    body: dict[str, Any] = {"model": model, "prompt": "a fox"}
    if asked:
        body["response_format"] = asked
    reply = _post(gateway, GENERATIONS, body)
    assert reply.status_code == 200, reply.text[:300]
    [item] = reply.json()["data"]
    assert set(item) & {"url", "b64_json"} == {answered}
    assert _stored(gateway) == 1


def test_edits_multipart_response_format_default_from_the_model_entry(
    routed: Callable[..., Gateway], upstream: StubUpstream, upstream_b: StubUpstream
) -> None:
    gateway = routed()
    reply = httpx.post(
        gateway.url + "/v1/images/edits",
        headers=gateway.headers,
        data={"model": "flux-b64", "prompt": "blue"},
        files={"image": ("in.png", upstream.image, "image/png")},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text[:300]
    assert "b64_json" in reply.json()["data"][0]


def test_daily_limit_over_it_tasks_chat_models_and_listing_still_answer(
    routed: Callable[..., Gateway], upstream_b: StubUpstream
) -> None:
    gateway = routed(user_daily_image_limit=1)
    assert _post(gateway, GENERATIONS, {"model": "flux", "prompt": "x"}, **USER).status_code == 200
    # the user is at the limit: what makes no image is still answered
    title = _post(gateway, CHAT, {**PROMPTS["title"], "model": "flux"}, **USER)
    assert title.status_code == 200, title.text[:300]
    assert "title" in json.loads(title.json()["choices"][0]["message"]["content"])
    chat = {"model": "talker", "messages": [{"role": "user", "content": "hi"}]}
    assert _post(gateway, CHAT, chat, **USER).status_code == 200
    listing = httpx.get(gateway.url + "/v1/models", headers={**gateway.headers, **USER})
    assert listing.status_code == 200
    # what would draw is refused, by the Images API and by chat alike
    drawn = {"model": "flux", "messages": [{"role": "user", "content": "a cat"}]}
    for path, body in ((GENERATIONS, {"model": "flux", "prompt": "x"}), (CHAT, drawn)):
        refused = _post(gateway, path, body, **USER)
        assert refused.status_code == 429, refused.text[:300]
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_daily_limit_without_models_file_task_answered_image_refused(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(user_daily_image_limit=1)
    assert _post(gateway, GENERATIONS, {"prompt": "x"}, **USER).status_code == 200
    # by user, and by key (the image counts for the env key as well): the task costs no image
    for headers in (USER, {}):
        for stream in (False, True):
            body = {**PROMPTS["title"], "model": "picgate", "stream": stream}
            task = _post(gateway, CHAT, body, **headers)
            assert task.status_code == 200, task.text[:300]
    refused = _post(gateway, GENERATIONS, {"prompt": "x"}, **USER)
    assert refused.status_code == 429
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    assert _stored(gateway) == 1


def test_named_key_over_its_daily_images_still_lists_models_and_answers_tasks(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway()
    _, key = gateway.services.keys.create("erin", daily_images=1)
    auth = {"Authorization": f"Bearer {key}"}
    first = httpx.post(gateway.url + GENERATIONS, headers=auth, json={"prompt": "x"}, timeout=60)
    assert first.status_code == 200
    listing = httpx.get(gateway.url + "/v1/models", headers=auth)
    assert listing.status_code == 200
    task = httpx.post(
        gateway.url + CHAT, headers=auth, json={**PROMPTS["tags"], "model": "picgate"}, timeout=60
    )
    assert task.status_code == 200, task.text[:300]
    refused = httpx.post(gateway.url + GENERATIONS, headers=auth, json={"prompt": "x"}, timeout=60)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    usage = {u.name: u for u in gateway.services.keys.listing()}["erin"]
    assert (usage.requests_today, usage.images_today) == (4, 1)
