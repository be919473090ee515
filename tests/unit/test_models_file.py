"""MODELS_FILE parsing: interpolation, validation, one-line errors naming the file and entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from picgate.cli import main
from picgate.config import Settings, SettingsError
from picgate.errors import NotFound
from picgate.gateway.image_models import drops_tools, is_image_model
from picgate.routing.models_file import load_models_file
from picgate.routing.table import ModelTable

GOOD = """
upstreams:
  - name: openai
    base_url: https://api.openai.com/v1/
    api_key: ${OPENAI_KEY}
    timeout_seconds: 120
  - name: local
    base_url: http://127.0.0.1:9000/v1
models:
  - name: gpt-image
    upstream: openai
    upstream_model: gpt-image-1
    api: images
    params: {size: 1024x1024}
  - name: flux
    upstream: local
    api: images
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _settings(**values: Any) -> Settings:
    return Settings(
        upstream_api_base="http://legacy.invalid/v1", upstream_api_key="sk-legacy-key-1", **values
    )


def test_models_file_good_file_interpolates_and_routes(tmp_path: Path) -> None:
    table = ModelTable.load(_write(tmp_path, GOOD), {"OPENAI_KEY": "sk-openai-0123456789"})
    route = table.route(_settings(), "gpt-image")
    assert route.api == "images"
    assert route.settings.upstream_api_base == "https://api.openai.com/v1"
    assert route.settings.upstream_api_key == "sk-openai-0123456789"
    assert route.settings.upstream_model_name == "gpt-image-1"
    assert route.settings.upstream_timeout_seconds == 120
    assert route.with_params({"prompt": "x"}) == {"size": "1024x1024", "prompt": "x"}
    local = table.route(_settings(), "flux").settings
    # no key in the file: the legacy upstream's key must not travel to this host
    assert local.upstream_api_key is None
    assert local.upstream_model_name == "flux"
    assert local.upstream_timeout_seconds == 600
    assert table.secrets() == ["sk-openai-0123456789"]


def test_models_table_unknown_model_raises_model_not_found(tmp_path: Path) -> None:
    table = ModelTable.load(_write(tmp_path, GOOD), {"OPENAI_KEY": "k"})
    with pytest.raises(NotFound) as caught:
        table.route(_settings(), "nope")
    assert caught.value.code == "model_not_found"
    assert caught.value.status_code == 404


def test_models_table_route_follows_a_new_settings_object(tmp_path: Path) -> None:
    table = ModelTable.load(_write(tmp_path, GOOD), {"OPENAI_KEY": "k"})
    first = table.route(_settings(), "flux")
    assert table.route(_settings(upstream_retries=3), "flux").settings.upstream_retries == 3
    assert first.settings.upstream_retries == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            GOOD,
            "models.yaml: upstreams[0] ('openai') api_key uses ${OPENAI_KEY} but the environment variable OPENAI_KEY is not set",
        ),
        (
            GOOD.replace("api: images\n    params", "api: video\n    params"),
            "models[0] ('gpt-image') api: Input should be 'images' or 'chat'",
        ),
        (
            GOOD.replace("upstream: local", "upstream: nowhere"),
            "models[1] ('flux'): upstream 'nowhere' is not defined; use one of: local, openai",
        ),
        (
            GOOD.replace("http://127.0.0.1:9000/v1", "ftp://x"),
            "upstreams[1] ('local') base_url: Value error, must be an absolute http or https URL",
        ),
        (
            GOOD.replace("name: flux", "name: gpt-image"),
            "models[1] ('gpt-image'): the name is used twice",
        ),
        ("upstreams: [\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        (
            GOOD.replace("timeout_seconds: 120", "timeout_secs: 120"),
            "upstreams[0] ('openai') timeout_secs: Extra inputs are not permitted",
        ),
        (
            GOOD.replace(
                "api: images\n    params", "api: images\n    response_format: png\n    params"
            ),
            "models[0] ('gpt-image') response_format: Input should be 'b64_json' or 'url'",
        ),
        (
            GOOD.replace(
                "upstream: local\n    api: images", "upstream: local\n    drop_tools: maybe"
            ),
            "models[1] ('flux') drop_tools: Input should be a valid boolean",
        ),
    ],
)
def test_models_file_bad_file_is_one_line_naming_the_entry(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = _write(tmp_path, text)
    environ = {} if "OPENAI_KEY is not set" in needle else {"OPENAI_KEY": "k"}
    with pytest.raises(SettingsError) as caught:
        load_models_file(path, environ)
    message = str(caught.value)
    assert message.startswith(f"MODELS_FILE {path}: ")
    assert needle in message
    assert "\n" not in message


def test_models_file_missing_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file; fix the path or unset MODELS_FILE"):
        load_models_file(tmp_path / "absent.yaml", {})


def test_serve_with_bad_models_file_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELS_FILE", str(_write(tmp_path, GOOD)))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPENAI_KEY", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "MODELS_FILE" in err and "OPENAI_KEY is not set" in err
    assert "Traceback" not in err


def test_models_file_image_settings_reach_the_route_and_the_predicates(tmp_path: Path) -> None:
    text = (
        GOOD.replace("api: images\n    params", "api: images\n    response_format: url\n    params")
        + "  - name: talker\n    upstream: local\n    api: chat\n    drop_tools: true\n"
    )
    table = ModelTable.load(_write(tmp_path, text), {"OPENAI_KEY": "k"})
    settings = _settings()
    painter = table.route(settings, "gpt-image")
    assert painter.with_image_params({"prompt": "x"}) == {
        "size": "1024x1024",
        "response_format": "url",
        "prompt": "x",
    }
    assert painter.with_params({}) == {"size": "1024x1024"}  # never into a chat request
    assert table.route(settings, "flux").with_image_params({"prompt": "x"}) == {"prompt": "x"}
    assert [is_image_model(settings, m, table) for m in ("gpt-image", "talker", "nope")] == [
        True,
        False,
        False,
    ]
    # the gateway's own name is nothing special once a models file is set
    assert not is_image_model(settings, settings.gateway_model_name, table)
    assert drops_tools(settings, "gpt-image", table) and drops_tools(settings, "talker", table)
    off = _settings(drop_tools_for_image_models=False)
    assert not drops_tools(off, "gpt-image", table)
    assert drops_tools(off, "talker", table)  # the entry's own choice wins
