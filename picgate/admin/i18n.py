"""The console's languages: every string lives in ``locales/{lang}.json``, Chinese first.

A catalogue is a flat object ``{"key": "text with {placeholders}"}``. The language comes from
the ``picgate_lang`` cookie (set by ``?lang=en`` on any admin page). A key missing from a
catalogue falls back to Chinese, then to the key itself, so a gap shows rather than breaks.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

LANGUAGES: tuple[str, ...] = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
COOKIE = "picgate_lang"


@functools.cache
def catalogue(lang: str) -> Mapping[str, str]:
    """The strings of one language (read once per process)."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}")
    text = resources.files("picgate.admin").joinpath("locales", f"{lang}.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)
    return data


def pick_language(cookie: str | None) -> str:
    return cookie if cookie in LANGUAGES else DEFAULT_LANGUAGE


class Translator:
    """``t("key", name=value)``: the string for ``key`` in this language, filled in."""

    def __init__(self, lang: str) -> None:
        self.lang = pick_language(lang)
        self._strings = catalogue(self.lang)
        self._fallback = catalogue(DEFAULT_LANGUAGE)

    def __call__(self, key: str, **params: Any) -> str:
        text = self._strings.get(key) or self._fallback.get(key) or key
        if params:
            try:
                return text.format(**params)
            except (KeyError, IndexError, ValueError):
                return text
        return text

    def prefixed(self, *prefixes: str) -> dict[str, str]:
        """Every string whose key starts with one of ``prefixes`` (handed to the page's JS)."""
        keys = {k for k in self._fallback if k.startswith(prefixes)}
        keys |= {k for k in self._strings if k.startswith(prefixes)}
        return {k: self(k) for k in sorted(keys)}
