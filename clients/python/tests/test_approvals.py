"""The approval and run helpers against a live gateway whose exec tool asks a person first."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway
from helpers import WAIT, collect

from clawgate_client import (
    ApprovalRequestedPayload,
    ApprovalResolvedPayload,
    ChatPayload,
    Client,
    ConflictError,
    FinalPayload,
    NotFoundError,
    RunResult,
    SteeredPayload,
    ToolEndPayload,
    chat_payload,
    models,
)

ASK = '[agents.main.tools]\nexec = "ask"\n'
TOOL = '/tool exec {"command": "echo hi"}'


@pytest.fixture(scope="module")
def ask_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose `exec` tool waits for a person (`[agents.main.tools] exec = "ask"`)."""
    gw = start_gateway(tmp_path_factory.mktemp("ask") / "data", config=ASK)
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited {code}; log:\n{gw.log()}"


@pytest.fixture
async def client(ask_gateway: Gateway) -> AsyncIterator[Client]:
    async with Client.connect(ask_gateway.url, request_timeout=10.0) as c:
        yield c


async def payloads_of(client: Client, message: str, session_key: str) -> list[ChatPayload]:
    """Every payload of a `chat.stream` run, typed."""
    return [
        chat_payload(e)
        for e in await collect(client.chat.stream(message=message, session_key=session_key))
    ]


def one(payloads: list[ChatPayload], cls: type[ChatPayload]) -> ChatPayload:
    found = [p for p in payloads if isinstance(p, cls)]
    assert len(found) == 1, [p.state for p in payloads]
    return found[0]


async def test_a_request_arrives_through_the_iterator_and_approve_runs_the_tool(
    client: Client, key: str
) -> None:
    async with client.approval_requests(key) as requests:
        run = asyncio.create_task(payloads_of(client, TOOL, key))
        req = await requests.next(timeout=WAIT)
        assert isinstance(req, models.Approval)
        assert req.state == models.ApprovalState.pending
        assert (req.name, req.input, req.session_key) == ("exec", {"command": "echo hi"}, key)
        assert [a.approval_id for a in await client.pending_approvals(key)] == [req.approval_id]

        resolved = await client.approve(req.approval_id)
        assert resolved.state == models.ApprovalState.allowed
        assert (resolved.decision, resolved.by) == (models.ApprovalDecision.allow, "local")
        with pytest.raises(ConflictError):
            await client.approve(req.approval_id)

        payloads = await asyncio.wait_for(run, WAIT)
    states = [p.state for p in payloads]
    assert states.index("approval_requested") < states.index("approval_resolved")
    assert states.index("approval_resolved") < states.index("tool_start") < states.index("tool_end")
    assert isinstance(payloads[-1], FinalPayload) and payloads[-1].is_terminal

    asked = one(payloads, ApprovalRequestedPayload)
    assert isinstance(asked, ApprovalRequestedPayload)
    assert (asked.approval_id, asked.tool_call_id, asked.expires_at, asked.turn) == (
        req.approval_id,
        req.tool_call_id,
        req.expires_at,
        0,
    )
    assert asked.name == "exec" and asked.input == {"command": "echo hi"}
    answer = one(payloads, ApprovalResolvedPayload)
    assert isinstance(answer, ApprovalResolvedPayload)
    assert (answer.approval_id, answer.decision, answer.by) == (req.approval_id, "allow", "local")
    end = one(payloads, ToolEndPayload)
    assert isinstance(end, ToolEndPayload)
    assert end.is_error is False and "hi" in end.output.split()
    assert await client.pending_approvals(key) == []


