"""Python client SDK of clawgate, a JSON-RPC 2.0 gateway for personal AI agents.

from clawgate_client import Client

async with Client.connect("ws://127.0.0.1:18789/") as client:
    print(await client.gateway.health())
"""

from __future__ import annotations

from . import models
from ._open_enum import OpenEnum
from ._wire import UNSET, Unset
from .client import CONTROL_EVENTS, Client, Subscription, event_payload, is_terminal_chat
from .errors import (
    AuthenticationError,
    BusyError,
    ClawgateConnectionError,
    ClawgateError,
    ClawgateException,
    ClientClosedError,
    ConflictError,
    ConnectionLostError,
    ForbiddenError,
    HandshakeError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    NotFoundError,
    ParseError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TlsFingerprintError,
    UnauthorizedError,
    UnavailableError,
    UpstreamError,
    WebSocketRequiredError,
)
from .helpers import ApprovalRequests, RunPayloads, RunResult, RunsNamespace
from .methods import EVENT_PAYLOADS, METHODS
from .payloads import (
    CHAT_PAYLOADS,
    AbortedPayload,
    ApprovalRequestedPayload,
    ApprovalResolvedPayload,
    ChatPayload,
    CompactedPayload,
    DeltaPayload,
    ErrorPayload,
    FinalPayload,
    InjectedPayload,
    QueuedPayload,
    ResumedPayload,
    RunPayload,
    StartedPayload,
    SteeredPayload,
    TerminalPayload,
    ToolEndPayload,
    ToolStartPayload,
    chat_payload,
)

__version__ = "0.1.0"

__all__ = [
    "AbortedPayload",
    "ApprovalRequestedPayload",
    "ApprovalRequests",
    "ApprovalResolvedPayload",
    "AuthenticationError",
    "BusyError",
    "CHAT_PAYLOADS",
    "CONTROL_EVENTS",
    "ChatPayload",
    "ClawgateConnectionError",
    "ClawgateError",
    "ClawgateException",
    "Client",
    "ClientClosedError",
    "CompactedPayload",
    "ConflictError",
    "ConnectionLostError",
    "DeltaPayload",
    "EVENT_PAYLOADS",
    "ErrorPayload",
    "FinalPayload",
    "ForbiddenError",
    "HandshakeError",
    "InjectedPayload",
    "InternalError",
    "InvalidParamsError",
    "InvalidRequestError",
    "METHODS",
    "MethodNotFoundError",
    "NotFoundError",
    "OpenEnum",
    "ParseError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QueuedPayload",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResumedPayload",
    "RunPayload",
    "RunPayloads",
    "RunResult",
    "RunsNamespace",
    "StartedPayload",
    "SteeredPayload",
    "Subscription",
    "TerminalPayload",
    "ToolEndPayload",
    "ToolStartPayload",
    "UNSET",
    "UnauthorizedError",
    "UnavailableError",
    "Unset",
    "UpstreamError",
    "WebSocketRequiredError",
    "chat_payload",
    "event_payload",
    "is_terminal_chat",
    "models",
]
