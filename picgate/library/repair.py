"""Making the image folder and the ``images`` table agree again (after crashes, manual deletes).

One walk of the folder (``LocalCache.scan``); the files are compared with the table in batches of
ids. Then the rows that claim a local copy are streamed from one index scan, and each one whose
file was not seen is checked once more on disk before it is changed (it may have been written
after the walk passed its folder).

- a file with no row, older than GRACE → removed (a younger one may be a store in progress: the
  file is written before its row);
- a row with ``local=False`` whose file is there → ``local=True`` (serving uses the file anyway);
- a row with ``local=True`` whose file is gone → ``local=False``, and ``expired=True`` unless the
  image is in R2;
- ``.tmp-*`` files older than GRACE → removed (a crash between write and rename).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TypeVar

from picgate.db.models import R2_UPLOADED
from picgate.library.rows import ImageRows
from picgate.storage.local import LocalCache, LocalFile

GRACE = timedelta(hours=1)
BATCH = 500

T = TypeVar("T")


@dataclass
class Repair:
    orphans_removed: int = 0
    relinked: int = 0
    missing_marked: int = 0
    tmp_removed: int = 0
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _epoch(now: datetime) -> float:
    return now.replace(tzinfo=UTC).timestamp()


def repair(*, rows: ImageRows, cache: LocalCache, now: datetime) -> Repair:
    """Reconcile the folder with the table (see the module docstring); ``now`` is naive UTC."""
    result = Repair()
    old_before = _epoch(now - GRACE)
    seen: set[str] = set()
    for files in batched(cache.scan(), BATCH):
        _compare(rows, files, seen, old_before, result)
    if result.orphans_removed:
        # orphans were in the running total; it is walked again when next needed
        cache.reset_usage()
    _mark_missing(rows, cache, seen, result)
    for tmp in cache.temp_files():
        try:
            stat = tmp.stat()
            if stat.st_mtime < old_before:
                tmp.unlink()
                result.tmp_removed += 1
        except FileNotFoundError:  # renamed into place (or removed) since the walk saw it
            continue
        except OSError as exc:
            result.errors.append(f"cannot remove {tmp.name}: {exc.strerror or exc}")
    return result


def _compare(
    rows: ImageRows, files: list[LocalFile], seen: set[str], old_before: float, result: Repair
) -> None:
    known = rows.local_flags([f.image_id for f in files])
    relink: list[str] = []
    for f in files:
        row = known.get(f.image_id)
        if row is not None and row[0] == f.ext:
            seen.add(f.image_id)
            if not row[1]:
                relink.append(f.image_id)
            continue
        if f.mtime >= old_before:
            continue
        try:
            f.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.errors.append(f"cannot remove {f.path.name}: {exc.strerror or exc}")
            continue
        result.orphans_removed += 1
        result.bytes_freed += f.size
    rows.relink(relink)
    result.relinked += len(relink)


def _mark_missing(rows: ImageRows, cache: LocalCache, seen: set[str], result: Repair) -> None:
    candidates = rows.local_rows_except(seen, batch=BATCH * 4)
    for chunk in batched(candidates, BATCH):
        in_r2: list[str] = []
        lost: list[str] = []
        for image_id, ext, state in chunk:
            with contextlib.suppress(ValueError):
                if cache.exists(image_id, ext):  # written after the walk passed
                    continue
            (in_r2 if state == R2_UPLOADED else lost).append(image_id)
        rows.mark_not_local(in_r2, expired=False, only_local=True)
        rows.mark_not_local(lost, expired=True, only_local=True)
        result.missing_marked += len(in_r2) + len(lost)
