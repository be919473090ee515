"""Merging the plain text chunks of a stream that arrived in the same network read.

``coalesce`` is pure (events in, events out): the relay calls it on the events of each read, so
the client gets the same text in fewer chunks and nothing waits for more upstream data.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from picgate.gateway.sse import SSEEvent

__all__ = ["coalesce"]

_CHOICE_ENDS = ("finish_reason", "native_finish_reason", "logprobs")
# (the string, the index after its closing quote) from the index after its opening quote; C-fast
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_Plain = tuple[dict[str, Any], dict[str, Any], str]  # (chunk, its shape, the text)
_Run = list[tuple[SSEEvent, dict[str, Any], dict[str, Any], str, "_Template | None"]]
_CONTENT_VALUE = re.compile(r'"content"[ \t\r\n]*:[ \t\r\n]*"')
_PROBE = "picgate\0probe"
_PROBE_JSON = json.dumps(_PROBE)[1:]  # the literal after its opening quote, closing quote kept
_TEMPLATES_MAX = 4  # distinct chunk shapes remembered per network read
_TEMPLATE_TRIES = 8  # template builds attempted per network read (each parses twice)


def _plain_chunk(chunk: Any) -> _Plain | None:
    """(chunk, its shape with the text blanked, the text) for a chunk that only adds content.

    Only such chunks are merged: one choice, no finish reason or logprobs, a delta holding
    ``content`` (and maybe ``role``); the event must also have no ``event``/``id``/comments
    (``_mergeable``).
    """
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if (
        not isinstance(delta, dict)
        or not isinstance(delta.get("content"), str)
        or not set(delta) <= {"content", "role"}
        or any(choice.get(key) is not None for key in _CHOICE_ENDS)
    ):
        return None
    shape = {**chunk, "choices": [{**choice, "delta": {**delta, "content": ""}}]}
    return chunk, shape, delta["content"]


def _mergeable(event: SSEEvent) -> str | None:
    """The JSON payload of an event that may be a plain text chunk (no event/id/comments)."""
    data = event.data
    if (
        data is None
        or event.comments
        or event.event is not None
        or event.id is not None
        or event.lifted  # its tokens must reach the rewriter with it
    ):
        return None
    return data if '"content"' in data else None


TEMPLATE_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Template:
    """The JSON text of a plain text chunk around its ``content`` string literal.

    Chunks of one stream differ only in that literal. A payload that starts with ``prefix``
    (which ends with the literal's opening quote) and ends with ``suffix`` (right after its
    closing quote), with one well-formed string literal between, has the same tokens as the
    chunk the template came from but that one string, so it parses to ``chunk`` with another
    ``content``: decoding the literal alone is enough. ``build`` checks with a probe value that
    the literal is the ``content`` that counts (not a key, not a duplicated key, not another
    field).
    """

    prefix: str
    suffix: str
    chunk: dict[str, Any]
    shape: dict[str, Any]

    @classmethod
    def build(cls, data: str, plain: _Plain) -> _Template | None:
        chunk, shape, text = plain
        if len(data) > TEMPLATE_MAX:
            # a chunk this large is not one of many small deltas worth merging, and scanning
            # its literal again (an image's megabytes) would cost more than it could save
            return None
        for match in itertools.islice(_CONTENT_VALUE.finditer(data), 2):
            try:
                value, end = _scanstring(data, match.end())
            except ValueError:
                continue
            if value != text:
                continue
            prefix, suffix = data[: match.end()], data[end:]
            try:
                probe = _plain_chunk(json.loads(prefix + _PROBE_JSON + suffix))
            except ValueError:
                continue
            if probe is not None and probe[2] == _PROBE and probe[1] == shape:
                return cls(prefix, suffix, chunk, shape)
        return None

    def payload(self, payloads: list[str], texts: list[str]) -> str:
        """This chunk with ``"".join(texts)`` as ``content``, in the upstream's own formatting.

        ``payloads`` are the JSON texts ``texts`` came from (this template matched each). A
        literal without escapes is its text verbatim (same length; an escape always decodes
        shorter), so when no literal had one the joined text is the joined literal. Otherwise
        the text is encoded again: joining escaped literals could pair a surrogate split over
        two chunks into one character.
        """
        text = "".join(texts)
        around = len(self.prefix) + 1 + len(self.suffix)
        if sum(len(payload) - around for payload in payloads) == len(text):
            return self.prefix + text + '"' + self.suffix
        return self.prefix[:-1] + encode_basestring(text) + self.suffix

    def text(self, data: str) -> str | None:
        """The ``content`` of ``data`` when it is this chunk but for that text, else None."""
        start, end = len(self.prefix), len(data) - len(self.suffix)
        if end <= start or not data.startswith(self.prefix) or not data.endswith(self.suffix):
            return None
        try:
            value, stop = _scanstring(data, start)
        except ValueError:
            return None
        return value if stop == end else None


class _PlainTexts:
    """``_plain_chunk`` of the events of one network read, reusing learnt ``_Template``s."""

    def __init__(self) -> None:
        self._templates: list[_Template] = []
        self._tries = _TEMPLATE_TRIES

    def __call__(self, event: SSEEvent) -> tuple[_Plain, _Template | None] | None:
        """The plain text chunk of ``event`` (or None) and the template its text matched."""
        data = _mergeable(event)
        if data is None:
            return None
        for template in self._templates:
            text = template.text(data)
            if text is not None:
                return (template.chunk, template.shape, text), template
        try:
            plain = _plain_chunk(json.loads(data))
        except ValueError:
            return None
        if plain is None or not self._tries or len(self._templates) >= _TEMPLATES_MAX:
            return None if plain is None else (plain, None)
        self._tries -= 1
        built = _Template.build(data, plain)
        if built is None:
            return plain, None
        self._templates.append(built)
        return (built.chunk, built.shape, plain[2]), built


def coalesce(events: list[SSEEvent]) -> list[SSEEvent]:
    """Merge runs of plain text chunks that arrived together into one chunk each.

    The upstream sent them in the same network read, so nothing waits: the client gets the same
    text, in fewer chunks. It keeps the relay linear and cheap when an image comes as thousands
    of small chunks (each one would otherwise be parsed, rewritten and sent on its own): after
    the first chunk of a shape, the next ones are recognised by their JSON text around the
    ``content`` string (``_Template``) without parsing them whole.
    """
    if len(events) < 2:
        return events
    out: list[SSEEvent] = []
    run: _Run = []
    plain_text = _PlainTexts()

    def close_run() -> None:
        template = run[0][4] if run else None
        if len(run) == 1:
            out.append(run[0][0])
        elif template is not None and all(entry[4] is template for entry in run):
            payloads = [entry[0].data or "" for entry in run]
            out.append(SSEEvent(data=template.payload(payloads, [entry[3] for entry in run])))
        elif run:
            chunk, texts = run[0][1], [entry[3] for entry in run]
            choice = chunk["choices"][0]
            merged = {**chunk, "choices": [{**choice, "delta": {**choice["delta"]}}]}
            merged["choices"][0]["delta"]["content"] = "".join(texts)
            out.append(SSEEvent(data=json.dumps(merged, ensure_ascii=False, separators=(",", ":"))))
        run.clear()

    for event in events:
        found = plain_text(event)
        if found is None:
            close_run()
            out.append(event)
            continue
        plain, template = found
        if run and run[0][2] is not plain[1] and run[0][2] != plain[1]:
            close_run()
        run.append((event, *plain, template))
    close_run()
    return out
