"""The variant query and rendering (picgate.storage.variants): pure, no server."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image as PILImage

from picgate import variant_query
from picgate.errors import BadRequest, UnsupportedMediaType
from picgate.storage import variants
from picgate.storage.codec import GIF, JPEG, PNG, WEBP
from picgate.storage.variants import VariantSpec, parse_variant_query, render_variant, target_size
from picgate.variant_query import LADDER, check_variant_text, snap
from tests.support.images import make_image


@pytest.fixture(autouse=True)
def pillow_limit() -> Iterator[None]:
    """Rendering sets Pillow's process-wide pixel limit; tests that shrink it put it back."""
    before = PILImage.MAX_IMAGE_PIXELS
    yield
    PILImage.MAX_IMAGE_PIXELS = before


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    colour = (200, 30, 30, 0) if mode == "RGBA" else (200, 30, 30)
    PILImage.new(mode, (width, height), colour).save(out, "PNG")
    return out.getvalue()


def opened(data: bytes) -> PILImage.Image:
    img = PILImage.open(io.BytesIO(data))
    img.load()
    return img


def spec_of(query: str) -> VariantSpec | None:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return parse_variant_query(pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("asked", "snapped"),
    [(1, 64), (63, 64), (64, 64), (65, 64), (500, 384), (512, 512), (1023, 768), (99999, 2048)],
)
def test_snap_asked_size_takes_largest_step_at_or_below(asked: int, snapped: int) -> None:
    assert snap(asked) == snapped


def test_parse_variant_query_every_parameter_is_read_and_snapped() -> None:
    assert spec_of("w=1000&h=300&format=webp&q=55") == VariantSpec(768, 256, "webp", 55)
    assert spec_of("format=JPG") == VariantSpec(format="jpeg")
    assert spec_of("q=100") == VariantSpec(quality=100)


def test_parse_variant_query_without_variant_keys_is_none() -> None:
    assert spec_of("") is None
    assert spec_of("v=3&download=1") is None  # cache busters stay harmless


def test_parse_variant_query_the_ladder_bounds_distinct_variants() -> None:
    names = {
        spec.file_name(PNG)
        for w in range(1, 5000, 7)
        if (spec := spec_of(f"w={w}&format=webp")) is not None
    }
    assert len(names) == len(LADDER)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("w=0", "w"),
        ("w=-5", "w"),
        ("w=abc", "w"),
        ("w=1.5", "w"),
        ("w=1e3", "w"),
        ("w=", "w"),
        ("w=9999999999999999999999", "w"),
        ("h=0", "h"),
        ("q=0", "q"),
        ("q=101", "q"),
        ("format=svg", "format"),
        ("format=", "format"),
        ("w=100&w=200", "w"),
    ],
)
def test_parse_variant_query_bad_value_is_400_naming_param(query: str, param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        spec_of(query)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert caught.value.code == "invalid_variant"


def test_parse_variant_query_avif_without_encoder_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variant_query, "avif_supported", lambda: False)
    with pytest.raises(BadRequest) as caught:
        spec_of("format=avif")
    assert caught.value.code == "unsupported_variant_format" and "AVIF" in caught.value.message


