"""What Open WebUI sends besides image requests: its background task prompts (copied from a
pinned release into ``tests/fixtures/openwebui/task_prompts.json``), its Builtin Tools, and image
generations without ``response_format``. A real gateway on a socket; the stub upstream records
every call it gets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests import orm
from tests.conftest import Gateway
from tests.orm import Image, LogEntry
from tests.support.upstream import StubUpstream

CHAT = "/v1/chat/completions"
FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "openwebui" / "task_prompts.json").read_text()
)
PROMPTS: dict[str, dict[str, Any]] = FIXTURE["prompts"]
EXPECTED_KEY = {
    "title": "title",
    "tags": "tags",
    "follow_ups": "follow_ups",
    "image_prompt": "prompt",
    "queries": "queries",
    "autocomplete": "text",
}
TOOLS = [{"type": "function", "function": {"name": "search_web", "parameters": {}}}]


def post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + CHAT, headers=gateway.headers, json=body, timeout=60)


def stored_images(gateway: Gateway) -> int:
    count = orm.read(
        gateway.services.db, lambda s: s.scalar(select(func.count()).select_from(Image))
    )
    return int(count or 0)


def logged(gateway: Gateway, start: str) -> list[str]:
    gateway.services.events.flush()
    lines = orm.read(gateway.services.db, lambda s: s.scalars(select(LogEntry.message)).all())
    return [line for line in lines if line.startswith(start)]


def sse_content(text: str) -> str:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_fixture_is_open_webuis_own_prompts() -> None:
    assert FIXTURE["version"] == "0.12.4"
    assert set(PROMPTS) == set(EXPECTED_KEY)
    for prompt in PROMPTS.values():
        assert prompt["messages"][0]["content"].startswith("### Task:")


@pytest.mark.parametrize("task", sorted(EXPECTED_KEY))
@pytest.mark.parametrize("stream", [False, True])
def test_chat_openwebui_task_prompt_answered_locally_without_image_call(
    gateway: Gateway, upstream: StubUpstream, task: str, stream: bool
) -> None:
    resp = post(gateway, {**PROMPTS[task], "model": "picgate", "stream": stream})
    assert resp.status_code == 200, resp.text[:300]
    if stream:
        assert resp.headers["content-type"].startswith("text/event-stream")
        content = sse_content(resp.text)
    else:
        content = resp.json()["choices"][0]["message"]["content"]
    answer = json.loads(content)
    key = EXPECTED_KEY[task]
    assert list(answer) == [key]
    assert isinstance(answer[key], list if key in ("tags", "follow_ups", "queries") else str)
    assert not upstream.requests
    assert stored_images(gateway) == 0
    assert logged(gateway, f"🧩 Open WebUI 后台任务 ({task})")


def test_chat_openwebui_title_taken_from_users_first_words(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    resp = post(gateway, {**PROMPTS["title"], "model": "picgate"})
    assert json.loads(resp.json()["choices"][0]["message"]["content"]) == {
        "title": "Draw a red fox sitting"
    }
    prompt = json.loads(
        post(gateway, {**PROMPTS["image_prompt"], "model": "picgate"}).json()["choices"][0][
            "message"
        ]["content"]
    )
    assert prompt == {"prompt": "make it blue"}


def test_chat_openwebui_task_forwarded_to_task_model_no_image_stored(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(task_model="gpt-4o-mini")  # UPSTREAM_MODEL_NAME is gpt-image-1

    async def text_answer(request: Request) -> Response:
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": '{"tags": ["Art"]}'},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    upstream.handlers[CHAT] = text_answer
    resp = post(gateway, {**PROMPTS["tags"], "model": "picgate", "tools": TOOLS})
    assert resp.status_code == 200, resp.text[:300]
    assert json.loads(resp.json()["choices"][0]["message"]["content"]) == {"tags": ["Art"]}
    [sent] = upstream.requests
    assert sent.path == CHAT
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["messages"] == PROMPTS["tags"]["messages"]
    assert stored_images(gateway) == 0
    assert logged(gateway, "🧩 Open WebUI 后台任务 (tags): 转给任务模型 gpt-4o-mini")


@pytest.mark.parametrize(
    "body",
    [
        # a user who writes a task header without asking for a JSON answer
        {"model": "picgate", "messages": [{"role": "user", "content": "### Task: draw a cat"}]},
        # a task prompt to a model that is not this gateway's image model
        {**PROMPTS["title"], "model": "some-text-model"},
    ],
    ids=["no-json-instructions", "other-model"],
)
def test_chat_not_a_task_for_the_image_model_goes_upstream(
    gateway: Gateway, upstream: StubUpstream, body: dict[str, Any]
) -> None:
    assert post(gateway, body).status_code == 200
    assert upstream.last(CHAT).json["messages"] == body["messages"]


def test_chat_tools_dropped_before_the_image_model(
    gateway: Gateway, upstream: StubUpstream
) -> None:
    body = {
        "model": "picgate",
        "messages": [{"role": "user", "content": "draw a fox"}],
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.5,
    }
    assert post(gateway, body).status_code == 200
    sent = upstream.last(CHAT).json
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(sent)
    assert sent["temperature"] == 0.5
    assert logged(gateway, "🧰 已去掉发给图片模型的 tools, tool_choice, parallel_tool_calls")


@pytest.mark.parametrize(
    ("overrides", "model"),
    [({"drop_tools_for_image_models": False}, "picgate"), ({}, "some-text-model")],
    ids=["setting-off", "other-model"],
)
def test_chat_tools_kept_when_off_or_not_the_image_model(
    start_gateway: Callable[..., Gateway],
    upstream: StubUpstream,
    overrides: dict[str, Any],
    model: str,
) -> None:
    gateway = start_gateway(**overrides)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    assert post(gateway, body).status_code == 200
    assert upstream.last(CHAT).json["tools"] == TOOLS


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-image-1", "b64_json"), ("gpt-image-1-mini", "b64_json"), ("picgate", "url")],
)
def test_generations_response_format_absent_follows_openai_for_the_model(
    gateway: Gateway, upstream: StubUpstream, model: str, expected: str
) -> None:
    resp = httpx.post(
        gateway.url + "/v1/images/generations",
        headers=gateway.headers,
        json={"model": model, "prompt": "a fox"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:300]
    [item] = resp.json()["data"]
    assert set(item) & {"url", "b64_json"} == {expected}
    assert stored_images(gateway) == 1  # stored either way
    assert "response_format" not in upstream.last("/v1/images/generations").json
