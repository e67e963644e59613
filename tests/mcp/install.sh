#!/usr/bin/env bash
# Installs the MCP test servers from package-lock.json (npm ci), only when node_modules is missing
# or was installed from another lockfile. The Rust tests of src/mcp run these servers.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.clawgate-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d node_modules/@modelcontextprotocol/server-everything ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
