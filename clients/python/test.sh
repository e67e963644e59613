#!/usr/bin/env bash
# Tests of the Python client: creates clients/python/.venv if missing, installs the locked dev
# requirements and the package (editable), checks the generated files are fresh, then runs
# pytest against a live gateway binary (CLAWGATE_BIN, default <repo>/target/debug/clawgate).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
here="$PWD"
repo="$(cd ../.. && pwd)"
venv="$here/.venv"
py="$venv/bin/python"

if ! "$py" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi

# Install only when the lockfile or the project metadata changed since the last install.
stamp="$venv/.clawgate-installed"
want="$(cat requirements-dev.txt pyproject.toml | "$py" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$py" -m pip install --quiet --disable-pip-version-check --no-input -r requirements-dev.txt
  # hatchling comes from the lockfile: no isolated build env fetching an unpinned one.
  "$py" -m pip install --quiet --disable-pip-version-check --no-input \
    --no-build-isolation --no-deps --editable .
  echo "$want" > "$stamp"
fi

export CLAWGATE_BIN="${CLAWGATE_BIN:-$repo/target/debug/clawgate}"
if [ ! -x "$CLAWGATE_BIN" ]; then
  echo "clients/python/test.sh: no gateway binary at $CLAWGATE_BIN; building it (cargo build)" >&2
  (cd "$repo" && cargo build --quiet --locked)
fi

"$py" scripts/generate.py --check
"$py" -m pytest tests
