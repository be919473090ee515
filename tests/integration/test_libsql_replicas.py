"""Two ``picgate serve`` processes (replicas) on one sqld, eight concurrent clients.

Every client generates images through both replicas (the stub upstream answers each prompt with
its own image) and reads each image back from both. Afterwards: no request failed, every image
has its row in the shared database and was served by both replicas with the right bytes, no
replica logged a database failure, and the event log holds every line the requests wrote
(three per generation; none dropped). The replicas share the image folder, as a volume would.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from picgate.db.engine import Database
from tests import orm
from tests.conftest import GATEWAY_KEY
from tests.orm import Image, LogEntry
from tests.robustness.faults import ServeProcess, serve_process
from tests.sqld import SqldServer
from tests.support.images import b64, make_image
from tests.support.upstream import StubUpstream

CLIENTS = 8
ROUNDS = 6  # generations per client


@pytest.fixture
def replicas(
    tmp_path: Path, upstream: StubUpstream, start_sqld: Callable[..., SqldServer]
) -> Iterator[tuple[SqldServer, list[ServeProcess]]]:
    sqld = start_sqld()
    shared = {
        "DATABASE_URL": sqld.database_url,
        "IMAGES_DIR": str(tmp_path / "images"),
        "LOG_LEVEL": "WARNING",
    }
    started: list[ServeProcess] = []
    try:
        for name in ("a", "b"):  # one after the other: the first one migrates the database
            (tmp_path / name).mkdir()
            started.append(serve_process(tmp_path / name, upstream.base_url, **shared).start())
        yield sqld, started
    finally:
        for replica in started:
            replica.stop()


def images_by_prompt(upstream: StubUpstream) -> dict[str, bytes]:
    images = {
        f"libsql-{c}-{r}": make_image("PNG", 6_000, seed=1000 + c * ROUNDS + r)
        for c in range(CLIENTS)
        for r in range(ROUNDS)
    }

    async def generations(request: Request) -> Response:
        prompt = request.state.recorded.json["prompt"]
        return JSONResponse({"created": 1, "data": [{"b64_json": b64(images[prompt])}]})

    upstream.handlers["/v1/images/generations"] = generations
    return images


@pytest.mark.slow
def test_two_replicas_eight_clients_on_sqld_lose_nothing(
    replicas: tuple[SqldServer, list[ServeProcess]], upstream: StubUpstream
) -> None:
    sqld, servers = replicas
    images = images_by_prompt(upstream)
    made: dict[str, str] = {}  # image id -> prompt
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        with httpx.Client(timeout=60) as http:
            for r in range(ROUNDS):
                prompt = f"libsql-{c}-{r}"
                server = servers[(c + r) % 2]
                try:
                    answer = http.post(
                        f"{server.url}/v1/images/generations",
                        json={"model": "picgate", "prompt": prompt, "response_format": "url"},
                        headers=headers,
                    )
                    if answer.status_code != 200:
                        errors.append(f"{prompt}: {answer.status_code} {answer.text[:300]}")
                        continue
                    image_id = answer.json()["data"][0]["url"].rsplit("/", 1)[1].split(".")[0]
                    with lock:
                        made[image_id] = prompt
                    for replica in servers:
                        got = http.get(f"{replica.url}/images/{image_id}.png")
                        if got.status_code != 200 or got.content != images[prompt]:
                            errors.append(f"{prompt} from {replica.url}: {got.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(f"{prompt}: {exc!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for server in servers:
        server.stop()  # a clean stop writes the buffered log lines

    assert errors == []
    assert len(made) == CLIENTS * ROUNDS
    db = Database(sqld.database_url)
    try:
        rows = orm.read(db, lambda s: s.execute(select(Image.id, Image.sha256, Image.prompt)).all())
        assert {(i, hashlib.sha256(images[p]).hexdigest(), p) for i, p in made.items()} == set(
            map(tuple, rows)
        )
        lines = orm.read(db, lambda s: s.scalars(select(LogEntry.message)).all())
    finally:
        db.dispose()
    asked = [line for line in lines if "prompt=libsql-" in line]
    answered = [line for line in lines if "上游返回成功" in line]
    done = [line for line in lines if "文生图完成" in line]
    assert len(asked) == len(answered) == len(done) == CLIENTS * ROUNDS
    assert sorted(line.rsplit(": ", 1)[1] for line in done) == sorted(f"{i[:8]}..." for i in made)
    for server in servers:
        log = server.log.read_text(errors="replace")
        assert "could not write" not in log and "Traceback" not in log, log[-3000:]
