"""The deploy guides stay true to the files they describe, in both languages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDES = ("docs/DEPLOY.md", "docs/DEPLOY.en.md")


def serverless_env_names() -> set[str]:
    """Every ``PICGATE_*`` variable ``serverless.yml`` reads from the environment."""
    return set(re.findall(r"\$\{env:(PICGATE_[A-Z0-9_]+)", (REPO / "serverless.yml").read_text()))


def package_command(guide: str) -> str:
    text = (REPO / guide).read_text()
    found = re.search(r"```bash\n(env SLS_TELEMETRY_DISABLED=1.+?)```", text, re.S)
    assert found, f"{guide}: no copyable `serverless package` command"
    return found.group(1)


@pytest.mark.parametrize("guide", GUIDES)
def test_deploy_guide_package_command_sets_every_serverless_variable(guide: str) -> None:
    command = package_command(guide)
    given = set(re.findall(r"\b(PICGATE_[A-Z0-9_]+)=", command))
    assert serverless_env_names() <= given, serverless_env_names() - given
    assert "AWS_ACCESS_KEY_ID=AKIAFAKE" in command and "serverless package" in command


def test_deploy_guides_same_package_command() -> None:
    assert package_command(GUIDES[0]) == package_command(GUIDES[1])


@pytest.mark.parametrize("guide", GUIDES)
def test_deploy_guide_states_lambda_limits_and_setup_token_step(guide: str) -> None:
    text = (REPO / guide).read_text()
    assert "50 MB" in text and "250 MB" in text
    assert not re.search(r"48 MB[^\n]*(超过|over)", text), "48 MB is under the 50 MB limit"
    assert "filter-log-events" in text and "setup?token=" in text


def test_deploy_guide_english_covers_every_chinese_section() -> None:
    """The English guide is complete: the same numbered sections as the Chinese one."""

    def sections(guide: str) -> list[str]:
        return re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (REPO / guide).read_text(), re.M)

    assert sections(GUIDES[0]) == sections(GUIDES[1])
    assert len(sections(GUIDES[0])) >= 14
