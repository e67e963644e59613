"""sessions.*: create, get, list (search, paging), patch (null clears), delete, fork, and
request/response correlation under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from clawgate_client import Client, NotFoundError, models


async def test_create_get_list_patch_delete(client: Client, key: str) -> None:
    created = await client.sessions.create(key=key, label="Python SDK")
    assert isinstance(created, models.Session)
    assert (created.key, created.label, created.message_count) == (key, "Python SDK", 0)
    assert created.created_at > 0 and created.session_id

    got = await client.sessions.get(key=key)
    assert got.session_id == created.session_id

    listed = await client.sessions.list(search=key, limit=10)
    assert listed.total == 1
    assert [s.key for s in listed.sessions] == [key]

    # Search matches the label too, case-insensitively.
    by_label = await client.sessions.list(search="python sdk", limit=1000)
    assert key in {s.key for s in by_label.sessions}

    # A param left out is not sent; None is sent as null, which clears.
    same = await client.sessions.patch(key=key, model="echo")
    assert (same.label, same.model) == ("Python SDK", "echo")
    cleared = await client.sessions.patch(key=key, label=None)
    assert (cleared.label, cleared.model) == (None, "echo")

    deleted = await client.sessions.delete(key=key)
    assert deleted.deleted is True
    with pytest.raises(NotFoundError):
        await client.sessions.get(key=key)


async def test_list_pages_with_cursor(client: Client, key: str) -> None:
    keys = {f"{key}-{i}" for i in range(5)}
    for k in sorted(keys):
        await client.sessions.create(key=k)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.sessions.list(
            search=key, limit=2, **({"cursor": cursor} if cursor else {})
        )
        assert page.total == 5
        assert len(page.sessions) <= 2
        seen.extend(s.key for s in page.sessions)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 10, "paging does not end"
    assert pages == 3
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))


async def test_fork_and_reset(client: Client, key: str) -> None:
    await client.chat.inject(session_key=key, role="system", content="be brief", label="note")
    await client.chat.inject(session_key=key, role=models.InjectRole.assistant, content="ok")
    history = await client.chat.history(session_key=key)
    assert [m.content for m in history.messages] == ["be brief", "ok"]
    assert history.messages[0].label == "note"
    assert history.messages[1].parent_id == history.messages[0].id

    fork = await client.sessions.fork(
        key=key, new_key=f"{key}-fork", at_message_id=history.messages[0].id
    )
    assert fork.key == f"{key}-fork"
    forked = await client.chat.history(session_key=fork.key)
    assert [m.content for m in forked.messages] == ["be brief"]

    before = await client.sessions.get(key=key)
    reset = await client.sessions.reset(key=key)
    assert reset.session_id != before.session_id
    assert (await client.chat.history(session_key=key)).messages == []


async def test_concurrent_requests_are_correlated(client: Client, key: str) -> None:
    n = 40
    created = await asyncio.gather(
        *(client.sessions.create(key=f"{key}-c{i}", label=f"label {i}") for i in range(n))
    )
    assert [(s.key, s.label) for s in created] == [(f"{key}-c{i}", f"label {i}") for i in range(n)]
    got = await asyncio.gather(
        *(client.sessions.get(key=f"{key}-c{i}") for i in reversed(range(n)))
    )
    assert [s.key for s in got] == [f"{key}-c{i}" for i in reversed(range(n))]
