"""Typed `chat` payloads: one model per `state` (hand-written, on top of the generated models).

The generated `models.ChatEvent` covers every state at once, so every field is optional there.
`chat_payload(envelope)` gives the model of the payload's own state instead, with the fields
that state always carries required, so a client can match on it::

    match chat_payload(env):
        case ApprovalRequestedPayload(approval_id=aid, name=tool, input=args):
            ...
        case SteeredPayload(user_message=msg):
            ...
        case FinalPayload(message=msg):
            ...
        case other:          # any other state, known or not (other.state says which)
            ...

States and enum-like fields are open: a state this SDK does not know comes back as a plain
`ChatPayload` (its fields kept as extras), never an error; `decision`, `reason`, `stop_reason`
are plain strings. Fields a newer gateway adds are kept too (`model_extra`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from . import models
from .errors import ProtocolError

__all__ = [
    "CHAT_PAYLOADS",
    "AbortedPayload",
    "ApprovalRequestedPayload",
    "ApprovalResolvedPayload",
    "ChatPayload",
    "CompactedPayload",
    "DeltaPayload",
    "ErrorPayload",
    "FinalPayload",
    "InjectedPayload",
    "QueuedPayload",
    "ResumedPayload",
    "RunPayload",
    "StartedPayload",
    "SteeredPayload",
    "TerminalPayload",
    "ToolEndPayload",
    "ToolStartPayload",
    "chat_payload",
]

_TERMINAL: Final = frozenset({"final", "aborted", "error"})


class ChatPayload(BaseModel):
    """A `chat` payload of any state (the base of the typed ones, and what a state this SDK
    does not know comes back as). Fields are snake_case (`run_id`), sent camelCase."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    state: str
    """The payload's kind: `queued`, `started`, `delta`, ..., or one this SDK does not know."""
    session_key: str
    """The session."""
    run_id: str | None = None
    """The run (absent outside runs: `injected`, a `compacted` of `sessions.compact`)."""
    run_seq: int | None = None
    """0, 1, 2... per run (restarting at 0 after `resumed`); absent outside runs."""

    @property
    def is_terminal(self) -> bool:
        """Whether it ends its run (`final`, `aborted` or `error`)."""
        return self.state in _TERMINAL

    @property
    def is_known(self) -> bool:
        """Whether this SDK knows its state (else it is a plain `ChatPayload`)."""
        return self.state in CHAT_PAYLOADS


class RunPayload(ChatPayload):
    """A payload of a run: `run_id` and `run_seq` are always there."""

    run_id: str
    run_seq: int


class QueuedPayload(RunPayload):
    """`queued`: the run waits behind others of its session."""

    state: Literal["queued"] = "queued"
    position: int
    """Runs ahead of this one."""


class StartedPayload(RunPayload):
    """`started`: the run starts; its user message is written."""

    state: Literal["started"] = "started"
    model: str
    """The model."""
    agent_id: str | None = None
    """The agent running it."""
    user_message: models.TranscriptMessage
    """The user message, as written."""


class ResumedPayload(RunPayload):
    """`resumed`: the run goes on after a gateway restart, same `run_id`, `run_seq` from 0 again
    (drop partial deltas of turns >= `turn` seen before)."""

    state: Literal["resumed"] = "resumed"
    turn: int
    """The model call it goes on from."""
    agent_id: str
    """The agent running it."""
    attempt: int
    """1 for the first resumption."""


class DeltaPayload(RunPayload):
    """`delta`: new text of a model call."""

    state: Literal["delta"] = "delta"
    turn: int
    """The model call, from 0."""
    text: str
    """New text only."""


class ApprovalRequestedPayload(RunPayload):
    """`approval_requested`: a tool call waits for a person (`Client.approve` / `deny`)."""

    state: Literal["approval_requested"] = "approval_requested"
    turn: int
    """The model call, from 0."""
    approval_id: str
    """The approval to resolve."""
    tool_call_id: str
    """The tool call waiting."""
    name: str
    """The tool."""
    input: Any
    """The call's input."""
    expires_at: int
    """When it is denied unless resolved first (ms since the epoch)."""


