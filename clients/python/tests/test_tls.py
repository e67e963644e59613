"""wss:// to a gateway with a self-signed certificate: pinned by its fingerprint, trusted
through a CA file, and a wrong pin refused before any byte of the upgrade request (the token)
reaches the server."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway

from clawgate_client import ClawgateConnectionError, Client, TlsFingerprintError


def _fingerprint(pem_file: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem_file.read_text())
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
async def tls_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await asyncio.to_thread(
        start_gateway, tmp_path / "data", config="[gateway.tls]\nself_signed = true\n"
    )
    yield gw
    assert await asyncio.to_thread(gw.stop) == 0, gw.log()


async def test_pinned_fingerprint(tls_gateway: Gateway) -> None:
    assert tls_gateway.url.startswith("wss://")
    fp = _fingerprint(tls_gateway.data_dir / "tls" / "cert.pem")
    async with Client.connect(tls_gateway.url, tls_fingerprint=fp, reconnect=False) as client:
        status = await client.gateway.status()
        assert status.tls is not None
        assert status.tls.fingerprint_sha256 == fp
    colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    async with Client.connect(tls_gateway.url, tls_fingerprint=colons, reconnect=False):
        pass


async def test_ca_file(tls_gateway: Gateway) -> None:
    ca = str(tls_gateway.data_dir / "tls" / "cert.pem")
    async with Client.connect(tls_gateway.url, tls_ca_file=ca, reconnect=False) as client:
        health = await client.gateway.health()
        assert health.ok


async def test_unverified_refused(tls_gateway: Gateway) -> None:
    with pytest.raises(ClawgateConnectionError):
        await Client.connect(tls_gateway.url, reconnect=False)


async def test_wrong_pin_refused_before_the_request(tls_gateway: Gateway) -> None:
    # A TLS server of our own, with the gateway's certificate, counting what it receives.
    tls_dir = tls_gateway.data_dir / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    received = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while chunk := await reader.read(4096):
                received += len(chunk)
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    fp = _fingerprint(tls_dir / "cert.pem")
    wrong = ("11" if fp.startswith("00") else "00") + fp[2:]
    try:
        with pytest.raises(TlsFingerprintError) as refused:
            await Client.connect(
                f"wss://127.0.0.1:{port}/",
                token="a-secret-token-never-sent",
                tls_fingerprint=wrong,
                reconnect=False,
            )
        assert refused.value.expected == wrong
        assert refused.value.presented == fp
        await asyncio.sleep(0.2)
        assert received == 0, "request bytes reached the server"
    finally:
        server.close()
        await server.wait_closed()


def test_options_checked() -> None:
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/", tls_fingerprint="ab" * 32)
    with pytest.raises(ValueError):
        Client("wss://127.0.0.1:1/", tls_fingerprint="xyz")