async def test_deny_with_a_reason_makes_an_error_result_and_the_run_goes_on(
    client: Client, key: str
) -> None:
    async with client.approval_requests(key) as requests:
        run = asyncio.create_task(payloads_of(client, TOOL, key))
        req = await requests.next(timeout=WAIT)
        denied = await client.deny(req.approval_id, "not on my machine")
        assert denied.state == models.ApprovalState.denied
        assert denied.reason == "not on my machine"
        payloads = await asyncio.wait_for(run, WAIT)

    end = one(payloads, ToolEndPayload)
    assert isinstance(end, ToolEndPayload)
    assert end.is_error is True and "not on my machine" in end.output
    answer = one(payloads, ApprovalResolvedPayload)
    assert isinstance(answer, ApprovalResolvedPayload) and answer.decision == "deny"
    assert isinstance(payloads[-1], FinalPayload)


async def test_rejoin_a_finished_run_yields_its_terminal_payload_alone(
    client: Client, key: str
) -> None:
    live = await asyncio.wait_for(payloads_of(client, "hello rejoin", key), WAIT)
    final = live[-1]
    assert isinstance(final, FinalPayload) and final.run_id is not None

    async def rejoined() -> list[ChatPayload]:
        async with client.rejoin_run(final.run_id) as payloads:
            return [p async for p in payloads]

    again = await asyncio.wait_for(rejoined(), WAIT)
    assert [p.state for p in again] == ["final"]
    assert isinstance(again[0], FinalPayload)
    assert again[0].run_id == final.run_id
    assert again[0].message is not None and again[0].message.content == "Echo: hello rejoin"

    result = await asyncio.wait_for(client.wait_for_run(final.run_id), WAIT)
    assert isinstance(result, RunResult)
    assert (result.run_id, result.session_key, result.outcome) == (final.run_id, key, "final")
    assert isinstance(result.payload, FinalPayload)
    assert result.payload.message is not None
    assert result.payload.message.content == "Echo: hello rejoin"

    entry = await client.run(final.run_id)
    assert (entry.state, entry.outcome) == (models.RunPhase.done, models.RunOutcome.final)
    with pytest.raises(NotFoundError):
        await client.run("no-such-run")
    with pytest.raises(NotFoundError):
        await client.rejoin_run("no-such-run").next(timeout=WAIT)
    with pytest.raises(NotFoundError):
        await client.wait_for_run("no-such-run")


async def test_a_run_waiting_for_approval_is_active_and_can_be_steered(
    client: Client, key: str
) -> None:
    async with client.approval_requests(key) as requests:
        run = asyncio.create_task(payloads_of(client, TOOL, key))
        req = await requests.next(timeout=WAIT)

        waiting = await client.runs(key)
        assert [(r.run_id, r.state) for r in waiting] == [
            (req.run_id, models.RunPhase.waiting_approval)
        ]
        assert (await client.run(req.run_id)).state == models.RunPhase.waiting_approval
        assert req.run_id in [r.run_id for r in await client.runs()]
        assert [r.run_id for r in (await client.runs.list(session_key=key)).runs] == [req.run_id]

        steered = await client.send("steer me", session_key=key, mode="steer")
        assert steered.status == models.RunStatus.steered
        assert steered.run_id == req.run_id

        done = asyncio.create_task(client.wait_for_run(req.run_id))
        await client.approve(req.approval_id)
        result = await asyncio.wait_for(done, WAIT)
        payloads = await asyncio.wait_for(run, WAIT)

    assert result.outcome == "final"
    assert isinstance(result.payload, FinalPayload) and result.payload.message is not None
    assert result.payload.message.content == "Echo: steer me"
    steer = one(payloads, SteeredPayload)
    assert isinstance(steer, SteeredPayload) and steer.user_message.content == "steer me"
    assert payloads.index(steer) > payloads.index(one(payloads, ToolEndPayload))
    assert await client.runs(key) == []


