#!/usr/bin/env bash
# The web console's browser tests: installs what is missing (Debian's chromium with apt-get, once;
# playwright-core from the lockfile with npm ci, when node_modules is missing or older than the
# lockfile), then runs every tests/console/*.test.mjs against the gateway binary
# $CLAWGATE_BIN (default target/debug/clawgate). No browser is downloaded: playwright-core drives
# the system's chromium. Screenshots go to target/console-screenshots/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if ! command -v chromium >/dev/null 2>&1; then
  echo "-- installing Debian's chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
CHROMIUM="$(command -v chromium)"
export CHROMIUM

stamp="$here/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ]; then
  echo "-- npm ci (tests/console)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

export CLAWGATE_BIN="${CLAWGATE_BIN:-$repo/target/debug/clawgate}"
if [ ! -x "$CLAWGATE_BIN" ]; then
  echo "no gateway binary at $CLAWGATE_BIN: run cargo build first (or set CLAWGATE_BIN)" >&2
  exit 1
fi
echo "-- $("$CHROMIUM" --version 2>/dev/null | head -n 1), gateway $CLAWGATE_BIN"
cd "$repo"
mkdir -p target/console-screenshots
node --test --test-concurrency=1 tests/console/*.test.mjs