@pytest.mark.parametrize("text", ["", "w=1024&format=webp", "?h=512", "q=80", " format=png "])
def test_check_variant_text_accepts_variant_queries(text: str) -> None:
    assert check_variant_text(text) == text.strip().removeprefix("?")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("w=1024&size=big", "not size"),
        ("w=wide", "'w'"),
        ("format=gif", "'format'"),
        ("w=1&w=2", "more than once"),
        ("w", "not a query"),
    ],
)
def test_check_variant_text_refuses_other_text(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_variant_text(text)


def test_target_size_fits_box_keeps_aspect_never_upscales() -> None:
    assert target_size((2000, 1000), VariantSpec(width=512)) == (512, 256)
    assert target_size((2000, 1000), VariantSpec(height=128)) == (256, 128)
    assert target_size((2000, 1000), VariantSpec(width=1024, height=128)) == (256, 128)
    assert target_size((300, 200), VariantSpec(width=2048)) == (300, 200)
    assert target_size((5000, 10), VariantSpec(width=64)) == (64, 1)


def test_spec_identity_and_names() -> None:
    assert VariantSpec(format="png").is_identity(PNG)
    assert VariantSpec(quality=50).is_identity(PNG)  # q means nothing to a lossless PNG
    assert not VariantSpec(quality=50).is_identity(JPEG)
    assert not VariantSpec(width=64).is_identity(PNG)
    assert VariantSpec(width=512, format="webp").file_name(PNG) == "w512h0q80.webp"
    assert VariantSpec(height=64, quality=7).file_name(PNG) == "w0h64.png"
    assert VariantSpec(format="jpeg", quality=40).file_name(GIF) == "w0h0q40.jpg"


def test_spec_etag_is_strong_and_differs_per_variant_and_original() -> None:
    a = VariantSpec(width=512, format="webp")
    etag = a.etag("ab" * 32, PNG)
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert etag == VariantSpec(width=512, format="webp").etag("ab" * 32, PNG)
    assert etag != VariantSpec(width=256, format="webp").etag("ab" * 32, PNG)
    assert etag != a.etag("cd" * 32, PNG)


@pytest.mark.parametrize(
    ("fmt", "pillow_name"),
    [("webp", "WEBP"), ("jpeg", "JPEG"), ("png", "PNG"), ("avif", "AVIF")],
)
def test_render_variant_each_format_resized(fmt: str, pillow_name: str) -> None:
    if fmt == "avif" and not variant_query.avif_supported():
        pytest.skip("this Pillow has no AVIF encoder")
    data, kind = render_variant(png(1600, 800), VariantSpec(width=512, format=fmt))
    assert kind == variants.FORMATS[fmt]
    with opened(data) as img:
        assert img.format == pillow_name and img.size == (512, 256)


def test_render_variant_keeps_original_type_without_format() -> None:
    source = make_image("JPEG", 200_000, seed=4)
    data, kind = render_variant(source, VariantSpec(width=128))
    assert kind == JPEG
    with opened(data) as img:
        assert img.format == "JPEG" and img.size == (128, 128)


def test_render_variant_quality_changes_lossy_output() -> None:
    source = make_image("PNG", 300_000, seed=5)
    low, _ = render_variant(source, VariantSpec(format="webp", quality=5))
    high, _ = render_variant(source, VariantSpec(format="webp", quality=95))
    assert len(low) < len(high)


def test_render_variant_never_upscales() -> None:
    data, _ = render_variant(png(100, 50), VariantSpec(width=2048, format="webp"))
    with opened(data) as img:
        assert img.size == (100, 50)


def test_render_variant_jpeg_of_transparent_png_is_white() -> None:
    data, _ = render_variant(png(64, 64, "RGBA"), VariantSpec(format="jpeg"))
    with opened(data) as img:
        r, g, b = img.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
        assert min(r, g, b) > 240


def test_render_variant_webp_keeps_alpha() -> None:
    data, _ = render_variant(png(64, 64, "RGBA"), VariantSpec(format="webp"))
    with opened(data) as img:
        assert img.mode == "RGBA"


def test_render_variant_palette_gif_resizes() -> None:
    data, kind = render_variant(make_image("GIF", 40_000, seed=6), VariantSpec(width=64))
    assert kind == GIF
    with opened(data) as img:
        assert img.format == "GIF" and img.size == (64, 64)


def test_render_variant_follows_exif_orientation() -> None:
    out = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90°: a 200×100 file shows as 100×200
    PILImage.new("RGB", (200, 100), (0, 0, 255)).save(out, "JPEG", exif=exif)
    data, _ = render_variant(out.getvalue(), VariantSpec(height=128, format="webp"))
    with opened(data) as img:
        assert img.size == (64, 128)


def test_render_variant_animated_gif_is_400() -> None:
    frames = [PILImage.new("RGB", (32, 32), (80 * i, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(BadRequest) as caught:
        render_variant(out.getvalue(), VariantSpec(width=64, format="webp"))
    assert caught.value.status_code == 400 and caught.value.code == "animated_image"


def test_render_variant_refuses_decompression_bombs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "MAX_PIXELS", 10_000)
    for side in (120, 300):  # 1.4x the limit only warns in Pillow, 9x raises: both refused
        with pytest.raises(UnsupportedMediaType) as caught:
            render_variant(png(side, side), VariantSpec(width=64))
        assert caught.value.code == "image_too_large"


def test_render_variant_pillow_limit_holds_when_headers_lie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(variants, "MAX_PIXELS", 10_000)
    monkeypatch.setattr(variants, "decoded_size", lambda data, kind: (1, 1))
    with pytest.raises(UnsupportedMediaType) as caught:
        render_variant(png(300, 300), VariantSpec(width=64))
    assert caught.value.code == "image_too_large"


def test_render_variant_refuses_bytes_that_are_not_an_image() -> None:
    with pytest.raises(UnsupportedMediaType):
        render_variant(b"<svg xmlns='http://www.w3.org/2000/svg'/>", VariantSpec(width=64))


def test_render_variant_webp_source_to_png() -> None:
    out = io.BytesIO()
    PILImage.new("RGB", (300, 300), (1, 2, 3)).save(out, "WEBP")
    data, kind = render_variant(out.getvalue(), VariantSpec(width=256, format="png"))
    assert kind == PNG
    with opened(data) as img:
        assert img.size == (256, 256)
    assert WEBP.ext == "webp"
