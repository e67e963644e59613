from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import Gateway, start_gateway  # noqa: E402

from clawgate_client import Client  # noqa: E402


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the tests that do not stop it (auth off, loopback, echo provider)."""
    gw = start_gateway(tmp_path_factory.mktemp("shared") / "data")
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited {code}; log:\n{gw.log()}"


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    async with Client.connect(gateway.url, request_timeout=10.0) as c:
        yield c


@pytest.fixture
def key() -> str:
    """A fresh session key, so tests sharing the gateway do not see each other's sessions."""
    return f"py-{uuid.uuid4().hex[:12]}"
