#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (unit, integration over real sockets,
# the binary), and the schema freshness check. Installs whatever it needs from lockfiles.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== no import cycles between the files of src/"
python3 ../shared/tools/module_cycles.py .

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== MCP test servers (tests/mcp, from their lockfile)"
./tests/mcp/install.sh

echo "== NATS server for the cluster tests (tests/nats, pinned)"
./tests/nats/install.sh

echo "== cargo test"
cargo test --lib --bins --tests --locked

echo "== schema is current"
cargo run --quiet --locked -- schema --check

# The SDKs run against the gateway binary the Rust tests just built.
export CLAWGATE_BIN="$PWD/target/debug/clawgate"

echo "== TypeScript client"
./clients/typescript/test.sh

echo "== web console units (console/test: Markdown, TOML, client, outbox)"
node --test console/test/*.test.mjs

echo "== web console in a browser (tests/console: chromium + playwright-core)"
./tests/console/run.sh

if [ -x clients/python/test.sh ]; then
  echo "== Python client"
  ./clients/python/test.sh
fi
