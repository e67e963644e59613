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
            "methods": [{"name": n, "scope": "read", "summary": n} for n in ("ok", "crash", "hang", "garbage", "noisy", "chatty")]
            + ([{"name": os.environ["UNRULY_EXTRA"], "scope": "read", "summary": "x"}] if os.environ.get("UNRULY_EXTRA") else []),
            "tools": ([{"name": os.environ["UNRULY_TOOL"], "description": "x", "inputSchema": {"type": "object"}}] if os.environ.get("UNRULY_TOOL") else []),
            "events": []}})
    elif method == "ok":
        send({"jsonrpc": "2.0", "id": rid, "result": {"pid": os.getpid()}})
    elif method == "crash":
        sys.exit(3)
    elif method == "hang":
        time.sleep(3600)
    elif method == "garbage":
        sys.stdout.write("this is not json\n")
        sys.stdout.flush()
    elif method == "noisy":
        # `mib` MiB on stderr without a newline, then bytes that are not UTF-8 (still no newline).
        chunk = b"x" * (1024 * 1024)
        for _ in range(int((req.get("params") or {}).get("mib", 64))):
            sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.write(b"\xff\xfe\x80 not utf-8 \xc3")
        sys.stderr.buffer.flush()
        send({"jsonrpc": "2.0", "id": rid, "result": {"pid": os.getpid()}})
    elif method == "chatty":
        # A line on stderr, then the answer: a plugin whose stderr is not read dies here.
        sys.stderr.buffer.write(b"chatty \xff\n")
        sys.stderr.buffer.flush()
        send({"jsonrpc": "2.0", "id": rid, "result": {"pid": os.getpid()}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "result": None})
