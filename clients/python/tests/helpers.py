"""Test helpers: waiting for envelopes with a bound, and a TCP proxy whose connections can be cut."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from clawgate_client import Subscription, models

WAIT = 10.0  # seconds: every wait in the tests is bounded by this


async def next_matching(
    sub: Subscription,
    predicate: Callable[[models.EventEnvelope], bool],
    *,
    seen: list[models.EventEnvelope] | None = None,
    timeout: float = WAIT,
) -> models.EventEnvelope:
    """The next envelope of `sub` matching `predicate` (every one read is appended to `seen`)."""

    async def find() -> models.EventEnvelope:
        async for env in sub:
            if seen is not None:
                seen.append(env)
            if predicate(env):
                return env
        raise AssertionError(f"{sub!r} ended before a matching envelope")

    return await asyncio.wait_for(find(), timeout)


async def collect(sub: Subscription) -> list[models.EventEnvelope]:
    """Every envelope until the subscription ends."""
    return [env async for env in sub]


def is_event(name: str, session_key: str | None = None) -> Callable[[models.EventEnvelope], bool]:
    def check(env: models.EventEnvelope) -> bool:
        return env.event == name and (session_key is None or env.session_key == session_key)

    return check


class CuttableProxy:
    """Forwards TCP connections from 127.0.0.1:<port> to a target; `cut()` drops them all."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._closed_servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Stop accepting connections (those open stay open until `cut`)."""
        if self._server is not None:
            self._server.close()
            self._closed_servers.append(self._server)
            self._server = None

    async def cut(self) -> None:
        """Drop every proxied connection without a WebSocket close (like a network failure)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), WAIT)
        # Since Python 3.12.1 wait_closed() also waits for the server's connections: after cut.
        servers, self._closed_servers = self._closed_servers, []
        for server in servers:
            await asyncio.wait_for(server.wait_closed(), WAIT)

    async def close(self) -> None:
        await self.stop_listening()
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        for coro in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
