"""Redactor: every configured secret is removed, whatever it looks like, wherever it stands."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

from picgate.config import Settings
from picgate.errors import UpstreamError
from picgate.redaction import MASK, MAX_DEPTH, MAX_REMEMBERED, TOO_DEEP, Redactor

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


def test_redactor_short_secret_masked_as_whole_word_only() -> None:
    redactor = Redactor(["k3y9x"])
    assert redactor.text("key k3y9x, and k3y9x") == f"key {MASK}, and {MASK}"
    assert redactor.text("k3y9xz ak3y9x k3y9x-1") == "k3y9xz ak3y9x k3y9x-1"


def test_redactor_encoded_forms_of_long_secret_masked() -> None:
    secret = "s3cr/t+v@lue~long"
    redactor = Redactor([secret])
    wrapped = base64.b64encode(b"Authorization: Basic " + secret.encode()).decode()
    for echoed in (
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret, safe="").lower(),
        secret.encode().hex().upper(),
        base64.urlsafe_b64encode(secret.encode()).decode(),
        json.dumps(secret)[1:-1],
    ):
        assert redactor.text(f"echo {echoed} end") == f"echo {MASK} end", echoed
    core = base64.b64encode(secret.encode()).decode()[4:-4]
    assert core[:8] not in redactor.text(wrapped)


def test_redactor_remembering_keeps_rotated_away_secrets_up_to_a_cap() -> None:
    old = Settings(upstream_api_key="upstream-key-one-111")
    new = Settings(upstream_api_key="upstream-key-two-222")
    redactor = Redactor.of(old).remembering(new)
    assert redactor.text("upstream-key-one-111 upstream-key-two-222") == f"{MASK} {MASK}"
    many = Redactor([f"secret-number-{i:04d}" for i in range(200)])
    assert len(many.secrets) == MAX_REMEMBERED
    assert "secret-number-0199" in many.secrets and "secret-number-0000" not in many.secrets


def test_redactor_remembering_many_rotations_never_forgets_a_current_secret() -> None:
    redactor = Redactor()
    for i in range(MAX_REMEMBERED + 10):  # the gateway key rotated again and again
        current = Settings(upstream_api_key="upstream-key-kept-333", gateway_api_key=f"gk-{i:08d}")
        redactor = redactor.remembering(current)
        assert redactor.text("upstream-key-kept-333") == MASK, i


def test_redactor_value_cuts_nesting_deeper_than_max_depth() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(900):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    cut = Redactor().value({"metadata": deep})
    assert json.dumps(cut).count("[") - TOO_DEEP.count("[") == MAX_DEPTH - 1
    assert TOO_DEEP in json.dumps(cut)
