"""Enum-like fields are open (PROTOCOL.md "Version 2 additions"): a value this SDK does not know,
sent by a newer gateway, validates and keeps its string; the known values stay enum members."""

from __future__ import annotations

import enum
import json
import pickle
from typing import Any

import pytest
from pydantic import ValidationError

from clawgate_client import OpenEnum, StartedPayload, chat_payload, models

APPROVAL: dict[str, Any] = {
    "agentId": "main",
    "approvalId": "ap-1",
    "expiresAt": 1_700_000_060_000,
    "input": {"command": "echo hi"},
    "name": "exec",
    "requestedAt": 1_700_000_000_000,
    "runId": "run-1",
    "sessionKey": "k",
    "state": "pending",
    "toolCallId": "tc-1",
}


def test_every_generated_enum_is_open() -> None:
    enums = [
        v
        for v in vars(models).values()
        if isinstance(v, type) and issubclass(v, enum.Enum) and v is not OpenEnum
    ]
    assert {e.__name__ for e in enums} >= {"ApprovalState", "Role", "RunPhase", "RunOutcome"}
    for e in enums:
        assert issubclass(e, OpenEnum), e
        assert e("a-value-from-the-future").value == "a-value-from-the-future"


def test_an_approval_with_an_unknown_state_and_decision_parses() -> None:
    a = models.Approval.model_validate({**APPROVAL, "state": "escalated", "decision": "escalate"})
    assert isinstance(a.state, models.ApprovalState)
    assert a.state.value == "escalated" and a.state == "escalated"
    assert not a.state.is_known
    assert a.state != models.ApprovalState.pending
    assert a.decision is not None and a.decision.value == "escalate"
    # It goes back out as it came.
    assert a.model_dump(mode="json", by_alias=True)["state"] == "escalated"
    again = models.Approval.model_validate_json(a.model_dump_json(by_alias=True))
    assert again.state == "escalated"


def test_known_values_are_still_the_enum_members() -> None:
    a = models.Approval.model_validate_json(json.dumps({**APPROVAL, "decision": "allow"}))
    assert a.state is models.ApprovalState.pending and a.state.is_known
    assert a.state == models.ApprovalState.pending == "pending"
    assert a.decision is models.ApprovalDecision.allow
    match a.state:
        case models.ApprovalState.pending:
            pass
        case _:
            pytest.fail("a known value must match its member")
    assert list(models.ApprovalState) == [
        models.ApprovalState.pending,
        models.ApprovalState.allowed,
        models.ApprovalState.denied,
    ]


def test_a_run_entry_with_an_unknown_state_parses() -> None:
    r = models.RunEntry.model_validate_json(
        '{"runId": "run-1", "sessionKey": "k", "state": "paused", "outcome": "suspended"}'
    )
    assert (r.state.value, r.state) == ("paused", "paused")
    assert r.outcome is not None and r.outcome.value == "suspended"
    done = models.RunEntry.model_validate({"runId": "r", "sessionKey": "k", "state": "done"})
    assert done.state is models.RunPhase.done


def test_a_transcript_message_with_an_unknown_role_parses() -> None:
    m = models.TranscriptMessage.model_validate(
        {"id": "m-1", "role": "critic", "content": "no", "ts": 1}
    )
    assert m.role.value == "critic" and m.role == "critic" and not m.role.is_known
    assert m.role not in (models.Role.user, models.Role.assistant)
    assert models.TranscriptMessage.model_validate(
        {"id": "m-2", "role": "tool", "content": "ok", "ts": 2}
    ).role is models.Role.tool
    # Inside an event payload too.
    p = chat_payload(
        {
            "state": "started",
            "sessionKey": "k",
            "runId": "r",
            "runSeq": 0,
            "model": "echo",
            "userMessage": {"id": "m-3", "role": "critic", "content": "hi", "ts": 3},
        }
    )
    assert isinstance(p, StartedPayload) and p.user_message.role == "critic"


def test_a_chat_event_with_unknown_enum_values_parses() -> None:
    e = models.ChatEvent.model_validate(
        {"state": "approval_resolved", "sessionKey": "k", "decision": "defer", "reason": "new"}
    )
    assert e.decision is not None and e.decision.value == "defer"


def test_a_pseudo_member_behaves_like_its_string() -> None:
    critic = models.Role("critic")
    assert critic == "critic" and hash(critic) == hash("critic")
    assert {critic: 1}["critic"] == 1
    assert critic.name == critic.value == "critic"
    assert pickle.loads(pickle.dumps(critic)) == critic
    assert len(models.Role) == 4 and "critic" not in models.Role.__members__
    assert models.Role("user") is models.Role.user


def test_a_value_that_is_not_a_string_is_still_rejected() -> None:
    with pytest.raises(ValueError):
        models.Role(3)
    with pytest.raises(ValidationError):
        models.TranscriptMessage.model_validate({"id": "m", "role": 3, "content": "", "ts": 1})
