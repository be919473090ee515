"""AWS Lambda entry points: ``handler`` (HTTP, through Mangum) and ``cleanup`` (scheduled).

The app is built once per container, here at module scope, during Lambda's init phase:
settings from the environment (``RUNTIME_MODE`` defaults to ``serverless``), ``Services``,
``create_app``, and ``services.prepare()`` (folders, migrations checked once, first-start key).
Every later invocation reuses them; ``BUILDS`` counts the builds so tests can see that.

``handler(event, context)`` serves Lambda function URL events (payload 2.0), API Gateway HTTP
API (v2) and REST API (v1) events. Request bodies arrive base64-encoded when binary; responses
are base64-encoded unless their type is text (Mangum's default ``text_mime_types``: ``text/*``,
``application/json`` ...), so ``image/*`` goes out base64 with ``isBase64Encoded: true`` and
JSON goes out as plain text. Mangum runs with ``lifespan="off"``: no per-invocation start/stop,
and no background tasks (Lambda freezes the process between invocations; nothing may run after
the response). Before returning, buffered log lines and access times are written
(``services.flush()``).

``cleanup(event, context)`` runs the scheduled jobs once (EventBridge) and returns their report.

Event loop: Mangum runs each invocation with ``asyncio.get_event_loop().run_until_complete``.
The shared ``httpx.AsyncClient`` in ``Services`` keeps pooled connections bound to the loop that
opened them, so this module owns one loop for the container's life and makes it current before
every invocation: a test runner (or anything else) that swaps the thread's loop in between
cannot leave the client on a dead loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from typing import Any

from mangum import Mangum

from picgate import log_redaction
from picgate.app import create_app
from picgate.config import Settings
from picgate.services import Services

log = logging.getLogger("picgate")

LOOP = asyncio.new_event_loop()
"""The one event loop of this container (see the module docstring)."""

BUILDS = 0
"""How many times this container built the app (1 after import; tests check reuse)."""


def _settings() -> Settings:
    # handler.py only ever runs on Lambda (or a test that plays Lambda): serverless unless the
    # environment says otherwise
    if os.environ.get("RUNTIME_MODE"):
        return Settings()
    return Settings(runtime_mode="serverless")


def build() -> tuple[Services, Any, Mangum]:
    """Settings → Services → app → prepared; the Mangum adapter around it (lifespan off)."""
    global BUILDS
    settings = _settings()
    logging.getLogger("picgate").setLevel(settings.log_level.upper())
    services = Services(settings)
    application = create_app(services=services)
    # no lifespan under Lambda: the log filter the app's lifespan installs is installed here
    log_redaction.install(lambda: services.events.redactor)
    services.prepare()
    asyncio.set_event_loop(LOOP)  # Mangum picks up the current loop when it is built
    adapter = Mangum(application, lifespan="off")
    BUILDS += 1
    return services, application, adapter


services, app, adapter = build()


def _flush() -> None:
    try:
        services.flush()
    except Exception as exc:  # the answer is ready; a log write must not turn it into an error
        log.warning("could not flush logs and access times: %s", exc)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One HTTP invocation: Mangum turns the event into ASGI and the answer into Lambda's shape."""
    asyncio.set_event_loop(LOOP)
    try:
        return adapter(event, context)
    finally:
        _flush()


def cleanup(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One scheduled run of every job (EventBridge ``rate(1 hour)``); returns the job report."""
    from picgate.jobs.scheduler import run_scheduled  # only the scheduled function needs it

    asyncio.set_event_loop(LOOP)
    try:
        result = run_scheduled(services.cleanup)
        if inspect.isawaitable(result):
            result = LOOP.run_until_complete(result)
        report: dict[str, Any] = dict(result)
        return report
    finally:
        _flush()
