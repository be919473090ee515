"""The typed rows of ``picgate.db.models`` against the tables they are read from."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Table

from picgate.db import models

ROWS = [
    (models.ImageRow, models.IMAGES),
    (models.AdminUserRow, models.ADMIN_USERS),
    (models.AdminSessionRow, models.ADMIN_SESSIONS),
    (models.JobLeaseRow, models.JOB_LEASES),
    (models.GatewayKeyRow, models.GATEWAY_KEYS),
]


@pytest.mark.parametrize(("row", "table"), ROWS, ids=[table.name for _, table in ROWS])
def test_typed_row_fields_are_the_table_columns_in_order(row: Any, table: Table) -> None:
    # rows are built positionally from select(TABLE): _make(row)
    assert row._fields == tuple(table.c.keys())


@pytest.mark.parametrize(("row", "table"), ROWS, ids=[table.name for _, table in ROWS])
def test_typed_row_optional_exactly_where_the_column_is_nullable(row: Any, table: Table) -> None:
    hints = row.__annotations__
    for column in table.columns:
        optional = "None" in str(hints[column.key])
        assert optional == (column.nullable and not column.primary_key), column.key


def test_every_table_is_in_the_one_metadata() -> None:
    tables = [value for value in vars(models).values() if isinstance(value, Table)]
    assert sorted(t.name for t in tables) == sorted(models.METADATA.tables)
