"""The admin image grid over 100,000 rows: milliseconds per page, first and deep, per sort order.

Rows are inserted with bulk SQL into a fresh SQLite file (migrated as PicGate does), then
``gallery.list_images`` is timed: page 1, and a page whose cursor sits near the end of the
table (keyset pagination must cost the same there). Prints SQLite's query plan for each sort.

    .venv/bin/python -m bench.admin_gallery [--rows 100000] [--limit 48]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, insert, select, text, tuple_

from picgate.db.engine import Database
from picgate.library import gallery
from picgate.library.rows import SORT_COLUMNS, ImageRows
from tests import orm
from tests.orm import Image


def fill(db: Database, rows: int) -> None:
    start = datetime(2025, 1, 1)
    batch = []
    for i in range(rows):
        created = start + timedelta(seconds=i * 7)
        batch.append(
            {
                "id": secrets.token_urlsafe(16),
                "ext": "png",
                "mime": "image/png",
                "size": 10_000 + (i * 7919) % 5_000_000,
                "sha256": "0" * 64,
                "created_at": created,
                "accessed_at": created + timedelta(hours=i % 500),
                "source": "bench",
                "prompt": f"prompt {i}",
                "local": True,
                "expired": False,
                "r2_state": "none",
                "r2_attempts": 0,
            }
        )
        if len(batch) == 5000:
            insert_rows(db, batch)
            batch = []
    if batch:
        insert_rows(db, batch)


def first_row(db: Database, query: Select[Any]) -> tuple[Any, Any]:
    row = orm.read(db, lambda s: s.execute(query).one())
    return row[0], row[1]


def insert_rows(db: Database, rows: list[dict[str, Any]]) -> None:
    orm.write(db, lambda s: s.execute(insert(Image), rows))


def timed(db: Database, *, sort: str, cursor: str | None, limit: int) -> float:
    samples = []
    for _ in range(15):
        started = time.perf_counter()
        gallery.list_images(ImageRows(db), sort=sort, cursor=cursor, limit=limit)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.migrate()
        started = time.perf_counter()
        fill(db, args.rows)
        print(f"inserted {args.rows} rows in {time.perf_counter() - started:.1f} s")
        for sort, column in SORT_COLUMNS.items():
            # a cursor 95% of the way down the list
            query = (
                select(column, Image.id)
                .order_by(column.desc(), Image.id.desc())
                .offset(int(args.rows * 0.95))
                .limit(1)
            )
            deep = first_row(db, query)
            cursor = gallery.encode_cursor(deep[0], deep[1])
            first = timed(db, sort=sort, cursor=None, limit=args.limit)
            late = timed(db, sort=sort, cursor=cursor, limit=args.limit)
            print(f"sort={sort:<9} page 1: {first:6.2f} ms   page at 95%: {late:6.2f} ms")
            query = (
                select(Image)
                .where(tuple_(column, Image.id) < tuple_(deep[0], deep[1]))
                .order_by(column.desc(), Image.id.desc())
                .limit(args.limit)
            )
            compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
            with db.engine.connect() as conn:
                plan = conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            print("    plan:", " | ".join(str(row[-1]) for row in plan))
        db.dispose()


if __name__ == "__main__":
    main()
