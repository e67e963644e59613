"""Python client SDK of clawgate, a JSON-RPC 2.0 gateway for personal AI agents.

from clawgate_client import Client

async with Client.connect("ws://127.0.0.1:18789/") as client:
    print(await client.gateway.health())
"""

from __future__ import annotations

from . import models
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
    UnauthorizedError,
    UnavailableError,
    UpstreamError,
    WebSocketRequiredError,
)
from .methods import EVENT_PAYLOADS, METHODS

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BusyError",
    "CONTROL_EVENTS",
    "ClawgateConnectionError",
    "ClawgateError",
    "ClawgateException",
    "Client",
    "ClientClosedError",
    "ConflictError",
    "ConnectionLostError",
    "EVENT_PAYLOADS",
    "ForbiddenError",
    "HandshakeError",
    "InternalError",
    "InvalidParamsError",
    "InvalidRequestError",
    "METHODS",
    "MethodNotFoundError",
    "NotFoundError",
    "ParseError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "Subscription",
    "UNSET",
    "UnauthorizedError",
    "UnavailableError",
    "Unset",
    "UpstreamError",
    "WebSocketRequiredError",
    "event_payload",
    "is_terminal_chat",
    "models",
]
