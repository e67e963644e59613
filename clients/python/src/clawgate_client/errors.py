"""Exceptions raised by the clawgate client.

Two families, both under `ClawgateException`:

* `ClawgateError` (and one subclass per `data.kind`): the gateway answered a request with a
  JSON-RPC error object. `code`, `message`, `kind` and `data` are those of the error.
* `ClawgateConnectionError` (and subclasses): the transport failed: the WebSocket could not be
  opened, the upgrade was refused (`AuthenticationError` for HTTP 401), the connection was lost
  while a request was in flight, or the client was closed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ClawgateException(Exception):
    """Base of every exception this package raises."""


class ClawgateError(ClawgateException):
    """The gateway answered with a JSON-RPC error.

    Attributes:
        code: the JSON-RPC error code, e.g. -32022.
        message: the error's message.
        kind: `data.kind`, e.g. "not_found" ("" when the server sent none).
        data: the whole `data` object ({} when absent).
    """

    def __init__(
        self,
        code: int,
        message: str,
        kind: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        self.kind: str = kind if kind is not None else str(self.data.get("kind", ""))
        super().__init__(code, message, self.kind, self.data)

    def __str__(self) -> str:
        return f"{self.message} (code {self.code}, kind {self.kind or '?'})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"kind={self.kind!r}, data={self.data!r})"
        )


class ParseError(ClawgateError):
    """-32700 `parse_error`."""


class InvalidRequestError(ClawgateError):
    """-32600 `invalid_request`."""


class MethodNotFoundError(ClawgateError):
    """-32601 `method_not_found`."""


class InvalidParamsError(ClawgateError):
    """-32602 `invalid_params`; `path` names the offending field (`"client.name"`)."""

    @property
    def path(self) -> str | None:
        value = self.data.get("path")
        return value if isinstance(value, str) else None


class InternalError(ClawgateError):
    """-32603 `internal`."""


class PayloadTooLargeError(ClawgateError):
    """-32007 `payload_too_large`."""


class ResponseTooLargeError(ClawgateError):
    """-32008 `response_too_large`."""


class BusyError(ClawgateError):
    """-32009 `busy`."""


class UnauthorizedError(ClawgateError):
    """-32020 `unauthorized`."""


class ForbiddenError(ClawgateError):
    """-32021 `forbidden`; `required_scope` names the scope the call needs."""

    @property
    def required_scope(self) -> str | None:
        value = self.data.get("requiredScope")
        return value if isinstance(value, str) else None


class NotFoundError(ClawgateError):
    """-32022 `not_found`."""


class ConflictError(ClawgateError):
    """-32023 `conflict`."""


class RateLimitedError(ClawgateError):
    """-32024 `rate_limited`; `retry_after_ms` says when to retry."""

    @property
    def retry_after_ms(self) -> int | None:
        value = self.data.get("retryAfterMs")
        return value if isinstance(value, int) else None


class UnavailableError(ClawgateError):
    """-32025 `unavailable` (starting, shutting down, a plugin is down)."""

    @property
    def retryable(self) -> bool:
        return bool(self.data.get("retryable", False))


class UpstreamError(ClawgateError):
    """-32026 `upstream`: the model provider failed; `upstream` is `{status?, kind}`."""

    @property
    def upstream(self) -> dict[str, Any] | None:
        value = self.data.get("upstream")
        return value if isinstance(value, dict) else None


class WebSocketRequiredError(ClawgateError):
    """-32027 `websocket_required`."""


ERRORS_BY_KIND: dict[str, type[ClawgateError]] = {
    "parse_error": ParseError,
    "invalid_request": InvalidRequestError,
    "method_not_found": MethodNotFoundError,
    "invalid_params": InvalidParamsError,
    "internal": InternalError,
    "payload_too_large": PayloadTooLargeError,
    "response_too_large": ResponseTooLargeError,
    "busy": BusyError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "rate_limited": RateLimitedError,
    "unavailable": UnavailableError,
    "upstream": UpstreamError,
    "websocket_required": WebSocketRequiredError,
}

ERRORS_BY_CODE: dict[int, type[ClawgateError]] = {
    -32700: ParseError,
    -32600: InvalidRequestError,
    -32601: MethodNotFoundError,
    -32602: InvalidParamsError,
    -32603: InternalError,
    -32007: PayloadTooLargeError,
    -32008: ResponseTooLargeError,
    -32009: BusyError,
    -32020: UnauthorizedError,
    -32021: ForbiddenError,
    -32022: NotFoundError,
    -32023: ConflictError,
    -32024: RateLimitedError,
    -32025: UnavailableError,
    -32026: UpstreamError,
    -32027: WebSocketRequiredError,
}


def error_from_response(error: Any) -> ClawgateError:
    """The exception for a JSON-RPC `error` member (the class picked by `data.kind`, then code)."""
    if not isinstance(error, Mapping):
        return ClawgateError(-32603, f"malformed error object: {error!r}", "internal", {})
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else -32603
    message = str(error.get("message", ""))
    raw_data = error.get("data")
    data: dict[str, Any] = dict(raw_data) if isinstance(raw_data, Mapping) else {}
    if raw_data is not None and not isinstance(raw_data, Mapping):
        data["value"] = raw_data
    kind = data.get("kind")
    kind_str = kind if isinstance(kind, str) else ""
    cls = ERRORS_BY_KIND.get(kind_str) or ERRORS_BY_CODE.get(code) or ClawgateError
    return cls(code, message, kind_str, data)


class ClawgateConnectionError(ClawgateException):
    """The WebSocket could not be opened or was lost."""


class TlsFingerprintError(ClawgateConnectionError):
    """The gateway presented another certificate than the pinned `tls_fingerprint`; the
    connection was closed before any byte of the upgrade request (the token) was sent.

    Attributes:
        expected: the fingerprint asked for (lowercase hex).
        presented: the SHA-256 of the certificate the server presented (lowercase hex).
    """

    def __init__(self, expected: str, presented: str) -> None:
        self.expected = expected
        self.presented = presented
        super().__init__(
            f"TLS fingerprint mismatch: expected {expected}, the server presented {presented}; "
            "nothing was sent"
        )


class HandshakeError(ClawgateConnectionError):
    """The gateway refused the WebSocket upgrade with an HTTP status (403, 429, ...)."""

    def __init__(self, status: int, message: str, body: bytes = b"") -> None:
        self.status = status
        self.body = body
        self.kind: str | None = None
        self.message = message
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            err = parsed["error"]
            self.kind = err.get("kind") if isinstance(err.get("kind"), str) else None
            if isinstance(err.get("message"), str):
                self.message = err["message"]
        super().__init__(status, message, body)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class AuthenticationError(HandshakeError):
    """HTTP 401 on the upgrade: the token is missing or wrong."""


class ConnectionLostError(ClawgateConnectionError):
    """The connection dropped (a request in flight may or may not have run)."""


class ClientClosedError(ClawgateConnectionError):
    """The client was closed."""


class RequestTimeoutError(ClawgateConnectionError, TimeoutError):
    """No response came within the request timeout (the request may still run)."""


class ProtocolError(ClawgateConnectionError):
    """The gateway sent something this client cannot read."""
