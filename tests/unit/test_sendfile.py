"""SENDFILE_HEADER / SENDFILE_PREFIX: the settings' checks and the header values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from picgate.config import Settings, SettingsError, validate_settings
from picgate.library.sendfile import ACCEL, SENDFILE, OutsideImagesDir, Sendfile

ROOT = Path("/srv/picgate/images")
FILE = ROOT / "ab" / "abcdefghijklmnop1234.png"


def settings(**values: str) -> Settings:
    return Settings(images_dir=ROOT, runtime_mode="server", **values)  # type: ignore[arg-type]


def test_sendfile_unset_is_none() -> None:
    assert Sendfile.from_settings(settings()) is None


def test_sendfile_accel_names_prefix_and_relative_path() -> None:
    s = settings(sendfile_header="X-Accel-Redirect", sendfile_prefix="/_picgate_files/")
    handoff = Sendfile.from_settings(s)
    assert handoff is not None
    assert handoff.headers(FILE) == {ACCEL: "/_picgate_files/ab/abcdefghijklmnop1234.png"}


def test_sendfile_accel_root_prefix_names_path_below_images_dir() -> None:
    handoff = Sendfile.from_settings(
        settings(sendfile_header="x-accel-redirect", sendfile_prefix="/")
    )
    assert handoff is not None
    variant = ROOT / "variants" / "ab" / "abcdefghijklmnop1234" / "w256h0.webp"
    assert handoff.target(variant) == "/variants/ab/abcdefghijklmnop1234/w256h0.webp"


def test_sendfile_xsendfile_without_prefix_names_absolute_path() -> None:
    handoff = Sendfile.from_settings(settings(sendfile_header="X-Sendfile"))
    assert handoff is not None
    assert handoff.headers(FILE) == {SENDFILE: str(FILE)}


def test_sendfile_xsendfile_prefix_replaces_images_dir() -> None:
    s = settings(sendfile_header="X-Sendfile", sendfile_prefix="/mnt/proxy/images/")
    handoff = Sendfile.from_settings(s)
    assert handoff is not None
    assert handoff.target(FILE) == "/mnt/proxy/images/ab/abcdefghijklmnop1234.png"


def test_sendfile_relative_images_dir_made_absolute(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        s = Settings(images_dir=Path("data/images"), sendfile_header="X-Sendfile")
        handoff = Sendfile.from_settings(s)
        assert handoff is not None
        got = handoff.target(Path("data/images/ab/x.png"))
    finally:
        os.chdir(cwd)
    assert got == str(tmp_path / "data" / "images" / "ab" / "x.png")


@pytest.mark.parametrize(
    "path",
    [
        ROOT / ".." / "etc" / "passwd",
        ROOT / "ab" / ".." / ".." / "secret.png",
        Path("/etc/passwd"),
        Path("/srv/picgate/images-other/ab/x.png"),  # a sibling folder sharing the prefix
        ROOT,
        ROOT / "ab" / "..",
    ],
)
@pytest.mark.parametrize("header", ["X-Accel-Redirect", "X-Sendfile"])
def test_sendfile_path_outside_images_dir_refused(path: Path, header: str) -> None:
    prefix = "/_picgate_files/" if header == "X-Accel-Redirect" else ""
    handoff = Sendfile.from_settings(settings(sendfile_header=header, sendfile_prefix=prefix))
    assert handoff is not None
    with pytest.raises(OutsideImagesDir):
        handoff.target(path)


def test_sendfile_accel_quotes_unusual_characters() -> None:
    handoff = Sendfile.from_settings(settings(sendfile_header=ACCEL, sendfile_prefix="/f/"))
    assert handoff is not None
    assert handoff.target(ROOT / "a b" / "x?.png") == "/f/a%20b/x%3F.png"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"sendfile_header": "X-Foo"}, "SENDFILE_HEADER"),
        ({"sendfile_prefix": "/_picgate_files/"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": ACCEL}, "SENDFILE_PREFIX"),  # nginx needs its location
        ({"sendfile_header": ACCEL, "sendfile_prefix": "_picgate_files/"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": ACCEL, "sendfile_prefix": "/_picgate_files"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": ACCEL, "sendfile_prefix": "/a/../b/"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": ACCEL, "sendfile_prefix": "/a b/"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": ACCEL, "sendfile_prefix": "/f?x=/"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": SENDFILE, "sendfile_prefix": "relative/images"}, "SENDFILE_PREFIX"),
        ({"sendfile_header": SENDFILE, "sendfile_prefix": "/mnt/../etc"}, "SENDFILE_PREFIX"),
    ],
)
def test_sendfile_settings_bad_values_refused_in_one_line(
    values: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        validate_settings(settings(**values))
    assert "\n" not in str(caught.value)


def test_sendfile_settings_serverless_refused() -> None:
    s = Settings(
        runtime_mode="serverless",
        sendfile_header=ACCEL,
        sendfile_prefix="/_picgate_files/",
        secret_key="x" * 32,
        r2_bucket_name="b",
        r2_access_key_id="k",
        r2_secret_access_key="s",
        r2_account_id="a",
    )
    with pytest.raises(SettingsError, match=r"SENDFILE_HEADER .*serverless"):
        validate_settings(s)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"sendfile_header": "X-Accel-Redirect", "sendfile_prefix": "/_picgate_files/"},
        {"sendfile_header": "x-accel-redirect", "sendfile_prefix": "/"},
        {"sendfile_header": "X-Sendfile"},
        {"sendfile_header": "X-Sendfile", "sendfile_prefix": "/mnt/images"},
    ],
)
def test_sendfile_settings_good_values_accepted(values: dict[str, str]) -> None:
    validate_settings(settings(**values))


def test_sendfile_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDFILE_HEADER", "X-Accel-Redirect")
    monkeypatch.setenv("SENDFILE_PREFIX", "/_picgate_files/")
    s = Settings()
    assert (s.sendfile_header, s.sendfile_prefix) == ("X-Accel-Redirect", "/_picgate_files/")
