"""usage.summary and Session.usage, typed, against a gateway pricing the echo model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gateway import Gateway, start_gateway
from helpers import next_matching

from clawgate_client import Client, InvalidParamsError, is_terminal_chat, models

# One USD per token: a call's cost is its token count.
PRICED = '[prices.echo]\ninput_per_mtok = 1000000\noutput_per_mtok = 1000000\n'


@pytest.fixture
async def priced_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await asyncio.to_thread(start_gateway, tmp_path / "data", config=PRICED)
    yield gw
    assert await asyncio.to_thread(gw.stop) == 0, gw.log()


async def test_summary_and_session_usage(priced_gateway: Gateway) -> None:
    since = int(time.time() * 1000)
    async with Client.connect(priced_gateway.url, request_timeout=10.0) as client:
        async with client.events.subscribe(events=["chat"], session_key="u") as sub:
            await client.chat.send(message="one two three", session_key="u")
            await next_matching(sub, is_terminal_chat)
        session = await client.sessions.get(key="u")
        usage = session.usage
        assert isinstance(usage, models.UsageTotals)
        assert usage.input_tokens == 3
        assert usage.output_tokens > 0
        assert usage.cost_usd == pytest.approx(usage.input_tokens + usage.output_tokens)
        assert usage.unpriced_tokens == 0

        summary = await client.usage.summary(since=since, agent="main")
        assert isinstance(summary, models.UsageSummaryResult)
        assert summary.total == usage
        assert summary.by_agent["main"] == usage
        assert summary.by_model["echo"] == usage
        assert [d.usage for d in summary.by_day] == [usage]
        assert len(summary.by_day[0].day) == len("YYYY-MM-DD")

        empty = await client.usage.summary(agent="other")
        assert empty.total.input_tokens == 0 and empty.by_day == []

        with pytest.raises(InvalidParamsError) as bad:
            await client.usage.summary(since=10, until=5)
        assert "until" in bad.value.message
