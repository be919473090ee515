"""Schema fuzzing: schemathesis drives PicGate's own ``/openapi.json`` over a real socket.

For every operation under ``/v1``, ``/images``, ``/health`` (with the gateway key) and the admin
JSON API (with a session and its CSRF token), schemathesis generates schema-conforming and
schema-violating requests. Whatever it sends, PicGate must answer below 500, and every error must
be OpenAI's shape. The numbers of examples are small so the suite stays fast; a longer CLI run is
recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import Gateway
from tests.robustness.sessions import admin_session

EXAMPLES = 12
GATEWAY_PATHS = r"^/(v1/|images/|health$)"
ADMIN_PATHS = r"^/admin/api/"

# /v1/chat/completions reads the raw body, so FastAPI publishes no schema for it; describe the
# part that matters to the fuzzer (messages, stream) and let every other field pass through.
CHAT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string"},
                    "stream": {"type": "boolean"},
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"enum": ["system", "user", "assistant"]},
                                "content": {
                                    "oneOf": [
                                        {"type": "string"},
                                        {"type": "array", "items": {"type": "object"}},
                                    ]
                                },
                            },
                        },
                    },
                },
                "additionalProperties": True,
            }
        }
    },
}


def load_schema(gateway: Gateway) -> dict[str, Any]:
    raw: dict[str, Any] = httpx.get(gateway.url + "/openapi.json").json()
    chat = raw["paths"].get("/v1/chat/completions", {}).get("post")
    if chat is not None and "requestBody" not in chat:
        chat["requestBody"] = CHAT_BODY
    return raw


def assert_error_shape(response: Any, where: str) -> None:
    """No 5xx of PicGate's own, and every error is ``{"error": {"message", "type", "param",
    "code"}}``. A 5xx of type ``upstream_error`` is the stub upstream failing on fuzzed input
    that PicGate passed on (its status is kept by design), not a PicGate fault."""
    if response.status_code < 400 or response.request.method == "HEAD":
        assert response.status_code < 500, f"{where}: {response.status_code}"
        return
    body = json.loads(response.content)
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, f"{where}: {body}"
    assert isinstance(error["message"], str) and error["message"], where
    if response.status_code >= 500:
        assert error["type"] == "upstream_error", f"{where}: {response.status_code} {body}"


def fuzz(
    raw: dict[str, Any],
    path_regex: str,
    call: Callable[[Any], Any],
    *,
    examples: int = EXAMPLES,
) -> list[str]:
    """Run every matching operation in both generation modes; returns the operations covered."""
    schema = schemathesis.openapi.from_dict(raw).include(path_regex=path_regex)
    covered = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here, as it should
        covered.append(f"{operation.method.upper()} {operation.path}")
        modes = [GenerationMode.POSITIVE]
        if operation.body:
            # path and query values are strings on the wire: only bodies have a wrong shape
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                call(case)

            try:
                run()
            except Unsatisfiable:
                # nothing in this operation can be made invalid (no body, no parameters)
                assert mode is GenerationMode.NEGATIVE, covered[-1]
    return covered


def test_schema_fuzz_gateway_routes_no_5xx_and_openai_errors(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(public_base_url="http://127.0.0.1:9")
    raw = load_schema(gateway)

    def call(case: Any) -> None:
        response = case.call(base_url=gateway.url, headers=gateway.headers, timeout=30)
        assert_error_shape(response, f"{case.method} {case.formatted_path}")

    covered = fuzz(raw, GATEWAY_PATHS, call)
    assert {"POST /v1/images/generations", "POST /v1/images/edits", "GET /health"} <= set(covered)
    assert "POST /v1/chat/completions" in covered or "chat" not in json.dumps(raw["paths"])


def test_schema_fuzz_without_key_every_v1_route_is_401(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    raw = load_schema(gateway)

    def call(case: Any) -> None:
        response = case.call(base_url=gateway.url, timeout=30)
        assert response.status_code == 401, f"{case.method} {case.formatted_path}"
        assert_error_shape(response, case.formatted_path)

    assert fuzz(raw, r"^/v1/", call, examples=4)


def test_schema_fuzz_admin_api_no_5xx_and_openai_errors(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    token, csrf = admin_session(gateway)
    # the public /openapi.json leaves the console out; an admin gets the whole schema
    raw = httpx.get(
        gateway.url + "/admin/api/openapi.json", cookies={"picgate_session": token}
    ).json()
    if not any(path.startswith("/admin/api/") for path in raw["paths"]):
        pytest.skip("the admin JSON API is not mounted")

    def call(case: Any) -> None:
        response = case.call(
            base_url=gateway.url,
            headers={"X-CSRF-Token": csrf},
            cookies={"picgate_session": token},
            timeout=30,
        )
        assert_error_shape(response, f"{case.method} {case.formatted_path}")

    covered = fuzz(raw, ADMIN_PATHS, call, examples=8)
    assert "PUT /admin/api/settings" in covered
    # the fuzzer may have written settings; the gateway key is pinned by the environment
    assert httpx.get(gateway.url + "/v1/models", headers=gateway.headers).status_code == 200
