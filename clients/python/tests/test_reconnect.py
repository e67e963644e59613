"""Automatic reconnect: events subscriptions resume from the last envelope seen; what the gateway
says about losses (a `gap`) reaches the caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway
from helpers import WAIT, CuttableProxy, is_event, next_matching

from clawgate_client import Client, ConnectionLostError, event_payload, models


async def test_restart_on_same_port_surfaces_a_restart_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await asyncio.to_thread(start_gateway, data)
    second = None
    try:
        async with Client.connect(
            first.url, reconnect_timeout=30.0, request_timeout=20.0
        ) as client:
            sub = await client.events.subscribe(events=["sessions.changed"])
            await client.sessions.create(key="before-restart")
            before = await next_matching(sub, is_event("sessions.changed", "before-restart"))
            assert (sub.epoch, sub.last_seq) == (before.epoch, before.seq)

            assert await asyncio.to_thread(first.stop) == 0  # SIGTERM
            seen: list[models.EventEnvelope] = []
            shutdown = await next_matching(sub, is_event("shutdown"), seen=seen)
            assert event_payload(shutdown).reason

            second = await asyncio.to_thread(start_gateway, data, port=first.port)
            gap = await next_matching(sub, lambda e: e.event != "tick", seen=seen)
            assert gap.event == "gap", gap
            payload = event_payload(gap)
            assert isinstance(payload, models.GapEvent)
            assert (payload.reason, payload.from_seq, payload.to_seq) == (
                models.GapReason.restart,
                0,
                0,
            )
            assert gap.epoch != before.epoch  # a new process lifetime

            # Requests made now go over the new connection; events keep coming.
            await client.sessions.create(key="after-restart")
            after = await next_matching(
                sub, is_event("sessions.changed", "after-restart"), seen=seen
            )
            assert after.epoch == gap.epoch
            assert all(e.epoch == gap.epoch for e in seen[seen.index(gap) :])
            assert sub.reconnects == 1 and client.reconnect_count == 1
            # Same data dir: the session from before the restart is still there.
            assert (await client.sessions.get(key="before-restart")).key == "before-restart"
    finally:
        await asyncio.to_thread(first.stop)
        if second is not None:
            assert await asyncio.to_thread(second.stop) == 0, second.log()


async def test_dropped_connection_resumes_without_gap_or_duplicate(
    gateway: Gateway, key: str
) -> None:
    proxy = CuttableProxy(gateway.port)
    await proxy.start()
    try:
        async with (
            Client.connect(gateway.url) as direct,
            Client.connect(proxy.url, client_info={"name": "resumer"}) as client,
        ):
            first_conn = client.hello_result.server.conn_id if client.hello_result else None
            sub = await client.events.subscribe(events=["sessions.changed"])
            await direct.sessions.create(key=f"{key}-0")
            await next_matching(sub, is_event("sessions.changed", f"{key}-0"))

            # The network fails; events are published while the client is away.
            await proxy.stop_listening()
            await proxy.cut()
            for i in range(1, 4):
                await direct.sessions.create(key=f"{key}-{i}")
            await proxy.start()  # same port: the client gets back in

            seen: list[models.EventEnvelope] = []
            await next_matching(sub, is_event("sessions.changed", f"{key}-3"), seen=seen)
            mine = [
                e.session_key
                for e in seen
                if e.event == "sessions.changed" and (e.session_key or "").startswith(key)
            ]
            assert mine == [f"{key}-1", f"{key}-2", f"{key}-3"]  # replayed, once each, in order
            assert not [e for e in seen if e.event == "gap"]
            assert sub.reconnects == 1

            # Presence names the client again on its new connection.
            assert client.hello_result is not None
            assert client.hello_result.server.conn_id != first_conn
            presence = await direct.gateway.presence()
            names = {e.conn_id: e.client.name for e in presence.entries if e.client}
            assert names.get(client.hello_result.server.conn_id) == "resumer"
    finally:
        await proxy.close()


async def test_without_reconnect_a_drop_ends_subscriptions(gateway: Gateway, key: str) -> None:
    proxy = CuttableProxy(gateway.port)
    await proxy.start()
    try:
        async with Client.connect(proxy.url, reconnect=False) as client:
            sub = await client.events.subscribe(events=["sessions.changed"])
            await client.sessions.create(key=key)
            await next_matching(sub, is_event("sessions.changed", key))
            await proxy.close()
            with pytest.raises(ConnectionLostError):
                await sub.next(timeout=WAIT)
            with pytest.raises(ConnectionLostError):
                await client.gateway.health()
    finally:
        await proxy.close()
