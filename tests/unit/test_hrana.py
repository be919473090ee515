"""The Hrana driver's pure parts: value encoding, the statement word that opens a transaction,
and how server errors map onto sqlite3's exception classes."""

from __future__ import annotations

import pytest

from picgate.db import hrana, statements


@pytest.mark.parametrize(
    "value",
    [None, 0, 2**63 - 1, -(2**63), 0.5, "", "文字 😀", b"", b"\x00\xff" * 3, True],
)
def test_hrana_value_encode_decode_round_trip(value: object) -> None:
    back = hrana.decode_value(hrana.encode_value(value))
    assert back == value and type(back) is (int if isinstance(value, bool) else type(value))


def test_hrana_blob_without_padding_decodes() -> None:
    assert hrana.decode_value({"type": "blob", "base64": "AAE"}) == b"\x00\x01"


@pytest.mark.parametrize("value", [2**63, float("nan"), float("inf")])
def test_hrana_value_not_representable_is_data_error(value: object) -> None:
    with pytest.raises(hrana.DataError):
        hrana.encode_value(value)


def test_hrana_value_unknown_type_is_programming_error() -> None:
    with pytest.raises(hrana.ProgrammingError):
        hrana.encode_value(object())


@pytest.mark.parametrize(
    "sql,word",
    [
        ("insert into t values (1)", "INSERT"),
        ("  \n-- why\n/* a\n b */ UPDATE t SET x = 1", "UPDATE"),
        ("REPLACE INTO t VALUES (1)", "REPLACE"),
        ("select 1", "SELECT"),
        ("", ""),
    ],
)
def test_hrana_first_word_skips_space_and_comments(sql: str, word: str) -> None:
    assert statements.first_word(sql) == word


@pytest.mark.parametrize(
    "code,cls",
    [
        ("SQLITE_CONSTRAINT", hrana.IntegrityError),
        ("SQLITE_CONSTRAINT_PRIMARYKEY", hrana.IntegrityError),
        ("SQLITE_TOOBIG", hrana.DataError),
        ("SQL_PARSE_ERROR", hrana.OperationalError),
        ("TRANSACTION_TIMEOUT", hrana.OperationalError),
        (None, hrana.OperationalError),
    ],
)
def test_hrana_error_code_maps_to_sqlite3_class(code: str | None, cls: type) -> None:
    exc = hrana.error_from(
        {"message": "SQLite error: UNIQUE constraint failed: t.id", "code": code}
    )
    assert type(exc) is cls and str(exc) == "UNIQUE constraint failed: t.id"
