#!/usr/bin/env bash
# Installs the locked npm packages, checks the generated types are fresh, builds, and runs the
# tests against a live gateway binary (CLAWGATE_BIN, default target/debug/clawgate).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent check-generated
npm run --silent build
node --test --test-concurrency=1 test/
