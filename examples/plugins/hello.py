#!/usr/bin/env python3
"""An example clawgate plugin: plain Python, standard library only.

It speaks JSON-RPC 2.0 with the gateway over stdin/stdout, one message per line
(docs/PLUGINS.md). It offers a method (`hello.greet`), an agent tool (`hello_shout`) and an
event (`hello.greeted`). Logs go to stderr, which the gateway copies into its own log.
"""

import json
import sys

DESCRIPTION = {
    "methods": [
        {
            "name": "greet",
            "scope": "read",
            "summary": "Greets someone by name (and publishes hello.greeted).",
            "paramsSchema": {
                "title": "GreetParams",
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "resultSchema": {
                "title": "GreetResult",
                "type": "object",
                "properties": {"greeting": {"type": "string"}},
                "required": ["greeting"],
            },
            "exampleParams": {"name": "Ada"},
            "exampleResult": {"greeting": "Hello, Ada!"},
        }
    ],
    "tools": [
        {
            "name": "shout",
            "description": "Returns the text in capital letters.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": False,
            },
        }
    ],
    "events": [{"name": "greeted", "summary": "Someone was greeted."}],
}


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def answer(request_id, result=None, error=None):
    message = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        message["error"] = error
    else:
        message["result"] = result
    send(message)


def invalid(path, message):
    return {"code": -32602, "message": message, "data": {"kind": "invalid_params", "path": path}}


def handle(method, params):
    """Returns (result, error)."""
    if method == "plugin.describe":
        return DESCRIPTION, None
    if method == "greet":
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return None, invalid("name", "expected a non-empty string")
        extra = sorted(set(params) - {"name"})
        if extra:
            return None, invalid(extra[0], "unknown field")
        send({"jsonrpc": "2.0", "method": "plugin.emit", "params": {"event": "greeted", "payload": {"name": name}}})
        return {"greeting": f"Hello, {name}!"}, None
    if method == "tool.call":
        if params.get("name") == "shout":
            text = (params.get("input") or {}).get("text")
            if not isinstance(text, str):
                return {"content": "shout needs a `text` string", "isError": True}, None
            return {"content": text.upper()}, None
        return {"content": f"no tool {params.get('name')!r}", "isError": True}, None
    return None, {"code": -32601, "message": f"no method {method!r}", "data": {"kind": "method_not_found"}}


def main():
    print("hello plugin started", file=sys.stderr, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"ignoring a line that is not JSON: {exc}", file=sys.stderr, flush=True)
            continue
        params = request.get("params") or {}
        result, error = handle(request.get("method"), params)
        if "id" in request:
            answer(request["id"], result, error)


if __name__ == "__main__":
    main()
