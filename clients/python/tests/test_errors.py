"""Error responses become typed exceptions carrying code, message, kind and data."""

from __future__ import annotations

import pytest

from clawgate_client import (
    ClawgateError,
    Client,
    ConflictError,
    InvalidParamsError,
    MethodNotFoundError,
    NotFoundError,
)


async def test_missing_session_is_not_found(client: Client, key: str) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.sessions.get(key=key)
    err = info.value
    assert isinstance(err, ClawgateError)
    assert err.code == -32022
    assert err.kind == "not_found"
    assert err.data["kind"] == "not_found"
    assert key in err.message


async def test_bad_params_name_the_field(client: Client) -> None:
    with pytest.raises(InvalidParamsError) as info:
        await client.sessions.list(limit=0)
    assert (info.value.code, info.value.kind, info.value.path) == (
        -32602,
        "invalid_params",
        "limit",
    )
    assert info.value.data["path"] == "limit"

    with pytest.raises(InvalidParamsError) as info:
        await client.call("sessions.list", {"limti": 5})  # a typo is never ignored
    assert info.value.path == "limti"

    with pytest.raises(InvalidParamsError) as info:
        await client.gateway.hello(client={"name": ""})
    assert info.value.path == "client.name"

    with pytest.raises(InvalidParamsError) as info:
        await client.sessions.create(key="no spaces allowed")
    assert info.value.path == "key"


async def test_unknown_method_and_conflict(client: Client, key: str) -> None:
    with pytest.raises(MethodNotFoundError) as info:
        await client.call("no.such_method", {})
    assert (info.value.code, info.value.kind) == (-32601, "method_not_found")

    await client.sessions.create(key=key)
    with pytest.raises(ConflictError) as conflict:
        await client.sessions.create(key=key)
    assert (conflict.value.code, conflict.value.kind) == (-32023, "conflict")

    with pytest.raises(ConflictError):
        await client.sessions.delete(key="main")

    # The connection is still fine after errors.
    assert (await client.gateway.health()).ok
