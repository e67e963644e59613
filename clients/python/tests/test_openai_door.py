"""The OpenAI-compatible door (/v1) driven by the official `openai` package: whole and streamed
completions, the session header (checked through the clawgate SDK's chat.history), usage in the
stream, the models list, and the client's own error types."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from gateway import Gateway, start_gateway

from clawgate_client import Client

DOOR = "[http.openai]\nenabled = true\n"


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway with token auth and the OpenAI door on (echo provider)."""
    gw = await asyncio.to_thread(
        start_gateway, tmp_path / "data", token=f"tok-{secrets.token_hex(16)}", config=DOOR
    )
    yield gw
    assert await asyncio.to_thread(gw.stop) == 0, gw.log()


def base_url(gw: Gateway) -> str:
    return gw.url.replace("ws://", "http://", 1) + "v1"


def client_for(gw: Gateway, token: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url(gw), api_key=token or gw.token or "none", max_retries=0, timeout=30.0
    )


async def test_models_list(door: Gateway) -> None:
    async with client_for(door) as oa:
        models = [m async for m in oa.models.list()]
        assert [m.id for m in models] == ["clawgate/main"]
        assert models[0].owned_by == "clawgate"
        assert models[0].object == "model"
        assert models[0].created > 0
        one = await oa.models.retrieve("clawgate/main")
        assert one.id == "clawgate/main"


async def test_a_whole_completion(door: Gateway) -> None:
    async with client_for(door) as oa:
        done = await oa.chat.completions.create(
            model="clawgate/main",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello"},
            ],
        )
    assert done.object == "chat.completion"
    assert done.model == "clawgate/main"
    choice = done.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: hello"
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


async def test_a_streamed_completion_with_usage(door: Gateway) -> None:
    async with client_for(door) as oa:
        stream = await oa.chat.completions.create(
            model="clawgate/main",
            messages=[{"role": "user", "content": [{"type": "text", "text": "stream me"}]}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream me"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


async def test_the_session_header_writes_into_that_session(door: Gateway) -> None:
    key = f"py-oa-{uuid.uuid4().hex[:8]}"
    headers = {"x-clawgate-session-key": key}
    async with client_for(door) as oa:
        whole = await oa.chat.completions.create(
            model="clawgate/main",
            messages=[
                {"role": "user", "content": "ignored earlier"},
                {"role": "user", "content": "first"},
            ],
            extra_headers=headers,
        )
        assert whole.choices[0].message.content == "Echo: first"
        stream = await oa.chat.completions.create(
            model="main",
            messages=[{"role": "user", "content": "second"}],
            stream=True,
            extra_headers=headers,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Echo: second"
    async with Client.connect(door.url, token=door.token, request_timeout=10.0) as client:
        history = await client.chat.history(session_key=key)
        listed = await client.call("sessions.list", {"limit": 100})
    assert [(m.role, m.content) for m in history.messages] == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
        ("assistant", "Echo: second"),
    ]
    keys = [s["key"] for s in listed["sessions"]]
    assert key in keys
    assert not any(k.startswith("openai:") for k in keys), "ephemeral sessions are not listed"


async def test_the_clients_error_types(door: Gateway) -> None:
    async with client_for(door) as oa:
        with pytest.raises(openai.NotFoundError) as missing:
            await oa.chat.completions.create(
                model="clawgate/nope", messages=[{"role": "user", "content": "x"}]
            )
        assert missing.value.status_code == 404
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            await oa.models.retrieve("clawgate/nope")
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.chat.completions.create(
                model="clawgate/main", messages=[{"role": "system", "content": "x"}]
            )
        assert bad.value.code == "no_user_message"
    async with client_for(door, token="tok-wrong-wrong-wrong") as wrong:
        with pytest.raises(openai.AuthenticationError) as refused:
            await wrong.chat.completions.create(
                model="clawgate/main", messages=[{"role": "user", "content": "x"}]
            )
        assert refused.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
    # No token at all: the client must send something, so send no Authorization header.
    async with openai.AsyncOpenAI(
        base_url=base_url(door), api_key="unused", max_retries=0, default_headers={"Authorization": ""}
    ) as anonymous:
        with pytest.raises(openai.AuthenticationError):
            await anonymous.models.list()
