"""The admin console's pure parts: catalogues, cursors, the settings form, hashing,
and the packaging that ships the templates."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from picgate.admin import auth, i18n, settings_form
from picgate.admin.pages import NAV
from picgate.config import EDITABLE, Settings
from picgate.errors import BadRequest
from picgate.library import gallery
from picgate.settings_store import mask

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "admin_templates"
LOCALES = ROOT / "picgate" / "admin" / "locales"


def used_keys() -> set[str]:
    """Every catalogue key the templates, the script and the Python code ask for."""
    keys: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        keys |= set(re.findall(r"\bt\('([a-z0-9_.]+)'", path.read_text()))
        keys |= set(re.findall(r"data-confirm=\"([a-z0-9_.]+)\"", path.read_text()))
    script = (TEMPLATES / "static" / "admin.js").read_text()
    keys |= set(re.findall(r"\bt\(\"([a-z0-9_.]+)\"", script))
    for source in (ROOT / "picgate" / "admin").glob("*.py"):
        keys |= set(re.findall(r"\"((?:auth|password|setup)\.[a-z_.]+)\"", source.read_text()))
    keys -= {"setup.html", "password.html", "login.html"}  # template names, not keys
    keys = {k for k in keys if not k.endswith((".", "_"))}  # prefixes of keys built at run time
    keys |= {f"nav.{n}" for n in NAV} | {f"{p}.title" for p in (*NAV, "setup", "login", "password")}
    keys |= {f"field.{n}" for n in EDITABLE} | {f"help.{n}" for n in EDITABLE}
    keys |= {f"group.{g}" for g, _ in settings_form.GROUPS}
    keys |= {f"badge.{b}" for b in ("local", "r2", "pending", "failed", "expired")}
    keys |= {f"step.{s}" for s in ("config", "bucket", "put", "get", "delete")}
    keys |= {f"js.{a}_{m}" for a in ("confirm_delete", "deleted") for m in ("local", "r2", "all")}
    return keys


def test_catalogues_zh_and_en_have_the_same_keys() -> None:
    zh = json.loads((LOCALES / "zh.json").read_text())
    en = json.loads((LOCALES / "en.json").read_text())
    assert set(zh) == set(en)
    assert all(isinstance(v, str) and v for v in [*zh.values(), *en.values()])


def test_catalogues_cover_every_key_the_ui_uses() -> None:
    zh = json.loads((LOCALES / "zh.json").read_text())
    missing = sorted(used_keys() - set(zh))
    assert missing == []


def test_templates_hold_no_hard_coded_words() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = re.sub(r"\{[{%#].*?[%}#]\}", "", path.read_text(), flags=re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        words = [w for w in re.findall(r"[^\s]+", text) if re.search(r"[A-Za-z\u4e00-\u9fff]", w)]
        allowed = {"INFO", "WARNING", "ERROR", "PicGate"}
        assert [w for w in words if w not in allowed] == [], path.name


def test_translator_falls_back_to_chinese_then_key_and_fills_params() -> None:
    en = i18n.Translator("en")
    assert en("nav.dashboard").endswith("Dashboard")
    assert i18n.Translator("fr").lang == "zh"
    assert en("no.such.key") == "no.such.key"
    assert en("js.page", page=3) == "Page 3"
    assert set(en.prefixed("badge.")) == {
        f"badge.{b}" for b in ("local", "r2", "pending", "failed", "expired")
    }


def test_gallery_cursor_round_trips_and_refuses_garbage() -> None:
    when = datetime(2025, 5, 6, 7, 8, 9, 123456)
    assert gallery.decode_cursor(gallery.encode_cursor(when, "abc"), "created") == (when, "abc")
    assert gallery.decode_cursor(gallery.encode_cursor(1234, "x"), "size") == (1234, "x")
    for bad in ("", "!!!", gallery.encode_cursor("not a date", "x")):
        with pytest.raises(BadRequest):
            gallery.decode_cursor(bad, "created")


def test_settings_form_drops_masked_and_empty_secrets() -> None:
    current = Settings(upstream_api_key="sk-live-abcdefghijkl", _env_file=None)  # type: ignore[call-arg]
    changes = settings_form.incoming_values(
        current,
        {
            "upstream_api_key": mask("sk-live-abcdefghijkl"),
            "gateway_api_key": "",
            "public_base_url": "  ",
            "gateway_model_name": " picgate ",
        },
    )
    assert changes == {"public_base_url": None, "gateway_model_name": "picgate"}


def test_settings_view_masks_every_secret() -> None:
    current = Settings(upstream_api_key="sk-live-abcdefghijkl", gateway_api_key="pg-123456789abc")
    fields = {f["name"]: f for g in settings_form.settings_view(current) for f in g["fields"]}
    assert fields["upstream_api_key"]["value"] == mask("sk-live-abcdefghijkl")
    assert fields["gateway_api_key"]["value"] == mask("pg-123456789abc")
    assert fields["upstream_api_key"]["fixed"] and not fields["r2_bucket_name"]["fixed"]


def test_password_hash_is_argon2id_at_19_mib() -> None:
    hashed = auth.hash_password("correct-horse")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert auth.verify_password(hashed, "correct-horse")
    assert not auth.verify_password(hashed, "wrong-horse")
    assert not auth.verify_password("not a hash", "correct-horse")


def test_packaging_lists_every_package_and_ships_the_templates() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "picgate").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["picgate.admin_templates"] == "admin_templates"
    assert "picgate.admin_templates" in listed
    shipped = config["package-data"]["picgate.admin_templates"]
    assert "*.html" in shipped and "static/*.js" in shipped and "static/*.css" in shipped
    assert (TEMPLATES / "base.html").is_file() and (TEMPLATES / "static" / "admin.css").is_file()


def test_mask_hides_short_secrets_fully_and_long_ones_but_seven_characters() -> None:
    for short in ("sk-abc", "sk-live-abcdefghijkl", "x" * 23):
        assert mask(short) == "••••••••"
    key = "pg-" + "A" * 40 + "wxyz"
    assert mask(key) == "pg-••••••••wxyz"
    assert mask(None) == mask("") == ""
