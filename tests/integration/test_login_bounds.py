"""Work anonymous callers start before they are authenticated is bounded: parallel wrong
logins get no more guesses than allowed and no 500, password checks run a few at a time,
wrong gateway keys are throttled per address, and a flood of anonymous log lines cannot push
out the admin's entries. Real HTTP on loopback (the second red team's findings)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from picgate.admin import auth
from picgate.admin.throttle import HashingBusy, HashingGate
from picgate.deps import KEY_FAILURES_ALLOWED
from picgate.eventlog import ANONYMOUS_MARK
from picgate.services import Services
from tests import orm
from tests.conftest import GATEWAY_KEY, Gateway
from tests.orm import LogEntry
from tests.support.admin import ADMIN_USER, form_token, setup_admin


def log_messages(gateway: Gateway) -> list[str]:
    gateway.services.events.flush()
    return list(orm.read(gateway.services.db, lambda s: s.scalars(select(LogEntry.message)).all()))


async def parallel_logins(
    url: str, count: int, *, addresses: Callable[[int], str] | None = None
) -> list[int]:
    """``count`` wrong logins for the admin at once; their statuses."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        token = form_token((await client.get("/admin/login")).text)

        async def one(i: int) -> int:
            headers = {"X-Forwarded-For": addresses(i)} if addresses else {}
            answer = await client.post(
                "/admin/login",
                data={"username": ADMIN_USER, "password": f"guess-{i:04d}", "csrf_token": token},
                headers=headers,
            )
            return answer.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_login_40_parallel_wrong_logins_get_at_most_the_allowed_guesses(
    gateway: Gateway,
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        setup_admin(client)
    statuses = asyncio.run(parallel_logins(gateway.url, 40))
    guesses = statuses.count(401)  # a password that was checked and was wrong
    assert set(statuses) <= {401, 429, 503}, statuses
    assert 1 <= guesses <= auth.MAX_USER_FAILURES, statuses
    messages = log_messages(gateway)
    assert not [m for m in messages if "内部错误" in m]


def test_login_parallel_checks_never_exceed_the_gate(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 logins from 200 addresses at once: at most ``slots`` argon2 checks run together
    (the real check, counted by a wrapper), the rest wait or get 503 with Retry-After."""
    running = peak = 0
    lock = threading.Lock()
    verify = auth.verify_password

    def counted(password_hash: str, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return verify(password_hash, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(auth, "verify_password", counted)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        setup_admin(client)
    statuses = asyncio.run(parallel_logins(gateway.url, 200, addresses=lambda i: f"198.51.100.{i}"))
    assert set(statuses) <= {401, 503}, statuses
    assert statuses.count(401) >= 3
    assert 1 <= peak <= 3


def test_login_gate_refuses_past_its_waiting_room() -> None:
    async def scenario() -> tuple[int, int]:
        gate = HashingGate(1, wait=0.2, max_waiting=2)
        release = asyncio.Event()
        busy = done = 0

        async def hold() -> None:
            nonlocal busy, done
            try:
                async with gate.slot():
                    await release.wait()
                    done += 1
            except HashingBusy as exc:
                assert exc.status_code == 503 and exc.headers["Retry-After"] == "1"
                busy += 1

        tasks = [asyncio.create_task(hold()) for _ in range(6)]
        await asyncio.sleep(0.5)  # the two waiting ones time out, three were refused at once
        release.set()
        await asyncio.gather(*tasks)
        return busy, done

    assert asyncio.run(scenario()) == (5, 1)


# -- wrong gateway keys -----------------------------------------------------------------------


def test_gateway_wrong_keys_throttled_per_address_with_retry_after(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        wrong = {"Authorization": "Bearer pg-wrong-key-000000"}
        statuses = [client.get("/v1/models", headers=wrong).status_code for _ in range(40)]
        refused = client.get("/v1/models", headers=gateway.headers)  # the right key, too late
        elsewhere = client.get(
            "/v1/models", headers={**gateway.headers, "X-Forwarded-For": "192.0.2.50"}
        )
    assert statuses == [401] * KEY_FAILURES_ALLOWED + [429] * (40 - KEY_FAILURES_ALLOWED)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert elsewhere.status_code == 200
    tallies = [m for m in log_messages(gateway) if "127.0.0.1" in m]
    assert sorted(tallies) == sorted(
        [
            f"⚠️ 网关密钥错误 ×{KEY_FAILURES_ALLOWED} 来自 127.0.0.1 (wrong gateway API key)",
            "🚫 网关密钥错误过多，已限流 ×11 来自 127.0.0.1 (wrong gateway keys: throttled)",
        ]
    )
    assert GATEWAY_KEY not in str(tallies)


# -- the log ------------------------------------------------------------------------------------


def test_login_flood_from_locked_address_is_one_line_per_minute(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        setup_admin(client)
        token = form_token(client.get("/admin/login").text)
        for i in range(60):
            client.post(
                "/admin/login",
                data={"username": ADMIN_USER, "password": f"wrong-{i}", "csrf_token": token},
            )
    about_logins = [m for m in log_messages(gateway) if "管理员登录" in m]
    assert len(about_logins) <= 4  # failed, locked: each one line per minute (a minute may turn)
    assert sum(int(m.split("×")[1].split()[0]) for m in about_logins) == 60


def test_eventlog_anonymous_flood_never_pushes_out_admin_entries(
    make_services: Callable[..., Services],
) -> None:
    events = make_services(log_max_entries=100).events
    for i in range(30):
        events.info(f"⚙️ admin entry {i}")
    events.flush()
    for round_ in range(5):  # 5 × 100 addresses: 500 anonymous lines over a few flushes
        for i in range(100):
            events.tally("login_failed", f"203.0.{round_}.{i}")
        events.flush()
        events._auth_rows.clear()  # as if a new minute began: the next ones are new lines

    def rows(s: Any) -> list[tuple[str, str]]:
        return [(e.id, e.message) for e in s.scalars(select(LogEntry))]

    kept = orm.read(events.db, rows)
    admin = [m for i, m in kept if "admin entry" in m]
    anonymous = [i for i, m in kept if i.endswith(ANONYMOUS_MARK)]
    assert len(admin) == 30
    assert len(anonymous) == 50 and len(kept) == 80
