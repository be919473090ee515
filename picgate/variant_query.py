"""The variant query of ``/images/{id}``: ``w``, ``h``, ``format`` and ``q``, as a contract.

Pure and cheap (no image is touched): ``/images`` reads it from a request, the
``CHAT_IMAGE_VARIANT`` setting is checked against it, and ``picgate.storage.variants`` renders
what it describes.

Widths and heights snap *down* to ``LADDER`` (the largest step at or below the asked size;
below the smallest step, the smallest step), so a query can name only a bounded number of
variants of one image. ``format`` is one of ``FORMATS`` (``jpg`` is read as ``jpeg``); ``q``
is 1..100.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from picgate.errors import BadRequest

LADDER: tuple[int, ...] = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
FORMATS: tuple[str, ...] = ("webp", "avif", "jpeg", "png")
QUERY_KEYS = frozenset({"w", "h", "format", "q"})
# a query value longer than this is not a size anyone means (and int() of it costs)
MAX_DIGITS = 6


def snap(size: int) -> int:
    """The largest ladder step at or below ``size`` (the smallest step below it)."""
    chosen = LADDER[0]
    for step in LADDER:
        if step <= size:
            chosen = step
    return chosen


@dataclass(frozen=True)
class VariantQuery:
    """A variant as a query asks for it, sizes already snapped to the ladder.

    ``format`` None keeps the original's type; ``quality`` None is the encoder's default.
    """

    width: int | None = None
    height: int | None = None
    format: str | None = None
    quality: int | None = None


def avif_supported() -> bool:
    # imported here: Pillow is needed only when someone asks for AVIF
    from PIL import features

    return bool(features.check("avif"))


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or len(value) > MAX_DIGITS or not low <= int(value) <= high:
        raise BadRequest(
            f"'{name}' must be a whole number from {low} to {high}, got {value[:20]!r}.",
            param=name,
            code="invalid_variant",
        )
    return int(value)


def parse_variant_query(items: Iterable[tuple[str, str]]) -> VariantQuery | None:
    """The variant a query asks for; None when it names none of ``w``, ``h``, ``format``, ``q``.

    Other keys are ignored (cache busters and the like stay harmless); a key given twice, a
    value out of range or a format this Pillow cannot write is a BadRequest naming the param.
    """
    seen: dict[str, str] = {}
    for key, value in items:
        if key not in QUERY_KEYS:
            continue
        if key in seen:
            raise BadRequest(f"'{key}' is given more than once.", param=key, code="invalid_variant")
        seen[key] = value.strip()
    if not seen:
        return None
    width = _integer("w", seen["w"], 1, 999_999) if "w" in seen else None
    height = _integer("h", seen["h"], 1, 999_999) if "h" in seen else None
    quality = _integer("q", seen["q"], 1, 100) if "q" in seen else None
    fmt = seen.get("format")
    if fmt is not None:
        fmt = "jpeg" if fmt.lower() == "jpg" else fmt.lower()
        if fmt not in FORMATS:
            raise BadRequest(
                f"'format' must be one of {', '.join(FORMATS)}, got {fmt[:20]!r}.",
                param="format",
                code="invalid_variant",
            )
        if fmt == "avif" and not avif_supported():
            raise BadRequest(
                "'format=avif' is not available: this server's Pillow has no AVIF encoder; "
                "use webp.",
                param="format",
                code="unsupported_variant_format",
            )
    return VariantQuery(
        width=snap(width) if width is not None else None,
        height=snap(height) if height is not None else None,
        format=fmt,
        quality=quality,
    )


def check_variant_text(text: str) -> str:
    """``text`` (e.g. ``w=1024&format=webp``) when it is a variant query and nothing else;
    ValueError saying what is wrong otherwise. A leading ``?`` is dropped; empty stays empty."""
    text = text.strip().removeprefix("?")
    if not text:
        return ""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ValueError(f"is not a query such as w=1024&format=webp ({exc})") from exc
    unknown = sorted({k for k, _ in pairs} - QUERY_KEYS)
    if unknown:
        raise ValueError(f"may hold only w, h, format and q, not {', '.join(unknown)}")
    try:
        parse_variant_query(pairs)
    except BadRequest as exc:
        raise ValueError(exc.message) from exc
    return text
