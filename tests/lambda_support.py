"""Lambda events for tests: the captured shapes in ``tests/events/``, a fake context, and the
helpers that turn a handler's answer back into status, headers and bytes.

    event = http_event("function_url_get.json", path="/images/abc.png")
    answer = handler.handler(event, FakeContext())
    body = response_body(answer)

``http_event`` keeps everything the captured event holds (request context, trace headers...)
and fills in the method, path, query, headers and body the way that event type carries them:
payload 2.0 (function URLs, HTTP APIs) in ``rawPath``/``requestContext.http``/``cookies``,
REST v1 in ``path``/``httpMethod``/``multiValueHeaders``. Bodies go in base64, as AWS sends
anything that is not plain text.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

EVENTS = Path(__file__).resolve().parent / "events"


def load_event(name: str) -> dict[str, Any]:
    """A captured event from ``tests/events`` (a fresh copy, without its ``_note``)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    event.pop("_note", None)
    return event


def http_event(
    name: str,
    *,
    method: str = "GET",
    path: str = "/health",
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    """The captured event ``name`` carrying this request."""
    event = copy.deepcopy(load_event(name))
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    if body is not None:
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        extra.setdefault("content-length", str(len(body)))
    else:
        event["body"] = None if "resource" in event else ""
        event["isBase64Encoded"] = False
        event.get("headers", {}).pop("content-type", None)
    if event.get("version") == "2.0":
        event["rawPath"] = path
        event["rawQueryString"] = query
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["requestContext"]["requestId"] = str(uuid.uuid4())
        event["headers"].update(extra)
        if cookies:
            event["cookies"] = cookies
    else:
        event["path"] = path
        event["httpMethod"] = method
        event["requestContext"]["httpMethod"] = method
        event["requestContext"]["requestId"] = str(uuid.uuid4())
        params = parse_qs(query, keep_blank_values=True)
        event["queryStringParameters"] = {k: v[-1] for k, v in params.items()} or None
        event["multiValueQueryStringParameters"] = params or None
        if cookies:
            extra["cookie"] = "; ".join(cookies)
        for key, value in extra.items():
            event["headers"][key] = value
            event["multiValueHeaders"][key] = [value]
    return event


@dataclass
class FakeContext:
    """The attributes of Lambda's context object that code may read."""

    function_name: str = "picgate-test-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/picgate-test-api"
    log_stream_name: str = "2026/11/27/[$LATEST]0123456789abcdef"
    remaining_millis: int = 300_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


def response_body(answer: dict[str, Any]) -> bytes:
    """The response's bytes, decoding base64 when the answer says it is base64."""
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        return base64.b64decode(body)
    return str(body).encode()


def response_headers(answer: dict[str, Any]) -> dict[str, str]:
    """Lower-cased headers of a v1 or v2 answer (v1's multi-value headers joined)."""
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ", ".join(values)
    return headers


def response_cookies(answer: dict[str, Any]) -> list[str]:
    """``Set-Cookie`` values: payload 2.0 answers list them in ``cookies``."""
    cookies = list(answer.get("cookies") or [])
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        if key.lower() == "set-cookie":
            cookies.extend(values)
    single = (answer.get("headers") or {}).get("set-cookie")
    if single:
        cookies.append(single)
    return cookies
