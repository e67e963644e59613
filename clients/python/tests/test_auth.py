"""A gateway with a token: the upgrade needs `Authorization: Bearer` (or `?token=`)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway

from clawgate_client import AuthenticationError, Client, HandshakeError


@pytest.fixture
async def token_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await asyncio.to_thread(
        start_gateway, tmp_path / "data", token=f"tok-{secrets.token_hex(16)}"
    )
    yield gw
    assert await asyncio.to_thread(gw.stop) == 0, gw.log()


async def test_token_required(token_gateway: Gateway) -> None:
    with pytest.raises(AuthenticationError) as missing:
        await Client.connect(token_gateway.url)
    assert missing.value.status == 401
    assert missing.value.kind == "unauthorized"
    assert isinstance(missing.value, HandshakeError)

    with pytest.raises(AuthenticationError) as wrong:
        async with Client.connect(token_gateway.url, token="tok-wrong-wrong-wrong"):
            pass
    assert wrong.value.status == 401


async def test_token_accepted(token_gateway: Gateway) -> None:
    assert token_gateway.token is not None
    async with Client.connect(token_gateway.url, token=token_gateway.token) as client:
        assert (await client.gateway.health()).ok
        assert (await client.gateway.status()).port == token_gateway.port

    # Browsers' way: the token in the URL.
    async with Client.connect(f"{token_gateway.url}?token={token_gateway.token}") as client:
        assert (await client.gateway.health()).ok
