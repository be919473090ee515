"""The command line as a newcomer meets it: the port the banner names, refused ports, the
version, and which database ``admin create`` and ``cleanup`` used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import picgate
from picgate.cli import main
from picgate.db.location import local_file, shown_url
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh install: no PicGate setting but the data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICGATE", "R2_"))}
    for name in ("PORT", "HOST", "DATABASE_URL", "GATEWAY_API_KEY", "UPSTREAM_API_BASE"):
        env.pop(name, None)
    env.update(PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8", **extra)
    return env


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picgate.cli", *args],
        env=cli_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def serve_until_healthy(tmp_path: Path, args: list[str], env: dict[str, str], port: int) -> str:
    """Run ``picgate serve`` in ``tmp_path`` until /health answers on ``port``; its output."""
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "picgate.cli", "serve", *args],
            env=cli_env(tmp_path, **env),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert process.poll() is None, log.read_text()
        finally:
            process.terminate()
            process.wait(timeout=20)
    return log.read_text()


def test_serve_port_flag_banner_names_bound_port(tmp_path: Path) -> None:
    port = free_port()
    output = serve_until_healthy(
        tmp_path, ["--host", "127.0.0.1", "--port", str(port)], {"PORT": "5999"}, port
    )
    assert f"http://127.0.0.1:{port}/admin/setup?token=" in output
    assert f"listening on http://127.0.0.1:{port}" in output
    assert ":5999" not in output and ":5643" not in output
    # nothing of Alembic's narration buries the banner
    assert "alembic" not in output
    # the access line of the /health call is printed, not a logging error's traceback
    assert '"GET /health HTTP/1.1" 200' in output
    assert "Logging error" not in output and "Traceback" not in output


def test_serve_port_environment_banner_names_it(tmp_path: Path) -> None:
    port = free_port()
    output = serve_until_healthy(tmp_path, ["--host", "127.0.0.1"], {"PORT": str(port)}, port)
    assert f"http://127.0.0.1:{port}/admin/setup?token=" in output


@pytest.mark.parametrize("value", ["0", "99999", "-5", "abc", "80.5"])
def test_serve_port_flag_out_of_range_one_line_exit_2(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--port" in err and "1 to 65535" in err and repr(value) in err


@pytest.mark.parametrize("value", ["0", "70000", "x"])
def test_serve_port_environment_out_of_range_one_line_exit_2(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "PORT must be" in err and "1 to 65535" in err


def test_serve_port_busy_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port/PORT" in err
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_cli_version_flag_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"picgate {picgate.__version__}"


def test_admin_create_in_empty_folder_says_a_database_was_created(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "admin", "create", "--username", "ops", "--password", "long-pass")
    assert proc.returncode == 0, proc.stderr
    where = tmp_path / "data" / "db" / "picgate.db"
    assert f"database: sqlite:///./data/db/picgate.db ({where})" in proc.stdout
    assert f"a new one was created at {where}" in proc.stdout
    assert "DATABASE_URL" in proc.stdout

    again = run_cli(tmp_path, "admin", "create", "--username", "ops", "--password", "long-pass2")
    assert again.returncode == 0, again.stderr
    assert f"({where})" in again.stdout and "new one was created" not in again.stdout


@pytest.mark.parametrize(
    "args", [["create", "--username", "ops", "--password", "long-pass"], ["unlock"]]
)
def test_admin_commands_bad_database_url_one_line_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(tmp_path, "admin", *args, DATABASE_URL="mysql://u:hunter22@db/x")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "DATABASE_URL" in lines[0] and "sqlite:///" in lines[0]
    assert "hunter22" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created for a URL that was refused


def test_local_file_refused_url_names_no_file() -> None:
    assert local_file("mysql://db/x") is None and local_file("foo") is None
    assert shown_url("foo") == "(not a database URL)"


def test_cleanup_in_empty_folder_says_a_database_was_created(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "cleanup", "--json")
    assert proc.returncode == 0, proc.stderr
    where = tmp_path / "data" / "db" / "picgate.db"
    assert f"a new one was created at {where}" in proc.stderr
    assert "database:" not in proc.stdout  # stdout keeps the report


def test_shown_url_credentials_masked() -> None:
    assert shown_url("postgresql+psycopg://u:hunter22@db/x") == "postgresql+psycopg://u:***@db/x"
    shown = shown_url("libsql://x.turso.io?authToken=eyJsecret")
    assert "eyJsecret" not in shown and "authToken=***" in shown
    assert shown_url("sqlite:////srv/picgate.db") == "sqlite:////srv/picgate.db"
