"""The Dockerfile and infra/docker-compose.yml agree with the CLI and the settings.

No Docker engine runs here, so the image is not built: these checks read the files and hold
them to what ``picgate serve`` and ``Settings`` actually do.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from picgate.cli import main
from picgate.config import Settings

REPO = Path(__file__).resolve().parents[2]


def dockerfile() -> str:
    # join continuation lines so each instruction is one line
    return re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())


def instructions(name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in dockerfile().splitlines()
        if line.split(None, 1)[:1] == [name]
    ]


def final_stage() -> str:
    return dockerfile().rsplit("\nFROM ", 1)[1]


def test_dockerfile_cmd_is_the_serve_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == ["picgate", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["picgate"] == "picgate.cli:main"
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    assert "--port" in capsys.readouterr().out


def test_dockerfile_port_matches_settings_default() -> None:
    port = Settings.model_fields["port"].default
    assert instructions("EXPOSE") == [str(port)]
    assert f"PORT={port}" in final_stage()
    (health,) = instructions("HEALTHCHECK")
    assert "python" in health and "/health" in health and "curl" not in health
    assert f"'{port}'" in health


def test_dockerfile_runs_as_non_root_with_data_volume() -> None:
    assert instructions("FROM")[-1].startswith("python:3.11-slim")
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert json.loads(instructions("VOLUME")[-1]) == ["/app/data"]
    stage = final_stage()
    assert "DATA_DIR=/app/data" in stage
    assert "DATABASE_URL=sqlite:////app/data/" in stage


def test_dockerfile_copies_what_the_package_needs() -> None:
    copies = " ".join(instructions("COPY"))
    for needed in ("pyproject.toml", "uv.lock", "README.md", "picgate"):
        assert needed in copies
    ignored = (REPO / ".dockerignore").read_text().split()
    for kept in ("picgate", "pyproject.toml", "uv.lock", "README.md"):
        assert kept not in ignored
    # the versions come from the lock (hash-checked), the project itself without resolving again
    run = " ".join(instructions("RUN"))
    assert "uv export --quiet --frozen" in run and "pip install --no-deps ." in run


def test_compose_agrees_with_dockerfile_and_settings() -> None:
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    service = compose["services"]["picgate"]
    port = Settings.model_fields["port"].default
    # the mapping, the container's PORT and the health check follow PORT, defaulting alike
    assert f"${{PORT:-{port}}}:${{PORT:-{port}}}" in service["ports"]
    assert service["environment"]["PORT"] == f"${{PORT:-{port}}}"
    assert "picgate-data:/app/data" in service["volumes"]
    assert "picgate-data" in compose["volumes"]
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"] and "os.environ['PORT']" in test[-1]
    assert service["build"]["context"] == ".." and service["build"]["dockerfile"] == "Dockerfile"


def test_readme_docker_commands_match_compose() -> None:
    readme = (REPO / "README.md").read_text()
    assert "-v picgate-data:/app/data" in readme
    assert "infra/docker-compose.yml" in readme


def test_openwebui_compose_wires_open_webui_to_picgate() -> None:
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.openwebui.yml").read_text())
    picgate = compose["services"]["picgate"]["environment"]
    webui = compose["services"]["open-webui"]["environment"]
    inside = "http://picgate:5643/v1"
    assert webui["OPENAI_API_BASE_URLS"] == inside
    assert webui["IMAGES_OPENAI_API_BASE_URL"] == webui["IMAGES_EDIT_OPENAI_API_BASE_URL"] == inside
    keys = ("OPENAI_API_KEYS", "IMAGES_OPENAI_API_KEY", "IMAGES_EDIT_OPENAI_API_KEY")
    assert {webui[k] for k in keys} == {"${GATEWAY_API_KEY}"}
    assert webui["IMAGE_GENERATION_ENGINE"] == webui["IMAGE_EDIT_ENGINE"] == "openai"
    assert webui["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    # image links must be loadable by the browser, not only inside the compose network
    assert "picgate:5643" not in picgate["PUBLIC_BASE_URL"]
    assert picgate["GATEWAY_API_KEY"].startswith("${GATEWAY_API_KEY")
    assert "infra/docker-compose.openwebui.yml" in (REPO / "README.md").read_text()
    assert "infra/docker-compose.openwebui.yml" in (REPO / "README.en.md").read_text()
