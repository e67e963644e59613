"""events.subscribe as an async iterator: filters, replay with afterSeq, gaps, unsubscribe,
and closing the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway
from helpers import WAIT, collect, is_event, next_matching

from clawgate_client import Client, ClientClosedError, event_payload, models


async def test_sessions_changed_events(client: Client, key: str) -> None:
    seen: list[models.EventEnvelope] = []
    async with client.events.subscribe(events=["sessions.*"]) as sub:
        assert sub.id is not None
        created = await client.sessions.create(key=key, label="one")
        env = await next_matching(sub, is_event("sessions.changed", key), seen=seen)
        payload = event_payload(env)
        assert isinstance(payload, models.SessionsChangedEvent)
        assert payload.reason == models.SessionChangeReason.created
        assert payload.session is not None and payload.session.session_id == created.session_id

        await client.sessions.patch(key=key, label="two")
        env = await next_matching(sub, is_event("sessions.changed", key), seen=seen)
        payload = event_payload(env)
        assert payload.reason == models.SessionChangeReason.updated
        assert payload.session is not None and payload.session.label == "two"

        await client.sessions.delete(key=key)
        env = await next_matching(sub, is_event("sessions.changed", key), seen=seen)
        assert event_payload(env).reason == models.SessionChangeReason.deleted
        sub_id = sub.id
    # Only what the filter asked for (control events ignore filters).
    assert {e.event for e in seen} <= {"sessions.changed", "tick", "gap", "shutdown"}
    seqs = [e.seq for e in seen if e.event == "sessions.changed"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Leaving the `async with` unsubscribed on the gateway.
    assert await client.events.unsubscribe(subscription=sub_id) is False
    with pytest.raises(StopAsyncIteration):
        await sub.next(timeout=1)


async def test_session_key_filter(client: Client, key: str) -> None:
    sub = await client.events.subscribe(session_key=key)
    try:
        await client.sessions.create(key=f"{key}-other")
        await client.sessions.create(key=key)
        env = await next_matching(sub, lambda e: e.event not in ("tick", "health", "presence"))
        assert (env.event, env.session_key) == ("sessions.changed", key)
    finally:
        await sub.aclose()


async def test_replay_after_seq_and_unsubscribe_by_id(client: Client, key: str) -> None:
    sub = client.events.subscribe(events=["sessions.changed"])
    await sub
    await client.sessions.create(key=f"{key}-a")
    first = await next_matching(sub, is_event("sessions.changed", f"{key}-a"))
    assert await client.events.unsubscribe(subscription=sub.id or "") is True
    with pytest.raises(StopAsyncIteration):  # the explicit unsubscribe ended the iterator
        await sub.next(timeout=1)

    # Published while nobody listens; replayed when resuming after `first`.
    await client.sessions.create(key=f"{key}-b")
    replay = client.events.subscribe(
        events=["sessions.changed"], after_seq=first.seq, epoch=first.epoch
    )
    try:
        env = await replay.next(timeout=WAIT)
        assert env.event == "sessions.changed" and env.session_key == f"{key}-b"
        assert env.seq > first.seq and env.epoch == first.epoch
    finally:
        await replay.aclose()


async def test_unknown_epoch_gives_a_restart_gap(client: Client) -> None:
    sub = client.events.subscribe(events=["presence"], after_seq=5, epoch="not-this-epoch")
    try:
        env = await sub.next(timeout=WAIT)
        assert env.event == "gap"
        gap = event_payload(env)
        assert isinstance(gap, models.GapEvent)
        assert (gap.reason, gap.from_seq, gap.to_seq) == (models.GapReason.restart, 0, 0)
        assert env.epoch != "not-this-epoch"
    finally:
        await sub.aclose()


async def test_expired_replay_gives_an_expired_gap(tmp_path: Path) -> None:
    gw = await asyncio.to_thread(
        start_gateway, tmp_path / "data", extra_env={"CLAWGATE_EVENTS__REPLAY_CAPACITY": "4"}
    )
    try:
        async with Client.connect(gw.url) as client:
            hello = await client.gateway.hello()
            assert hello.policy.event_replay_capacity == 4
            for i in range(8):
                await client.sessions.create(key=f"expire-{i}")
            sub = client.events.subscribe(
                events=["sessions.changed"],
                after_seq=hello.snapshot.seq,
                epoch=hello.snapshot.epoch,
            )
            env = await sub.next(timeout=WAIT)
            assert env.event == "gap"
            gap = event_payload(env)
            assert gap.reason == models.GapReason.expired
            assert gap.from_seq == hello.snapshot.seq + 1 and gap.to_seq >= gap.from_seq
            # Then what the buffer still holds, in order.
            env = await next_matching(sub, is_event("sessions.changed", "expire-7"))
            assert env.seq > gap.to_seq
            await sub.aclose()
    finally:
        await asyncio.to_thread(gw.stop)


async def test_close_ends_subscriptions_and_requests(gateway: Gateway) -> None:
    async with Client.connect(gateway.url) as watcher:
        presence = await watcher.events.subscribe(events=["presence"])
        client = await Client.connect(gateway.url)
        conn_id = (await client.gateway.hello()).server.conn_id
        sub = await client.events.subscribe(events=["tick"])
        consumer = asyncio.create_task(collect(sub))
        await client.close()
        assert client.closed and not client.connected
        assert await asyncio.wait_for(consumer, WAIT) == []  # ended cleanly, nothing received
        with pytest.raises(ClientClosedError):
            await client.gateway.health()
        await client.close()  # idempotent
        left = await next_matching(
            presence,
            lambda e: e.event == "presence"
            and e.payload.get("connId") == conn_id
            and e.payload.get("state") == "left",
        )
        assert left.payload["state"] == "left"
