"""chat.send / chat.stream with the offline echo provider."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from helpers import WAIT, collect, next_matching

from clawgate_client import Client, event_payload, is_terminal_chat, models


def _check_run(envelopes: list[models.EventEnvelope], session_key: str) -> models.ChatEvent:
    """Checks one run's envelopes (started ... terminal); returns the final payload."""
    payloads = [event_payload(e) for e in envelopes]
    assert all(isinstance(p, models.ChatEvent) for p in payloads)
    assert all(e.event == "chat" and e.session_key == session_key for e in envelopes)
    assert len({p.run_id for p in payloads}) == 1
    assert [p.run_seq for p in payloads] == list(range(len(payloads)))
    seqs = [e.seq for e in envelopes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert payloads[0].state == "started"
    assert payloads[-1].state == "final"
    assert sum(1 for e in envelopes if is_terminal_chat(e)) == 1
    final = payloads[-1]
    assert isinstance(final, models.ChatEvent)
    return final


async def test_stream_ends_after_final_and_deltas_make_the_message(
    client: Client, key: str
) -> None:
    message = f"hello from python {uuid.uuid4().hex[:8]}"

    async def collect() -> list[models.EventEnvelope]:
        # No break: the iterator must end by itself after the terminal payload.
        return [env async for env in client.chat.stream(message=message, session_key=key)]

    envelopes = await asyncio.wait_for(collect(), WAIT)
    final = _check_run(envelopes, key)
    deltas = "".join(
        p.text or "" for p in map(event_payload, envelopes) if p.state == "delta" and p.turn == 0
    )
    assert final.message is not None
    assert deltas == final.message.content
    assert message in deltas  # the echo provider repeats the message
    assert final.stop_reason == "end_turn"

    history = await client.chat.history(session_key=key)
    assert [m.role for m in history.messages] == [models.Role.user, models.Role.assistant]
    assert history.messages[0].content == message
    assert history.messages[1].id == final.message.id
    assert history.messages[1].content == final.message.content
    assert client.orphaned_notifications == 0


async def test_send_then_follow_the_run_on_events(client: Client, key: str) -> None:
    async with client.events.subscribe(events=["chat"], session_key=key) as sub:
        sent = await client.chat.send(message="count to three", session_key=key)
        assert isinstance(sent, models.ChatSendResult)
        assert sent.status == models.RunStatus.started
        assert sent.session_key == key

        seen: list[models.EventEnvelope] = []
        await next_matching(sub, lambda e: is_terminal_chat(e), seen=seen)
    run = [e for e in seen if e.event == "chat"]
    assert all(e.payload["runId"] == sent.run_id for e in run)
    final = _check_run(run, key)
    deltas = "".join(e.payload["text"] for e in run if e.payload["state"] == "delta")
    assert final.message is not None and deltas == final.message.content

    # The same idempotency key twice: one run.
    again = await client.chat.send(message="x", session_key=key, idempotency_key="k-1")
    repeat = await client.chat.send(message="y", session_key=key, idempotency_key="k-1")
    assert repeat.run_id == again.run_id
    assert repeat.status in (
        models.RunStatus.queued,
        models.RunStatus.in_flight,
        models.RunStatus.done,
    )


async def test_tool_run_streams_tool_events_per_turn(client: Client, key: str) -> None:
    stream = client.chat.stream(message="/tool list_dir {}", session_key=key)
    envelopes = await asyncio.wait_for(collect(stream), WAIT)
    final = _check_run(envelopes, key)
    payloads = [event_payload(e) for e in envelopes]
    starts = [p for p in payloads if p.state == "tool_start"]
    ends = [p for p in payloads if p.state == "tool_end"]
    assert [p.name for p in starts] == ["list_dir"] and [p.name for p in ends] == ["list_dir"]
    assert starts[0].tool_call_id == ends[0].tool_call_id
    assert ends[0].is_error is False

    by_turn: dict[int, str] = defaultdict(str)
    for p in payloads:
        if p.state == "delta":
            assert p.turn is not None
            by_turn[p.turn] += p.text or ""
    assert sorted(by_turn) == [0, 1]
    assert final.message is not None and by_turn[1] == final.message.content

    history = await client.chat.history(session_key=key)
    roles = [m.role.value for m in history.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert history.messages[1].tool_calls and history.messages[1].tool_calls[0].name == "list_dir"
    assert history.messages[2].tool_call_id == starts[0].tool_call_id
    assert history.messages[2].content == ends[0].output
