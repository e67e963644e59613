"""The A2A 1.0 door (/a2a) driven by the official A2A Python SDK (`a2a-sdk`): the card resolved
by the SDK's resolver, a message sent and streamed, the task got and listed, an approval as
INPUT_REQUIRED answered with a decision, and a task cancelled."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from gateway import Gateway, start_gateway
from google.protobuf import struct_pb2

DOOR = '[http.a2a]\nenabled = true\n\n[agents.main.tools]\nexec = "ask"\n'
TOOL = '/tool exec {"command": "echo hi"}'


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway with token auth, the A2A door on and an exec tool that asks first."""
    gw = await asyncio.to_thread(
        start_gateway, tmp_path / "data", token=f"tok-{secrets.token_hex(16)}", config=DOOR
    )
    yield gw
    assert await asyncio.to_thread(gw.stop) == 0, gw.log()


def base_url(gw: Gateway) -> str:
    return gw.url.replace("ws://", "http://", 1).rstrip("/")


def http_client(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {gw.token}"}, timeout=30.0)


def text_message(text: str, context_id: str | None = None) -> pb.Message:
    msg = pb.Message(message_id=uuid.uuid4().hex, role=pb.ROLE_USER, parts=[pb.Part(text=text)])
    if context_id:
        msg.context_id = context_id
    return msg


def decision_message(task: pb.Task, decision: str) -> pb.Message:
    data = struct_pb2.Value()
    data.struct_value.update({"decision": decision})
    return pb.Message(
        message_id=uuid.uuid4().hex,
        role=pb.ROLE_USER,
        task_id=task.id,
        context_id=task.context_id,
        parts=[pb.Part(data=data)],
    )


def artifact_text(task: pb.Task) -> str:
    return "".join(p.text for a in task.artifacts for p in a.parts)


async def test_the_card_resolves_and_announces_jsonrpc_with_bearer(door: Gateway) -> None:
    async with httpx.AsyncClient(timeout=30.0) as http:
        card = await A2ACardResolver(http, base_url(door)).get_agent_card()
    assert card.name == "main"
    assert card.capabilities.streaming
    assert not card.capabilities.push_notifications
    [iface] = list(card.supported_interfaces)
    assert iface.protocol_binding == "JSONRPC"
    assert iface.protocol_version == "1.0"
    assert iface.url == base_url(door) + "/a2a/main"
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"


async def test_send_get_list_and_stream(door: Gateway) -> None:
    async with http_client(door) as http:
        card = await A2ACardResolver(http, base_url(door)).get_agent_card()
        blocking = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        request = pb.SendMessageRequest(message=text_message("hello a2a"))
        [response] = [r async for r in blocking.send_message(request)]
        task = response.task
        assert task.status.state == pb.TASK_STATE_COMPLETED
        assert artifact_text(task) == "Echo: hello a2a"
        assert task.status.message.role == pb.ROLE_AGENT
        assert task.context_id

        got = await blocking.get_task(pb.GetTaskRequest(id=task.id))
        assert got.status.state == pb.TASK_STATE_COMPLETED
        assert artifact_text(got) == "Echo: hello a2a"

        listed = await blocking.list_tasks(pb.ListTasksRequest(context_id=task.context_id))
        assert [t.id for t in listed.tasks] == [task.id]

        streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        request = pb.SendMessageRequest(
            message=text_message("stream this please", context_id=task.context_id)
        )
        events = [r async for r in streaming.send_message(request)]
        kinds = [r.WhichOneof("payload") for r in events]
        assert kinds[0] == "task", kinds
        assert "artifact_update" in kinds, kinds
        assert kinds[-1] == "status_update", kinds
        assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
        chunks = "".join(
            p.text
            for r in events
            if r.WhichOneof("payload") == "artifact_update" and not r.artifact_update.last_chunk
            for p in r.artifact_update.artifact.parts
        )
        assert chunks == "Echo: stream this please"
        # The same context is the same session: both tasks are listed, newest first.
        listed = await blocking.list_tasks(pb.ListTasksRequest(context_id=task.context_id))
        assert len(listed.tasks) == 2 and listed.tasks[1].id == task.id


async def test_an_approval_is_input_required_and_a_decision_resolves_it(door: Gateway) -> None:
    async with http_client(door) as http:
        card = await A2ACardResolver(http, base_url(door)).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        [response] = [
            r async for r in client.send_message(pb.SendMessageRequest(message=text_message(TOOL)))
        ]
        task = response.task
        assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED, task
        assert "exec" in task.status.message.parts[0].text
        [response] = [
            r
            async for r in client.send_message(
                pb.SendMessageRequest(message=decision_message(task, "allow"))
            )
        ]
        done = response.task
        assert done.id == task.id
        assert done.status.state == pb.TASK_STATE_COMPLETED, done


async def test_a_waiting_task_is_cancelled(door: Gateway) -> None:
    async with http_client(door) as http:
        card = await A2ACardResolver(http, base_url(door)).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        [response] = [
            r async for r in client.send_message(pb.SendMessageRequest(message=text_message(TOOL)))
        ]
        task = response.task
        assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
        cancelled = await client.cancel_task(pb.CancelTaskRequest(id=task.id))
        assert cancelled.status.state == pb.TASK_STATE_CANCELED
        got = await client.get_task(pb.GetTaskRequest(id=task.id))
        assert got.status.state == pb.TASK_STATE_CANCELED


async def test_errors_are_the_sdks_own(door: Gateway) -> None:
    from a2a.utils.errors import TaskNotFoundError

    async with http_client(door) as http:
        card = await A2ACardResolver(http, base_url(door)).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        with pytest.raises(TaskNotFoundError):
            await client.get_task(pb.GetTaskRequest(id="no-such-task"))