async def test_requests_already_waiting_come_first_and_aclose_ends_a_waiting_iteration(
    client: Client, key: str
) -> None:
    sent = await client.send(TOOL, session_key=key)

    async def asked() -> None:
        while not await client.pending_approvals(key):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(asked(), WAIT)
    requests = client.approval_requests(key)
    req = await requests.next(timeout=WAIT)
    assert req.run_id == sent.run_id
    waiting = asyncio.create_task(requests.next())  # nothing more comes
    await asyncio.sleep(0.1)
    await asyncio.wait_for(requests.aclose(), WAIT)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT)

    await client.approve(req.approval_id, remember="session")
    assert (await asyncio.wait_for(client.wait_for_run(sent.run_id), WAIT)).outcome == "final"
    # Remembered for the session: the next exec call is not asked.
    again = await asyncio.wait_for(payloads_of(client, TOOL, key), WAIT)
    assert not [p for p in again if isinstance(p, ApprovalRequestedPayload)]
    end = one(again, ToolEndPayload)
    assert isinstance(end, ToolEndPayload) and end.is_error is False


async def test_wait_for_run_and_requests_survive_a_restart_that_suspends_the_run(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = await asyncio.to_thread(start_gateway, data, config=ASK)
    second = None
    key = f"py-{uuid.uuid4().hex[:12]}"
    try:
        async with Client.connect(
            first.url, reconnect_timeout=30.0, request_timeout=20.0
        ) as client:
            async with client.approval_requests(key) as requests:
                sent = await client.send(TOOL, session_key=key)
                req = await requests.next(timeout=WAIT)
                done = asyncio.create_task(client.wait_for_run(sent.run_id))
                await asyncio.sleep(0.1)  # it has joined the run

                assert await asyncio.to_thread(first.stop) == 0  # SIGTERM: the run is suspended
                second = await asyncio.to_thread(start_gateway, data, port=first.port)
                # Asked again after the restart: the same approval, a fresh expiry.
                again = await requests.next(timeout=20.0)
                assert (again.approval_id, again.run_id) == (req.approval_id, sent.run_id)
                assert not done.done()
                await client.approve(again.approval_id)
                result = await asyncio.wait_for(done, 20.0)
            assert (result.run_id, result.outcome) == (sent.run_id, "final")
            history = await client.chat.history(session_key=key)
            tool = [m for m in history.messages if m.role == models.Role.tool]
            assert len(tool) == 1 and tool[0].is_error is False
            assert "hi" in tool[0].content.split()
    finally:
        await asyncio.to_thread(first.stop)
        if second is not None:
            assert await asyncio.to_thread(second.stop) == 0, second.log()


def test_chat_payload_accepts_states_it_does_not_know() -> None:
    p = chat_payload({"state": "brand_new", "sessionKey": "k", "runId": "r", "extra": {"a": 1}})
    assert type(p) is ChatPayload
    assert (p.state, p.session_key, p.run_id) == ("brand_new", "k", "r")
    assert p.model_extra == {"extra": {"a": 1}}
    assert not p.is_known and not p.is_terminal

    # Enum-like fields are open too.
    resolved = chat_payload(
        {
            "state": "approval_resolved",
            "sessionKey": "k",
            "runId": "r",
            "runSeq": 4,
            "approvalId": "a",
            "decision": "maybe_later",
            "by": "someone",
        }
    )
    assert isinstance(resolved, ApprovalResolvedPayload) and resolved.decision == "maybe_later"

    env = models.EventEnvelope(
        epoch="e",
        seq=1,
        ts=1,
        event="chat",
        payload={"state": "aborted", "sessionKey": "k", "runId": "r", "runSeq": 2},
    )
    aborted = chat_payload(env)
    assert aborted.is_terminal and aborted.state == "aborted"
    with pytest.raises(TypeError):
        chat_payload(env.model_copy(update={"event": "presence"}))

    match chat_payload(
        {
            "state": "steered",
            "sessionKey": "k",
            "runId": "r",
            "runSeq": 1,
            "userMessage": {"id": "m", "parentId": None, "ts": 1, "role": "user", "content": "hey"},
        }
    ):
        case SteeredPayload(user_message=message):
            assert message.content == "hey"
        case _:
            pytest.fail("not matched as SteeredPayload")
