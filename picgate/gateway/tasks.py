"""Open WebUI's background tasks sent to an image model, answered without an image call.

Open WebUI asks the chat's model for a title, tags, follow-up suggestions, an image prompt,
search queries and autocompletions, unless its admin sets an external task model. Each is one
user message filled from a template that starts with ``### Task:``, quotes the chat inside
``<chat_history>`` and asks for one JSON object. Sent to an image model, every one of them costs
an image (and stores it). ``recognise`` finds them by that structure, not by one wording (admins
edit the templates): the ``### Task:`` header, the ``<chat_history>`` block, and the key of the
JSON object the instructions ask for, read in the instructions alone (what precedes the quoted
chat; the chat and the user's text after it may hold any JSON).

Then either ``TASK_MODEL`` (a text model at the upstream) answers it, or PicGate answers locally
with a small valid answer in the form Open WebUI parses: a title from the user's first words,
no tags, no follow-ups, no search queries, no completion, and the user's last words as the image
prompt. Never an image call, never a stored image.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from picgate.config import Settings
from picgate.gateway.image_models import is_image_model
from picgate.gateway.images_api import upstream_model
from picgate.routing.table import ModelTable

__all__ = [
    "TASK_KEYS",
    "local_answer",
    "local_completion",
    "local_events",
    "recognise",
    "upstream_chat_model",
]

# the JSON key each task's answer carries → the task's name (for the log)
TASK_KEYS = {
    "title": "title",
    "tags": "tags",
    "follow_ups": "follow_ups",
    "prompt": "image_prompt",
    "queries": "queries",
    "text": "autocomplete",
}
_HEADER = re.compile(r"\A\s*#{1,4}\s*Task\s*:", re.IGNORECASE)
_KEY = re.compile(r"""\{\s*\\?["'](\w+)\\?["']\s*:""")
_HISTORY = re.compile(r"<chat_history>(.*?)</chat_history>", re.DOTALL | re.IGNORECASE)
_TITLE_WORDS = 5


def _prompt_text(body: dict[str, Any]) -> str | None:
    """The text of the last message when it is a user message (string or text parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    if last.get("role") != "user":
        return None
    if isinstance(content, list):
        content = "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return content if isinstance(content, str) else None


def recognise(
    settings: Settings,
    body: dict[str, Any],
    models: ModelTable | None = None,
    *,
    model: Any = None,
) -> str | None:
    """The task (``TASK_KEYS`` value) when ``body`` is an Open WebUI task prompt to an image
    model (``model``, default: the body's; ``is_image_model`` with ``models``); None for
    anything else."""
    if not is_image_model(settings, body.get("model") if model is None else model, models):
        return None
    text = _prompt_text(body)
    if text is None or not _HEADER.match(text):
        return None
    instructions, quoted, _rest = text.partition("<chat_history>")
    if not quoted:
        return None
    if "json" not in instructions.lower():
        return None
    for match in _KEY.finditer(instructions):
        if match.group(1) in TASK_KEYS:
            return TASK_KEYS[match.group(1)]
    return None


def _history_lines(text: str, role: str) -> list[str]:
    """The lines of one role in the quoted chat (``USER: ...`` as Open WebUI writes it)."""
    quoted = _HISTORY.search(text)
    lines = (quoted.group(1) if quoted else "").splitlines()
    prefix = role.upper() + ":"
    return [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]


def _title(words: str) -> str:
    cleaned = re.sub(r"!\[[^\]]*\]\([^)]*\)|https?://\S+|[#*_`>\[\]()\"{}]", " ", words)
    chosen = cleaned.split()[:_TITLE_WORDS]
    if not chosen:
        return "Image"
    title = " ".join(chosen).strip(" ,.;:!?，。；：！？")
    return (title[:1].upper() + title[1:]) if title else "Image"


def local_answer(task: str, body: dict[str, Any]) -> str:
    """The JSON text Open WebUI expects for ``task``, made from the prompt alone."""
    text = _prompt_text(body) or ""
    users = _history_lines(text, "user")
    if task == "title":
        answer: dict[str, Any] = {"title": _title(users[0] if users else "")}
    elif task == "image_prompt":
        answer = {"prompt": users[-1] if users else ""}
    elif task == "autocomplete":
        answer = {"text": ""}
    else:  # tags, follow_ups, queries: an empty list is valid and costs nothing
        answer = {task: []}
    return json.dumps(answer, ensure_ascii=False)


def _base(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    return {
        "id": "chatcmpl-picgate-" + secrets.token_hex(12),
        "created": int(time.time()),
        "model": model if isinstance(model, str) else "",
    }


def local_completion(task: str, body: dict[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` answering ``task``."""
    return {
        **_base(body),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": local_answer(task, body)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def local_events(task: str, body: dict[str, Any]) -> bytes:
    """The same answer as a ``chat.completion.chunk`` event stream, ``[DONE]`` included."""
    base = {**_base(body), "object": "chat.completion.chunk"}
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": local_answer(task, body)}, None),
        ({}, "stop"),
    ]
    events = [
        json.dumps({**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]})
        for d, f in deltas
    ]
    return "".join(f"data: {e}\n\n" for e in [*events, "[DONE]"]).encode()


def upstream_chat_model(settings: Settings, client_model: Any) -> str | None:
    """The upstream model of a chat request: ``TASK_MODEL`` when the client names it (a task
    passed on), else as for every request (``images_api.upstream_model``)."""
    if settings.task_model and client_model == settings.task_model:
        return settings.task_model
    return upstream_model(settings, client_model)
