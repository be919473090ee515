"""``picgate serve`` and ``picgate cleanup`` with a DATABASE_URL they cannot use: one line on
stderr naming the setting, exit status 2, no traceback (a real process, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["cleanup"]])
def test_cli_bad_database_url_prints_one_line_and_exits_2(
    command: list[str], tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": "foo", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "picgate.cli", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "DATABASE_URL='foo' is not a database URL" in lines[0]
    assert "sqlite:///" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no ./data made for a URL that was refused
