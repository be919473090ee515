"""Redactor: every configured secret is removed, whatever it looks like, wherever it stands."""

from __future__ import annotations

from picgate.config import Settings
from picgate.errors import UpstreamError
from picgate.redaction import MASK, Redactor

UPSTREAM = "AIzaSyD-not-an-sk-key-4f9c2b"  # no sk- prefix: the old pattern did not know it
R2_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
R2_SECRET = "Zm9vYmFyYmF6cXV4/secret+value=="
GATEWAY = "pg-gateway-key-abcdef123456"


def settings() -> Settings:
    return Settings(
        upstream_api_key=UPSTREAM,
        r2_access_key_id=R2_ID,
        r2_secret_access_key=R2_SECRET,
        gateway_api_key=GATEWAY,
    )


def test_redactor_text_every_secret_replaced() -> None:
    redactor = Redactor.of(settings())
    text = f"Incorrect API key provided: {UPSTREAM}. id={R2_ID} s={R2_SECRET} g=Bearer {GATEWAY}"
    out = redactor.text(text)
    for secret in (UPSTREAM, R2_ID, R2_SECRET, GATEWAY):
        assert secret not in out
    assert out == f"Incorrect API key provided: {MASK}. id={MASK} s={MASK} g=Bearer {MASK}"


def test_redactor_short_values_and_unset_left_alone() -> None:
    redactor = Redactor(["abc", None, ""])
    assert not redactor
    assert redactor.text("abc abc") == "abc abc"


def test_redactor_error_message_extra_and_str_scrubbed() -> None:
    error = UpstreamError(
        f"bad key {UPSTREAM}",
        extra={"metadata": {"headers": {"authorization": f"Bearer {UPSTREAM}"}}},
    )
    Redactor.of(settings()).error(error)
    assert UPSTREAM not in str(error.to_dict())
    assert UPSTREAM not in str(error)
    assert error.to_dict()["error"]["metadata"]["headers"]["authorization"] == f"Bearer {MASK}"


def test_redactor_longest_secret_first_when_one_contains_another() -> None:
    redactor = Redactor(["secret-value", "secret-value-longer"])
    assert redactor.text("x secret-value-longer y") == f"x {MASK} y"
