"""Parsing a client's JSON body into something that can always be sent on as JSON.

Python's ``json`` accepts more than JSON and more than PicGate can forward: ``NaN`` and
``Infinity`` (and ``1e999``, which becomes infinity) cannot be encoded again for the upstream;
a lone surrogate (``"\\ud800"``, or its UTF-8 bytes ``ED A0 80``) cannot be encoded as UTF-8;
nesting deep enough exhausts the parser's recursion (and any later walk over the body). Each of
these is a 400 ``invalid_json`` naming the problem, before any work is done.

The check is one iterative pass over the parsed body; strings that are pure ASCII (base64 images
included) cost O(1), as CPython knows that about every string already.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from picgate.errors import BadRequest

__all__ = ["MAX_DEPTH", "parse_json_object"]

MAX_DEPTH = 128
"""Deepest nesting of arrays and objects accepted (tool schemas stay far below it)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_json")


def _no_constants(name: str) -> Any:
    raise _invalid(f"The request body is not valid JSON: {name} is not a JSON number.")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; BadRequest (``invalid_json``) for anything else."""
    if not raw.strip():
        raise _invalid("The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except RecursionError as exc:
        raise _nested_too_deeply() from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise _invalid(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    check_sendable(body)
    return body


def _nested_too_deeply() -> BadRequest:
    return _invalid(
        f"The request body is nested too deeply (more than {MAX_DEPTH} levels of arrays and "
        "objects)."
    )


def _check_text(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text) is not None:
        raise _invalid(
            "The request body holds a lone surrogate (a \\ud800-\\udfff escape or its UTF-8 "
            "bytes that is not half of a pair); it is not valid Unicode text."
        )


def check_sendable(value: Any) -> None:
    """BadRequest when ``value`` nests too deeply, holds a lone surrogate or a non-finite float."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _invalid(
                    "The request body is not valid JSON: a number is too large to be a "
                    "finite float."
                )
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise _nested_too_deeply()
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
