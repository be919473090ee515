"""``X-Forwarded-For`` is believed only from ``TRUSTED_PROXIES``: the real CLI, real sockets.

Before, ``picgate serve`` trusted it from any loopback peer (uvicorn's default), so one address
could pose as many (around the per-address login limit) and write what it liked in the log.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.robustness.faults import serve_process
from tests.support.upstream import StubUpstream

FORGED = "203.0.113.7"


def tally_lines(db: Path) -> list[str]:
    """The wrong-key lines once the server's background flush has written one (or none)."""
    for _ in range(100):  # the flush runs every second; bounded so a missing line fails
        with sqlite3.connect(db) as conn:
            rows = [r[0] for r in conn.execute("SELECT message FROM log_entries")]
        found = [r for r in rows if "网关密钥错误" in r]
        if found:
            return found
        time.sleep(0.1)
    return []


@pytest.mark.parametrize(
    ("trusted", "seen"), [("", "127.0.0.1"), ("127.0.0.0/8", FORGED)], ids=["default", "trusted"]
)
def test_forwarded_for_believed_only_from_trusted_proxies(
    tmp_path: Path, upstream: StubUpstream, trusted: str, seen: str
) -> None:
    server = serve_process(tmp_path, upstream.base_url, TRUSTED_PROXIES=trusted).start()
    try:
        answer = httpx.get(
            server.url + "/v1/models",
            headers={"Authorization": "Bearer pg-wrong-key-0000", "X-Forwarded-For": FORGED},
            timeout=10,
        )
        lines = tally_lines(tmp_path / "data" / "db" / "picgate.db")
    finally:
        server.stop()
    assert answer.status_code == 401
    assert lines == [f"⚠️ 网关密钥错误 ×1 来自 {seen} (wrong gateway API key)"]


def test_forwarded_bad_trusted_proxies_is_one_line_naming_the_setting(
    tmp_path: Path, upstream: StubUpstream
) -> None:
    server = serve_process(tmp_path, upstream.base_url, TRUSTED_PROXIES="10.0.0.0/8,proxy")
    result = server.cli("serve", "--port", str(server.port))
    assert result.returncode == 2
    assert "TRUSTED_PROXIES: 'proxy' is not an IP address or CIDR" in result.stderr
    assert "Traceback" not in result.stderr
