"""JSON answers with base64 spliced in as bytes, and the canonical-base64 check that lets a
``b64_json`` reply hand the upstream's own text back."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from starlette.responses import JSONResponse

from picgate.gateway.spliced_json import SplicedJson, SplicedJsonResponse
from picgate.storage.incoming import canonical_base64


def test_spliced_json_render_is_byte_identical_to_json_response() -> None:
    blobs = [base64.b64encode(os.urandom(n)) for n in (0, 1, 2, 3, 300_001)]
    answer = SplicedJson({"created": 1, "usage": {"total": 3}})
    data: list[dict[str, Any]] = []
    for index, blob in enumerate(blobs):
        data.append({"b64_json": answer.blob(blob), "revised_prompt": f'a "café" \\ {index}'})
    answer.content["data"] = data
    plain = {
        "created": 1,
        "usage": {"total": 3},
        "data": [
            {"b64_json": blob.decode(), "revised_prompt": f'a "café" \\ {index}'}
            for index, blob in enumerate(blobs)
        ],
    }
    assert b"".join(answer.render()) == JSONResponse(plain).body


def test_spliced_json_blob_bytes_are_not_copied() -> None:
    blob = base64.b64encode(os.urandom(3000))
    answer = SplicedJson({"data": [{"b64_json": ""}]})
    answer.content["data"][0]["b64_json"] = answer.blob(blob)
    assert any(piece is blob for piece in answer.render())


def test_spliced_json_lost_placeholder_is_an_error() -> None:
    answer = SplicedJson({"data": []})
    answer.blob(b"QUJD")
    with pytest.raises(ValueError, match="placeholder"):
        answer.render()


def test_spliced_json_response_sets_length_and_type() -> None:
    response = SplicedJsonResponse([b'{"a":"', b"QUJD", b'"}'])
    assert response.headers["content-length"] == "12"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 1000, 1001, 1002])
def test_canonical_base64_standard_encoding_is_canonical(size: int) -> None:
    data = os.urandom(size)
    assert canonical_base64(base64.b64encode(data), data)


def test_canonical_base64_refuses_other_spellings_of_the_same_bytes() -> None:
    data = b"abcd"
    text = base64.b64encode(data)  # YWJjZA==
    assert not canonical_base64(b"YWJjZB==", data)  # stray bits after the last byte
    assert not canonical_base64(text.rstrip(b"="), data)  # padding left out
    assert not canonical_base64(text + b"====", data)