class ApprovalResolvedPayload(RunPayload):
    """`approval_resolved`: someone (or the timeout, or an abort) resolved an approval."""

    state: Literal["approval_resolved"] = "approval_resolved"
    approval_id: str
    """The approval."""
    decision: str
    """`allow` or `deny`."""
    by: str
    """A token name, `local`, `timeout` or `abort`."""


class ToolStartPayload(RunPayload):
    """`tool_start`: a tool call starts."""

    state: Literal["tool_start"] = "tool_start"
    turn: int
    """The model call, from 0."""
    tool_call_id: str
    """The call."""
    name: str
    """The tool."""
    input: Any
    """Its input."""


class ToolEndPayload(RunPayload):
    """`tool_end`: a tool call returned (or was denied: `is_error`)."""

    state: Literal["tool_end"] = "tool_end"
    turn: int
    """The model call, from 0."""
    tool_call_id: str
    """The call."""
    name: str
    """The tool."""
    output: str
    """The stored tool output."""
    is_error: bool
    """Whether the tool failed (or the call was denied)."""


class SteeredPayload(RunPayload):
    """`steered`: a `mode="steer"` message was written into the run."""

    state: Literal["steered"] = "steered"
    user_message: models.TranscriptMessage
    """The user message, as written."""


class CompactedPayload(ChatPayload):
    """`compacted`: the older part of the context was summarised (in a run, or by
    `sessions.compact`)."""

    state: Literal["compacted"] = "compacted"
    turn: int | None = None
    """In a run: the model call it preceded."""
    tokens_before: int
    """The context estimate before, in tokens."""
    tokens_after: int
    """The context estimate after, in tokens."""
    reason: str
    """`auto`, `manual` or `overflow`."""


class FinalPayload(RunPayload):
    """`final` (terminal): the run answered."""

    state: Literal["final"] = "final"
    message: models.TranscriptMessage | None = None
    """The last assistant message."""
    usage: models.Usage | None = None
    """Tokens summed over turns."""
    stop_reason: str
    """`end_turn`, `max_tokens`, `max_turns`, `refusal`."""


class AbortedPayload(RunPayload):
    """`aborted` (terminal): the run was aborted."""

    state: Literal["aborted"] = "aborted"
    partial_text: str | None = None
    """The text streamed before the abort."""


class ErrorPayload(RunPayload):
    """`error` (terminal): the run failed."""

    state: Literal["error"] = "error"
    error: models.RunError
    """What failed (`kind`: `auth`, `timeout`, `interrupted`, ...)."""


class InjectedPayload(ChatPayload):
    """`injected` (outside runs): `chat.inject` appended a message."""

    state: Literal["injected"] = "injected"
    message: models.TranscriptMessage
    """The message."""


#: The payloads that end a run.
TerminalPayload = FinalPayload | AbortedPayload | ErrorPayload

#: state -> its model.
CHAT_PAYLOADS: Final[dict[str, type[ChatPayload]]] = {
    "queued": QueuedPayload,
    "started": StartedPayload,
    "resumed": ResumedPayload,
    "delta": DeltaPayload,
    "approval_requested": ApprovalRequestedPayload,
    "approval_resolved": ApprovalResolvedPayload,
    "tool_start": ToolStartPayload,
    "tool_end": ToolEndPayload,
    "steered": SteeredPayload,
    "compacted": CompactedPayload,
    "final": FinalPayload,
    "aborted": AbortedPayload,
    "error": ErrorPayload,
    "injected": InjectedPayload,
}


def chat_payload(source: models.EventEnvelope | Mapping[str, Any]) -> ChatPayload:
    """The typed payload of a `chat` envelope (or of a payload dict already taken out of one):
    the model of its state, or a plain `ChatPayload` for a state this SDK does not know.

    Raises `TypeError` for an envelope of another event, `ProtocolError` for a payload that
    lacks what its state always carries."""
    if isinstance(source, models.EventEnvelope):
        if source.event != "chat":
            raise TypeError(f"not a chat envelope: {source.event}")
        raw: Any = source.payload
    else:
        raw = source
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"a chat payload is a JSON object, not {type(raw).__name__}")
    model = CHAT_PAYLOADS.get(str(raw.get("state")), ChatPayload)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(f"malformed chat payload ({raw.get('state')!r}): {exc}") from exc
