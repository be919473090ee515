"""Attribution from untrusted request text, and the daily limit's reset time."""

from __future__ import annotations

from datetime import datetime

from picgate.attribution import MAX_CHARS, Attribution, clean_text
from picgate.gateway.daily_limit import next_reset


def test_clean_text_drops_controls_bidi_and_caps() -> None:
    assert clean_text("a\x00b\u202ec\u200bd") == "abcd"
    assert clean_text("x" * 500) == "x" * MAX_CHARS
    assert clean_text("   ") is None
    assert clean_text(42) is None


def test_clean_text_quoted_unquotes_utf8() -> None:
    assert clean_text("%E5%BC%A0%E4%B8%89", quoted=True) == "张三"


def test_attribution_forwarded_user_wins_over_body_user() -> None:
    who = Attribution.from_headers({"x-openwebui-user-id": "u1"}, key_name="env")
    assert who.with_body({"user": "u2", "model": "m"}).user_id == "u1"
    assert who.limit_subject() == ("user", "u1")


def test_attribution_without_forwarded_user_limits_the_key() -> None:
    who = Attribution.from_headers({}, key_name="env").with_body({"user": "u2"})
    assert who.user_id == "u2"
    assert who.limit_subject() == ("key", "env")


def test_next_reset_is_the_next_utc_midnight() -> None:
    assert next_reset(datetime(2026, 2, 28, 23, 59, 59)) == datetime(2026, 3, 1)
    assert next_reset(datetime(2026, 3, 1, 0, 0, 0)) == datetime(2026, 3, 2)


def test_attribution_origin_fills_every_attribution_column() -> None:
    headers = {
        "x-openwebui-user-id": "u1",
        "x-openwebui-user-name": "%E5%BC%A0",
        "x-openwebui-chat-id": "c1",
        "x-openwebui-message-id": "m1",
    }
    who = Attribution.from_headers(headers, key_name="env").with_body({"model": "gpt-image-1"})
    assert who.origin("generations", "a fox").columns() == {
        "source": "generations",
        "prompt": "a fox",
        "user_id": "u1",
        "user_name": "张",
        "chat_id": "c1",
        "message_id": "m1",
        "model": "gpt-image-1",
        "key_name": "env",
    }
