"""coalesce: runs of plain text chunks merge into one; the template fast path and its fallbacks."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from picgate.gateway.coalesce import coalesce
from picgate.gateway.sse import SSEEvent

META = {"id": "chatcmpl-c", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk(content: Any, **delta_extra: Any) -> dict[str, Any]:
    return {**META, "choices": [{"index": 0, "delta": {**delta_extra, "content": content}}]}


def events(*chunks: dict[str, Any], **dumps: Any) -> list[SSEEvent]:
    return [SSEEvent(data=json.dumps(c, **dumps)) for c in chunks]


def reference(evs: list[SSEEvent]) -> list[Any]:
    """What coalesce must give, parsed: each run of same-shape plain chunks as one chunk."""
    out: list[Any] = []
    shape: Any = None
    for event in evs:
        parsed = json.loads(event.data or "")
        choice = parsed["choices"][0] if len(parsed.get("choices", [])) == 1 else {}
        delta = choice.get("delta", {})
        plain = (
            not event.comments
            and event.id is None
            and isinstance(delta.get("content"), str)
            and set(delta) <= {"content", "role"}
            and choice.get("finish_reason") is None
        )
        this = json.dumps({**parsed, "choices": [{**choice, "delta": {**delta, "content": ""}}]})
        if plain and shape == this:
            out[-1]["choices"][0]["delta"]["content"] += delta["content"]
        else:
            out.append(parsed)
        shape = this if plain else None
    return out


def parsed(evs: list[SSEEvent]) -> list[Any]:
    return [json.loads(event.data or "") for event in evs]


def test_coalesce_same_shape_run_keeps_upstream_formatting() -> None:
    evs = events(chunk("a"), chunk("b/c"), chunk("你好"))

    out = coalesce(evs)

    assert [e.data for e in out] == [json.dumps(chunk("ab/c你好"), ensure_ascii=False)]


def test_coalesce_escaped_literals_reencoded_text_unchanged() -> None:
    evs = events(chunk('a"b\\'), chunk("\n\t"), chunk("é"))  # ensure_ascii: "\u00e9"

    out = coalesce(evs)

    assert parsed(out) == [chunk('a"b\\\n\té')]


def test_coalesce_surrogate_pair_split_over_chunks_stays_two_code_points() -> None:
    evs = [SSEEvent(data=e.data.replace("XX", "\\ud83d")) for e in events(chunk("XX"))]  # type: ignore[union-attr]
    evs += [SSEEvent(data=e.data.replace("YY", "\\ude00")) for e in events(chunk("YY"))]  # type: ignore[union-attr]

    out = coalesce(evs)

    assert parsed(out) == [chunk("\ud83d\ude00")]
    assert len(parsed(out)[0]["choices"][0]["delta"]["content"]) == 2


def test_coalesce_shape_change_closes_run_and_role_chunk_merges_alone() -> None:
    evs = events(chunk("a", role="assistant"), chunk("b", role="assistant"), chunk("c"), chunk("d"))

    assert parsed(coalesce(evs)) == [chunk("ab", role="assistant"), chunk("cd")]


def test_coalesce_duplicate_content_key_falls_back_to_full_parse() -> None:
    # the first "content" literal equals the text but is not the value that counts (the last
    # duplicate is): the probe refuses it as a template, and the result is the same
    dup = '{"choices": [{"index": 0, "delta": {"content": "%s", "content": "%s"}}]}'
    evs = [SSEEvent(data=dup % ("a", "a")), SSEEvent(data=dup % ("z", "b"))]
    evs += [SSEEvent(data=dup % ("a", "a")), SSEEvent(data=dup % ("z", "a"))]

    assert parsed(coalesce(evs)) == [{"choices": [{"index": 0, "delta": {"content": "abaa"}}]}]


def test_coalesce_other_content_field_before_delta_falls_back() -> None:
    first = {"extra": {"content": "a"}, **chunk("a")}
    second = {"extra": {"content": "q"}, **chunk("a")}

    assert parsed(coalesce(events(first, second))) == [first, second]  # two shapes: no merge


def test_coalesce_content_key_inside_other_string_falls_back() -> None:
    odd = {**chunk("a"), "id": '"content": "a'}
    evs = events(odd, {**odd, "choices": chunk("b")["choices"]})

    assert parsed(coalesce(evs)) == [{**odd, "choices": chunk("ab")["choices"]}]


def test_coalesce_payload_not_matching_template_parsed_whole() -> None:
    good = events(chunk("a"))[0].data or ""
    broken = good.replace('"a"', '"b" "c"')  # prefix and suffix match, the literal does not
    extra = good.replace('"a"', '"b", "role": "assistant"')
    evs = [SSEEvent(data=good), SSEEvent(data=broken), SSEEvent(data=good), SSEEvent(data=extra)]

    out = coalesce(evs)

    assert out[1].data == broken
    assert parsed([out[0], out[2], out[3]]) == [
        chunk("a"),
        chunk("a"),
        chunk("b", role="assistant"),
    ]


def test_coalesce_finish_usage_done_comments_and_ids_pass_unchanged() -> None:
    finish = {**META, "choices": [{"index": 0, "delta": {"content": "z"}, "finish_reason": "stop"}]}
    usage = {**META, "choices": [], "usage": {"total_tokens": 3}}
    evs = events(chunk("a"), chunk("b"), finish, chunk("c"), usage)
    evs += [
        SSEEvent(data=evs[0].data, id="7"),
        SSEEvent(data=evs[0].data, comments=["x"]),
        SSEEvent(data="[DONE]"),
    ]

    out = coalesce(evs)

    assert out[1:] == evs[2:]
    assert parsed(out[:1]) == [chunk("ab")]


_text = st.text(st.characters(codec="utf-8") | st.sampled_from(['"', "\\", "\ud83d", "\ude00"]))
_chunk = st.one_of(
    st.builds(chunk, _text),
    st.builds(lambda t: chunk(t, role="assistant"), _text),
    st.builds(lambda t: {**chunk(t), "choices": [{"index": 1, "delta": {"content": t}}]}, _text),
    st.builds(lambda t: {**chunk(t), "system_fingerprint": t}, _text),
    st.just({**META, "choices": [], "usage": {"total_tokens": 1}}),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_chunk, max_size=12), st.booleans(), st.booleans())
def test_coalesce_any_chunks_equal_reference_merge(
    chunks: list[dict[str, Any]], ascii_only: bool, compact: bool
) -> None:
    separators = (",", ":") if compact else None
    evs = events(*chunks, ensure_ascii=ascii_only, separators=separators)

    assert parsed(coalesce(evs)) == reference(evs)
