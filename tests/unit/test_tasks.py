"""Recognising Open WebUI's background task prompts by their structure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from picgate.config import Settings
from picgate.gateway.tasks import local_answer, recognise, upstream_chat_model

SETTINGS = Settings(gateway_model_name="picgate", upstream_model_name="gpt-image-1")


def body(text: str, model: str = "picgate") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_recognise_edited_wording_same_structure_found() -> None:
    text = (
        "### Task:\nName this conversation in a few words.\n### Output:\n"
        'Reply with JSON only: {"title": "..."}\n<chat_history>\nUSER: hi\n</chat_history>'
    )
    assert recognise(SETTINGS, body(text)) == "title"


def test_recognise_json_inside_the_quoted_chat_is_not_the_task() -> None:
    text = (
        '### Task:\nGenerate tags.\n### Output:\nJSON format: { "tags": ["a"] }\n'
        '<chat_history>\nUSER: {"title": "x", "prompt": "y"}\n</chat_history>'
    )
    assert recognise(SETTINGS, body(text)) == "tags"


@pytest.mark.parametrize(
    "text",
    [
        "draw a cat",
        "### Task: draw a cat",
        '### Task:\nJSON { "title": "x" } but no quoted chat',
        '<chat_history>USER: x</chat_history> { "title": "x" } without the header',
        '### Task:\n{ "colour": "red" } JSON\n<chat_history>\nUSER: x\n</chat_history>',
    ],
)
def test_recognise_other_prompts_none(text: str) -> None:
    assert recognise(SETTINGS, body(text)) is None


def test_recognise_only_for_the_image_model() -> None:
    text = '### Task:\nJSON: { "title": "t" }\n<chat_history>\nUSER: x\n</chat_history>'
    assert recognise(SETTINGS, body(text, model="gpt-4o")) is None


def test_local_answer_title_from_first_user_words_without_markup() -> None:
    text = (
        '### Task:\nJSON: { "title": "t" }\n<chat_history>\n'
        "USER: **Paint** a lighthouse at dusk, in oils please\nASSISTANT: ![image](http://x/a.png)\n"
        "</chat_history>"
    )
    assert json.loads(local_answer("title", body(text))) == {"title": "Paint a lighthouse at dusk"}


def test_upstream_chat_model_task_model_named_goes_as_is() -> None:
    settings = Settings(upstream_model_name="gpt-image-1", task_model="gpt-4o-mini")
    assert upstream_chat_model(settings, "gpt-4o-mini") == "gpt-4o-mini"
    assert upstream_chat_model(settings, "picgate") == "gpt-image-1"
