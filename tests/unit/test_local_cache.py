"""The local folder: atomic writes, sharding, usage tracking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from picgate.storage.local import LocalCache
from picgate.storage.store import parse_image_name

ID = "AbCdEfGhIjKlMnOpQrStUv"


def test_local_write_atomic_failure_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LocalCache(tmp_path)

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        cache.write(ID, "png", b"x" * 100)
    assert list(tmp_path.rglob("*")) == [tmp_path / ID[:2]]


def test_local_write_then_scan_and_usage(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path)
    assert cache.usage() == 0
    path = cache.write(ID, "png", b"x" * 100)
    assert path == tmp_path / "Ab" / f"{ID}.png"
    assert cache.usage() == 100
    assert [f.image_id for f in cache.scan()] == [ID]
    assert cache.delete(ID, "png") == 100
    assert cache.usage() == 0 and cache.delete(ID, "png") == 0


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
