"""The local folder: atomic writes, sharding, usage tracking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from picgate.library.records import parse_image_name
from picgate.storage.local import LocalCache

ID = "AbCdEfGhIjKlMnOpQrStUv"


def test_local_write_atomic_failure_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LocalCache(tmp_path)
    real_write = os.write
    calls = []

    def fill_disk(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fill_disk)
    with pytest.raises(OSError):
        cache.write(ID, "png", b"x" * (3 * 2**20))
    assert calls == [2**20, 2**20]  # the disk filled up on the second 1 MB piece
    assert list(tmp_path.rglob("*")) == [tmp_path / ID[:2]]
    assert cache.usage() == 0


def test_local_write_does_not_wait_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LocalCache(tmp_path)
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    path = cache.write(ID, "png", b"x" * 100)
    assert synced == [] and path.read_bytes() == b"x" * 100
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "..%2f..",
        "abc",
        ID + ".svg",
        ID + ".png.exe",
        ID + "/x",
        "",
        ".",
        ID + ".PNG.",
    ],
)
def test_parse_image_name_rejects_traversal_and_unknown(name: str) -> None:
    assert parse_image_name(name) is None


def test_parse_image_name_accepts_id_and_extension() -> None:
    assert parse_image_name(ID) == (ID, None)
    assert parse_image_name(ID + ".jpeg") == (ID, "jpg")
    assert parse_image_name(ID + ".WEBP") == (ID, "webp")
