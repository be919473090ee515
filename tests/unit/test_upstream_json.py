"""parse_json: the fast path for multi-MB base64 strings gives exactly what json.loads gives."""

from __future__ import annotations

import json
import os

import pybase64
import pytest

from picgate.gateway.upstream import LONG_STRING, parse_json

B64 = pybase64.b64encode(os.urandom(LONG_STRING)).decode("ascii")  # longer than LONG_STRING


@pytest.mark.parametrize(
    "doc",
    [
        {"created": 1, "data": [{"b64_json": B64, "revised_prompt": 'say "hi" \\ \\"'}]},
        {
            "data": [
                {"b64_json": B64},
                {"b64_json": B64[:-4]},
                {"url": "data:image/png;base64," + B64},
            ]
        },
        {B64: [B64, {"k\\": B64}], "n": [1, 2.5, None, True], "t": "\u4e2d\u6587 \U0001f4f7"},
        {"long_not_b64": 'x\n\t"' * LONG_STRING, "b": B64 + "A"},
        [B64, "\\", "\\\\", '\\"', B64],
    ],
)
def test_parse_json_long_base64_strings_equals_json_loads(doc: object) -> None:
    for body in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False, indent=1).encode()):
        assert parse_json(body) == json.loads(body)


def test_parse_json_placeholder_text_in_answer_is_kept() -> None:
    doc = {"a": B64, "b": "pg0000000000000000n0"}
    body = json.dumps(doc).encode()
    assert parse_json(body) == doc


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"b64_json": "' + B64.encode() + b'"}',
        b'{"data": [{"b64_json": "' + B64.encode(),
        b'{"a": x"' + B64.encode() + b'"}',
        b'["' + B64.encode() + b'" "' + B64.encode() + b'"]',
        b'{"a": "\x01' + B64.encode() + b'"}',
    ],
)
def test_parse_json_broken_body_raises_like_json(body: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(body)
    with pytest.raises(ValueError) as got:
        parse_json(body)
    assert str(got.value) == str(expected.value)
