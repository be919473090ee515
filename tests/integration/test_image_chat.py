"""An image-only model (``api: images``) in a chat, through the openai SDK against PicGate on
loopback: turn 1 generates, turn 2 ("make it blue") edits the first image; streamed and not."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import Gateway
from tests.support.images import make_image
from tests.support.models_file import KEY_A, KEY_B, models_file, second_upstream_server, upstream_b
from tests.support.upstream import StubUpstream

__all__ = ["models_file", "second_upstream_server", "upstream_b"]  # fixtures used here

IMAGE_LINK = re.compile(r"!\[image\]\((http://127\.0\.0\.1:\d+/images/[A-Za-z0-9_-]+\.png)\)")


@pytest.fixture
def routed_gateway(start_gateway: Callable[..., Gateway], models_file: Path) -> Gateway:
    return start_gateway(models_file=models_file)


@pytest.fixture
def client(routed_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=routed_gateway.url + "/v1", api_key=routed_gateway.key, max_retries=0
    )


def _ask(client: openai.OpenAI, messages: Any, *, stream: bool) -> str:
    if not stream:
        answer = client.chat.completions.create(model="painter", messages=messages)
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None and answer.usage.total_tokens == 100
        return answer.choices[0].message.content or ""
    text = ""
    finishes = []
    for chunk in client.chat.completions.create(model="painter", messages=messages, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finishes.append(choice.finish_reason)
    assert finishes[-1] == "stop"
    return text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_image_chat_first_turn_generates_second_turn_edits_the_first_image(
    client: openai.OpenAI,
    routed_gateway: Gateway,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
    stream: bool,
) -> None:
    first_image = make_image("PNG", 20_000, seed=1)
    upstream.image = first_image
    messages: list[dict[str, Any]] = [{"role": "user", "content": "a red cat on a sofa"}]
    content = _ask(client, messages, stream=stream)
    link = IMAGE_LINK.fullmatch(content)
    assert link, content
    assert httpx.get(link.group(1)).content == first_image
    generated = upstream.last("/v1/images/generations")
    assert generated.json["prompt"] == "a red cat on a sofa"
    assert generated.json["model"] == "gpt-image-1"
    # options from the model's params only; response_format not sent to gpt-image
    assert (generated.json["size"], generated.json["quality"]) == ("256x256", "low")
    assert "response_format" not in generated.json
    assert generated.headers["authorization"] == f"Bearer {KEY_A}"

    upstream.image = make_image("PNG", 20_000, seed=2)
    messages += [
        {"role": "assistant", "content": content},
        {"role": "user", "content": "make it blue"},
    ]
    second = _ask(client, messages, stream=stream)
    assert IMAGE_LINK.fullmatch(second), second
    edited = upstream.last("/v1/images/edits")
    assert edited.form["prompt"] == ["make it blue"]
    assert edited.form["model"] == ["gpt-image-1"]
    assert edited.form["size"] == ["256x256"]
    assert edited.form["image"][0][1] == first_image
    assert edited.form["image"][0][2] == "image/png"
    assert upstream_b.requests == []


def test_image_chat_user_attached_image_is_edited(
    client: openai.OpenAI, upstream: StubUpstream
) -> None:
    import base64

    attached = make_image("PNG", 5_000, seed=7)
    url = "data:image/png;base64," + base64.b64encode(attached).decode()
    content = _ask(
        client,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "add a hat"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        stream=False,
    )
    assert IMAGE_LINK.fullmatch(content)
    assert upstream.last("/v1/images/edits").form["image"][0][1] == attached


def test_image_chat_without_prompt_is_400(client: openai.OpenAI, upstream: StubUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="painter", messages=[{"role": "user", "content": "  "}]
        )
    assert caught.value.code == "missing_prompt"
    assert upstream.requests == []


def test_image_chat_stream_sends_keepalives_while_the_upstream_draws(
    start_gateway: Callable[..., Gateway], models_file: Path, upstream: StubUpstream
) -> None:
    gateway = start_gateway(models_file=models_file, stream_keepalive_seconds=0.05)
    default = upstream.handlers["/v1/images/generations"]
    drawn = asyncio.Event()

    async def slow(request: Request) -> Response:
        # long enough for several keep-alive intervals; not a timing assertion
        await asyncio.sleep(0.5)
        drawn.set()
        return await default(request)

    upstream.handlers["/v1/images/generations"] = slow
    lines: list[str] = []
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers=gateway.headers,
        json={"model": "painter", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[0].startswith(":")
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert "![image](" in data[0]
    assert '"finish_reason":"stop"' in data[1].replace(" ", "")


def test_image_chat_upstream_refusal_keeps_its_status(
    client: openai.OpenAI, upstream: StubUpstream
) -> None:
    from starlette.responses import JSONResponse

    async def refuse(request: Request) -> Response:
        return JSONResponse(
            {"error": {"message": "safety system", "code": "moderation_blocked"}}, status_code=400
        )

    upstream.handlers["/v1/images/generations"] = refuse
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="painter", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.code == "moderation_blocked"


TASK_PROMPTS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "openwebui" / "task_prompts.json").read_text()
)["prompts"]


def test_image_chat_openwebui_task_to_an_image_model_is_never_drawn(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
) -> None:
    # the images model is the gateway's own name, so Open WebUI's task steps apply to it
    local = start_gateway(models_file=models_file, gateway_model_name="painter")
    answered = httpx.post(
        local.url + "/v1/chat/completions",
        headers=local.headers,
        json={**TASK_PROMPTS["title"], "model": "painter"},
        timeout=30,
    )
    assert answered.status_code == 200, answered.text[:300]
    assert "title" in json.loads(answered.json()["choices"][0]["message"]["content"])
    assert upstream.requests == [] and upstream_b.requests == []

    async def text_answer(request: Request) -> Response:
        from starlette.responses import JSONResponse

        message = {"role": "assistant", "content": '{"tags": ["Art"]}'}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    upstream.handlers["/v1/chat/completions"] = text_answer
    passed = start_gateway(
        models_file=models_file, gateway_model_name="painter", task_model="gpt-4o-mini"
    )
    resp = httpx.post(
        passed.url + "/v1/chat/completions",
        headers=passed.headers,
        json={**TASK_PROMPTS["tags"], "model": "painter"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text[:300]
    assert json.loads(resp.json()["choices"][0]["message"]["content"]) == {"tags": ["Art"]}
    # a chat call to the model's own upstream with its own key, no image call, no params
    [sent] = upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-4o-mini"
    assert "size" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {KEY_A}"
    assert upstream_b.requests == []


def test_image_chat_task_model_listed_in_models_file_goes_to_its_own_upstream(
    start_gateway: Callable[..., Gateway],
    models_file: Path,
    upstream: StubUpstream,
    upstream_b: StubUpstream,
) -> None:
    async def text_answer(request: Request) -> Response:
        from starlette.responses import JSONResponse

        message = {"role": "assistant", "content": '{"title": "Cats"}'}
        return JSONResponse(
            {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1,
                "model": "gemini-image",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    upstream_b.handlers["/v1/chat/completions"] = text_answer
    # TASK_MODEL names the file's chat model on the other upstream: routed like any request
    gateway = start_gateway(
        models_file=models_file, gateway_model_name="painter", task_model="talker"
    )
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=gateway.headers,
        json={**TASK_PROMPTS["title"], "model": "painter"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text[:300]
    assert json.loads(resp.json()["choices"][0]["message"]["content"]) == {"title": "Cats"}
    [sent] = upstream_b.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gemini-image"  # the entry's upstream model
    assert sent.headers["authorization"] == f"Bearer {KEY_B}"
    assert upstream.requests == []  # the image model's upstream never hears of it
