"""Cold start: ``python -c "import handler"`` against ``python -c "import fastapi"``.

Importing ``handler`` is what Lambda's init phase does: settings, services, the app, and
``services.prepare()`` (migrations checked). PicGate's bytecode is compiled first, as the
deployment package carries it (docs/DEPLOY.md). The environment makes it buildable offline: SQLite
in a temp dir (migrated once before timing, as a deployed database would be), R2 variables
pointing at an unused local port (nothing connects at import), serverless mode.

    .venv/bin/python -m bench.coldstart [--runs 15] [--importtime]
        [--python PYTHON --layer .build/layer/python]

Prints the median wall and CPU time (user + system, less sensitive to a busy machine) of each
command over ``--runs`` fresh interpreters, run in turns, and the ratios. The last two rows
are whole cold invocations (init plus a first ``GET /v1/models`` through the handler), for
PicGate and for a bare FastAPI app behind Mangum: work moved out of the init phase into the
first request shows there, not in the import ratio.
``--importtime`` also prints the 25 slowest imports of ``import handler`` (``-X importtime``).

``--compare DIR`` (repeatable) also runs the cold invocation of the PicGate in DIR (another
checkout, e.g. ``git archive main | tar -x -C /tmp/before``) in the same turns, against the same
database and layer: a before/after in one run, on a machine whose speed drifts between runs.

``--python`` and ``--layer`` time what Lambda runs instead of this virtualenv: every child is
that interpreter (Lambda's version, e.g. a python3.13) started with ``-S``, so only the standard
library, PicGate's code and the layer built by ``infra/build-lambda-layer.sh`` can be imported,
the bare FastAPI app included; PicGate's bytecode is compiled by that interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.5  # import handler / import fastapi
INVOCATION_GOAL = 2.0  # a whole cold invocation / the same for a bare FastAPI + Mangum app
# The Lambda layer (infra/build-lambda-layer.sh) has no uvicorn, hence no click, which httpx (its
# CLI) imports when it is installed. PyYAML is in the layer (MODELS_FILE needs it).
LAYER_LIKE = "import sys; sys.modules.update(click=None); import handler"
# What a cold invocation costs in all: the init phase plus the first request (GET /v1/models
# with the key: settings, auth, routing, Mangum), against the same for a bare FastAPI app.
_EVENT = (
    "import json; e = json.load(open('tests/events/function_url_get.json')); "
    "e['rawPath'] = e['requestContext']['http']['path'] = '/v1/models'; "
    "e['headers']['authorization'] = 'Bearer pg-coldstart-key-0123456789'; "
)
FIRST_CALL = (
    LAYER_LIKE + "; " + _EVENT + "r = handler.handler(e, None); assert r['statusCode'] == 200, r"
)
BARE_FIRST_CALL = (
    _EVENT + "import fastapi, mangum; app = fastapi.FastAPI(); "
    "app.get('/v1/models')(lambda: {'object': 'list', 'data': []}); "
    "r = mangum.Mangum(app, lifespan='off')(e, None); assert r['statusCode'] == 200, r"
)


def _label(code: str) -> str:
    names = {
        FIRST_CALL: "cold invocation, handler",
        BARE_FIRST_CALL: "cold invocation, bare FastAPI",
        LAYER_LIKE: "import handler, layer-like",
    }
    return names.get(code, "python -c " + repr(code)[:24])


def lambda_env(tmp: Path, layer: Path | None = None, repo: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "DATABASE_"))}
    env.update(
        {
            "RUNTIME_MODE": "serverless",
            "DATABASE_URL": f"sqlite:///{tmp}/db/picgate.db",
            "IMAGES_DIR": str(tmp / "images"),
            "SECRET_KEY": "coldstart-secret-0123456789",
            "GATEWAY_API_KEY": "pg-coldstart-key-0123456789",
            "UPSTREAM_API_BASE": "http://127.0.0.1:9/v1",
            "R2_ENDPOINT_URL": "http://127.0.0.1:9",
            "R2_ACCESS_KEY_ID": "coldstart",
            "R2_SECRET_ACCESS_KEY": "coldstart",
            "R2_BUCKET_NAME": "coldstart",
            "PYTHONPATH": os.pathsep.join([str(repo), *([str(layer)] if layer else [])]),
        }
    )
    return env


def run_once(
    code: str, env: dict[str, str], python: list[str], repo: Path = REPO
) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one fresh interpreter running ``code``."""
    start = time.perf_counter()
    child = subprocess.Popen([*python, "-c", code], env=env, cwd=repo)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{code!r} failed with exit code {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def interleaved(
    codes: list[str],
    env: dict[str, str],
    runs: int,
    python: list[str],
    others: dict[Path, dict[str, str]] | None = None,
) -> tuple[dict[str, list[tuple[float, float]]], dict[Path, list[tuple[float, float]]]]:
    """Each code ``runs`` times, taking turns, so a busy machine slows them all alike; in the
    same turns, the cold invocation of each other checkout (``others``: its environment)."""
    results: dict[str, list[tuple[float, float]]] = {code: [] for code in codes}
    compared: dict[Path, list[tuple[float, float]]] = {repo: [] for repo in others or {}}
    for _ in range(runs):
        for code in codes:
            results[code].append(run_once(code, env, python))
        for repo, other_env in (others or {}).items():
            compared[repo].append(run_once(FIRST_CALL, other_env, python, repo))
    return results, compared


def slowest_imports(
    env: dict[str, str], python: list[str], count: int = 25
) -> list[tuple[int, str]]:
    done = subprocess.run(
        [*python, "-X", "importtime", "-c", LAYER_LIKE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    parser.add_argument("--layer", type=Path, help="run from this Lambda layer alone (-S)")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="another PicGate checkout whose cold invocation runs in the same turns",
    )
    args = parser.parse_args()
    compare = [repo.resolve() for repo in args.compare]
    python = [args.python, *(["-S"] if args.layer else [])]
    if args.layer and not (args.layer / "fastapi").is_dir():
        raise SystemExit(f"--layer {args.layer}: no layer there (infra/build-lambda-layer.sh)")
    # as in the Lambda package (docs/DEPLOY.md): PicGate's bytecode compiled, hash-checked
    for repo in (REPO, *compare):
        subprocess.run(
            [
                args.python,
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode",
                "checked-hash",
                "picgate",
                "handler.py",
            ],
            cwd=repo,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    with tempfile.TemporaryDirectory(prefix="picgate-coldstart-") as tmp:
        layer = args.layer.resolve() if args.layer else None
        env = lambda_env(Path(tmp), layer)
        others = {repo: lambda_env(Path(tmp), layer, repo) for repo in compare}
        first = run_once("import handler", env, python)[0]  # creates and migrates the database
        codes = [
            "pass",
            "import fastapi",
            "import handler",
            LAYER_LIKE,
            BARE_FIRST_CALL,
            FIRST_CALL,
        ]
        results, compared = interleaved(codes, env, args.runs, python, others)
        version = subprocess.run(
            [*python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        where = f"layer {args.layer}, -S" if args.layer else "this virtualenv"
        print(f"python {version} ({where}), {args.runs} interleaved runs each, medians:")
        print(f"  {'import handler (first, migrates)':34s} wall {first * 1000:6.0f} ms")
        medians = {}
        for code in codes:
            walls = [w for w, _ in results[code]]
            cpus = [c for _, c in results[code]]
            medians[code] = (statistics.median(walls), statistics.median(cpus))
            print(
                f"  {_label(code):34s} wall {medians[code][0] * 1000:6.0f} ms"
                f" ({min(walls) * 1000:.0f}-{max(walls) * 1000:.0f}),"
                f" cpu {medians[code][1] * 1000:6.0f} ms"
            )
        for name, code in (("handler", "import handler"), ("handler, layer-like", LAYER_LIKE)):
            for i, label in enumerate(("wall", "cpu")):
                ratio = medians[code][i] / medians["import fastapi"][i]
                verdict = "within" if ratio <= GOAL else "over"
                print(f"  {name} / fastapi ({label}) = {ratio:.2f}x ({verdict} the {GOAL}x goal)")
        for i, label in enumerate(("wall", "cpu")):
            ratio = medians[FIRST_CALL][i] / medians[BARE_FIRST_CALL][i]
            verdict = "within" if ratio <= INVOCATION_GOAL else "over"
            print(
                f"  cold invocation, handler / bare FastAPI app ({label}) = {ratio:.2f}x"
                f" ({verdict} the {INVOCATION_GOAL}x goal)"
            )
        for repo, times in compared.items():
            wall = statistics.median(w for w, _ in times)
            cpu = statistics.median(c for _, c in times)
            print(
                f"  cold invocation, handler in {repo}: wall {wall * 1000:.0f} ms, cpu"
                f" {cpu * 1000:.0f} ms; / bare FastAPI app: wall"
                f" {wall / medians[BARE_FIRST_CALL][0]:.2f}x, cpu"
                f" {cpu / medians[BARE_FIRST_CALL][1]:.2f}x"
            )
        if args.importtime:
            print("slowest imports under `import handler`, layer-like (cumulative µs):")
            for micros, name in slowest_imports(env, python):
                print(f"  {micros:9d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
