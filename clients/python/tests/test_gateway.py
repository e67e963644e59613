"""gateway.*, models.list, tools.catalog, rpc.discover, and the shape of the typed layer."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from gateway import REPO_ROOT, Gateway

from clawgate_client import METHODS, Client, Subscription, models


async def test_hello_names_the_client_and_lists_the_schema_methods(client: Client) -> None:
    hello = await client.gateway.hello(
        client=models.ClientInfo(name="pytest-sdk", version="1.2.3", mode="test")
    )
    assert isinstance(hello, models.HelloResult)
    assert hello.protocol == 2
    assert hello.server.name == "clawgate"
    assert hello.server.conn_id  # camelCase on the wire, snake_case here
    # Every method the schema documents is callable on this gateway.
    assert set(METHODS) <= set(hello.methods), set(METHODS) - set(hello.methods)
    assert hello.policy.max_batch >= 1 and hello.policy.max_payload_bytes > 0
    assert hello.snapshot.epoch and hello.snapshot.seq >= 0

    presence = await client.gateway.presence()
    mine = [e for e in presence.entries if e.conn_id == hello.server.conn_id]
    assert len(mine) == 1
    assert mine[0].client is not None
    assert (mine[0].client.name, mine[0].client.version) == ("pytest-sdk", "1.2.3")


async def test_health_and_status(client: Client, gateway: Gateway) -> None:
    health = await client.gateway.health()
    assert isinstance(health, models.Health)
    assert health.ok is True
    assert health.connections >= 1
    assert health.sessions >= 1  # `main` always exists

    status = await client.gateway.status()
    assert status.port == gateway.port
    assert Path(status.data_dir).resolve() == gateway.data_dir.resolve()
    assert status.version == health.version
    assert status.provider.name == "echo"


async def test_catalogues_and_discover(client: Client) -> None:
    listed = await client.models.list()
    assert listed.models, "models.list is empty"
    assert sum(1 for m in listed.models if m.default) == 1

    tools = await client.tools.catalog()
    names = {t.name for t in tools.tools}
    assert "list_dir" in names
    assert all(t.source == "builtin" or t.source.startswith("plugin:") for t in tools.tools)

    doc = await client.rpc.discover()
    assert isinstance(doc, dict)  # no model fits an OpenRPC document: a plain dict
    assert doc["openrpc"].startswith("1.")
    assert {m["name"] for m in doc["methods"]} >= set(METHODS)


def test_every_schema_method_has_a_typed_method() -> None:
    doc = json.loads((REPO_ROOT / "schema" / "openrpc.json").read_text())
    client = Client("ws://127.0.0.1:9/")  # never opened
    for method in doc["methods"]:
        namespace, _, short = method["name"].rpartition(".")
        py_name = "".join("_" + c.lower() if c.isupper() else c for c in short)
        fn = getattr(getattr(client, namespace), py_name)
        sig = inspect.signature(fn)
        wire_names = {p["name"] for p in method.get("params", [])}
        expected = {"".join("_" + c.lower() if c.isupper() else c for c in n) for n in wire_names}
        assert set(sig.parameters) == expected, method["name"]
        for p in method.get("params", []):
            param = sig.parameters[
                "".join("_" + c.lower() if c.isupper() else c for c in p["name"])
            ]
            assert param.kind is inspect.Parameter.KEYWORD_ONLY
            assert (param.default is inspect.Parameter.empty) == bool(p.get("required")), p
        if "x-subscription" in method:
            assert not inspect.iscoroutinefunction(fn), method["name"]
            assert isinstance(
                fn(
                    **{
                        n: "x"
                        for n, p in sig.parameters.items()
                        if p.default is inspect.Parameter.empty
                    }
                ),
                Subscription,
            )
        else:
            assert inspect.iscoroutinefunction(fn), method["name"]
