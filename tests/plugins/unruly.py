#!/usr/bin/env python3
"""A plugin that misbehaves on request, to test the gateway's isolation of plugins."""
import json
import os
import sys
import time

def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()

STARTS = os.environ.get("UNRULY_STARTS_FILE")
if STARTS:
    with open(STARTS, "a") as f:
        f.write("start\n")

for line in sys.stdin:
    req = json.loads(line)
    method, rid = req.get("method"), req.get("id")
    if method == "plugin.describe":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "methods": [{"name": n, "scope": "read", "summary": n} for n in ("ok", "crash", "hang", "garbage")]
            + ([{"name": os.environ["UNRULY_EXTRA"], "scope": "read", "summary": "x"}] if os.environ.get("UNRULY_EXTRA") else []),
            "tools": [], "events": []}})
    elif method == "ok":
        send({"jsonrpc": "2.0", "id": rid, "result": {"pid": os.getpid()}})
    elif method == "crash":
        sys.exit(3)
    elif method == "hang":
        time.sleep(3600)
    elif method == "garbage":
        sys.stdout.write("this is not json\n")
        sys.stdout.flush()
    else:
        send({"jsonrpc": "2.0", "id": rid, "result": None})
