"""Robustness suite: a process-wide guard that keeps every test's traffic on loopback.

Several tests hand PicGate URLs that point at private and metadata addresses (SSRF checks) or let
a fuzzer write settings. If a guard under test ever failed, the connection must still not leave
the machine: an audit hook refuses any ``socket.connect`` to an address outside 127.0.0.0/8 and
::1 while the robustness tests run, and records the attempt so the test can fail on it.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from picgate.app import create_app
from picgate.services import Services
from tests.conftest import Gateway
from tests.support.servers import ServerThread

_state: dict[str, Any] = {"active": False, "blocked": []}


def _is_loopback(host: object) -> bool:
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _state["active"]:
        return
    sock, address = args
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_loopback(host):
        _state["blocked"].append(str(host))
        raise ConnectionRefusedError(f"robustness suite: connection to {host} blocked")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[list[str]]:
    """Refuse (and record) connections that would leave loopback; fail the test if any was tried."""
    _state["blocked"] = []
    _state["active"] = True
    try:
        yield _state["blocked"]
    finally:
        _state["active"] = False
    assert not _state["blocked"], f"tried to connect outside loopback: {_state['blocked']}"


@pytest.fixture
def start_gateway(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Gateway]]:
    """As the suite-wide fixture, but on the plain asyncio loop: uvloop connects in C, past the
    audit hook, and the hook is what proves no request left loopback."""
    started: list[Gateway] = []

    def start(**overrides: Any) -> Gateway:
        services = Services(make_settings(**overrides))
        server = ServerThread(create_app(services=services), loop="asyncio").start()
        gateway = Gateway(server, services)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.server.stop()
