"""The clawgate client runtime: connection, request correlation, subscriptions, reconnect.

    async with Client.connect("ws://127.0.0.1:18789/", token=None) as client:
        health = await client.gateway.health()
        async for env in client.events.subscribe(events=["sessions.*"]):
            ...

The typed methods (`client.chat.send(...)`, `client.sessions.list(...)`, ...) live in the
generated module `methods.py`, the helpers over them (`client.approve(...)`,
`client.wait_for_run(...)`, ...) in `helpers.py`; everything they call is here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import models
from ._wire import to_wire
from .errors import (
    TlsFingerprintError,
    AuthenticationError,
    ClawgateConnectionError,
    ClawgateError,
    ClawgateException,
    ClientClosedError,
    ConnectionLostError,
    HandshakeError,
    ProtocolError,
    RequestTimeoutError,
    UnavailableError,
    error_from_response,
)
from .helpers import Helpers
from .methods import EVENT_PAYLOADS

__all__ = ["Client", "Subscription", "CONTROL_EVENTS", "event_payload", "is_terminal_chat"]

log = logging.getLogger("clawgate_client")

#: Events that ignore filters and carry the latest `seq` published instead of their own.
CONTROL_EVENTS: Final = frozenset({"tick", "gap", "shutdown"})
#: `chat` payload states that end a run.
TERMINAL_CHAT_STATES: Final = frozenset({"final", "aborted", "error"})

_ORPHAN_LIMIT: Final = 1024
_RETIRED_LIMIT: Final = 4096


def is_terminal_chat(envelope: models.EventEnvelope) -> bool:
    """Whether this envelope is a run's terminal `chat` payload (final, aborted or error)."""
    payload = envelope.payload
    return (
        envelope.event == "chat"
        and isinstance(payload, dict)
        and payload.get("state") in TERMINAL_CHAT_STATES
    )


# Subscription methods whose stream ends by itself, and the envelope that ends it.
_TERMINAL_CHECKS: dict[str, Callable[[models.EventEnvelope], bool]] = {
    "chat.stream": is_terminal_chat,
}


def event_payload(envelope: models.EventEnvelope) -> Any:
    """The envelope's payload parsed into its model (`GapEvent`, `PresenceEvent`, ...) when the
    schema's `x-events` names one, else the payload as it came (a dict)."""
    model = EVENT_PAYLOADS.get(envelope.event)
    if model is None:
        return envelope.payload
    return model.model_validate(envelope.payload)


class _EndMarker:
    def __repr__(self) -> str:
        return "<end of subscription>"


_END: Final = _EndMarker()

_SubState = Literal["new", "starting", "active", "suspended", "done"]


class Subscription:
    """A server subscription (`events.subscribe`, `chat.stream`) as an async iterator of
    `models.EventEnvelope`.

    It starts on first iteration, or explicitly with `await sub` / `async with sub`. Iteration
    ends (StopAsyncIteration) after a `chat.stream` run's terminal payload, after `aclose()`, or
    when the client is closed; it raises `ConnectionLostError` if the connection is lost and the
    subscription cannot be resumed.

    An `events.subscribe` subscription is resumable: when the connection drops, the client
    reconnects and subscribes again with `afterSeq`/`epoch` of the last envelope it received, so
    the gateway replays what was missed. Whatever the gateway says about losses (`gap` envelopes:
    `lagged`, `expired`, `restart`) is yielded like any other envelope, never hidden.
    """

    def __init__(
        self,
        client: Client,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        notification: str,
        unsubscribe: str,
        item: type[models.EventEnvelope] = models.EventEnvelope,
        resumable: bool = False,
    ) -> None:
        self._client = client
        self.method = method
        self.notification = notification
        self.unsubscribe_method = unsubscribe
        self._item = item
        base = dict(params or {})
        #: Resume on reconnect (an `events.subscribe` on a client with `reconnect=True`).
        self.resumable: bool = resumable and client.reconnect
        #: The epoch and seq to resume after: the last non-control envelope received.
        self.epoch: str | None = base.pop("epoch", None) if self.resumable else None
        self.last_seq: int | None = base.pop("afterSeq", None) if self.resumable else None
        self._params = base
        #: The server's subscription id (changes after a reconnect).
        self.id: str | None = None
        #: How many times it was subscribed again after a reconnect.
        self.reconnects = 0
        self._terminal = _TERMINAL_CHECKS.get(method)
        self._queue: asyncio.Queue[models.EventEnvelope | BaseException | _EndMarker] = (
            asyncio.Queue()
        )
        self._state: _SubState = "new"
        self._exhausted = False
        self._start_error: BaseException | None = None
        self._start_lock = asyncio.Lock()

    # -- public ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Subscribed, or waiting to be subscribed again after a reconnect."""
        return self._state in ("starting", "active", "suspended")

    async def start(self) -> Subscription:
        """Subscribe (once); raises the gateway's error if the subscribe call fails."""
        async with self._start_lock:
            if self._start_error is not None:
                raise self._start_error
            if self._state == "new":
                self._state = "starting"
                try:
                    await self._client._start_subscription(self)
                except asyncio.CancelledError:
                    self._state = "done"  # a late subscribe response is unsubscribed
                    self._exhausted = True
                    raise
                except BaseException as exc:
                    self._state = "done"
                    self._exhausted = True
                    self._start_error = exc
                    raise
                if self._state == "starting":
                    self._state = "active"
        return self

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.start().__await__()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> models.EventEnvelope:
        if self._state == "new":
            await self.start()
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _EndMarker):
            self._exhausted = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._exhausted = True
            raise item
        return item

    async def next(self, timeout: float | None = None) -> models.EventEnvelope:
        """The next envelope; `TimeoutError` after `timeout` seconds, `StopAsyncIteration` at
        the end."""
        if timeout is None:
            return await self.__anext__()
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def aclose(self) -> None:
        """Stop: unsubscribe on the gateway (best effort) and end the iteration."""
        was = self._state
        self._exhausted = True
        self._end()
        sub_id = self.id
        if was == "active" and sub_id is not None and self._client.connected:
            try:
                await self._client.call(self.unsubscribe_method, [sub_id])
            except ClawgateException as exc:  # the connection may be going away: not fatal
                log.debug("unsubscribe %s failed: %s", sub_id, exc)

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.method} id={self.id} state={self._state} "
            f"epoch={self.epoch} last_seq={self.last_seq}>"
        )

    # -- used by the client -----------------------------------------------------------------

    def _wire_params(self) -> dict[str, Any]:
        params = dict(self._params)
        if self.resumable and self.last_seq is not None:
            params["afterSeq"] = self.last_seq
            if self.epoch is not None:
                params["epoch"] = self.epoch
        return params

    def _feed(self, raw: Any) -> None:
        """An envelope arrived (called by the reader, in arrival order)."""
        if self._state == "done":
            return
        try:
            envelope = self._item.model_validate(raw)
        except ValidationError as exc:
            self._end(ProtocolError(f"malformed {self.notification} envelope: {exc}"))
            return
        self._advance_cursor(envelope)
        self._queue.put_nowait(envelope)
        if self._terminal is not None and self._terminal(envelope):
            self._end()  # nothing follows the terminal payload

    def _advance_cursor(self, envelope: models.EventEnvelope) -> None:
        if not self.resumable:
            return
        if envelope.event == "gap":
            payload = envelope.payload
            if isinstance(payload, dict) and payload.get("reason") == "restart":
                # A new epoch: the gateway replays its whole buffer after this gap.
                self.epoch, self.last_seq = envelope.epoch, 0
            return
        if envelope.event in CONTROL_EVENTS:
            return  # their seq is the latest published, not theirs: not a resume point
        self.epoch, self.last_seq = envelope.epoch, envelope.seq

    def _suspend(self) -> None:
        self._state = "suspended"
        self.id = None

    def _end(self, error: BaseException | None = None) -> None:
        if self._state == "done":
            return
        self._state = "done"
        self._client._drop_subscription(self)
        self._queue.put_nowait(error if error is not None else _END)


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    method: str
    subscription: Subscription | None


class _Connect:
    """What `Client.connect()` returns: await it, or use it as an async context manager."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _open(self) -> Client:
        await self._client.open()
        return self._client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.close()


def _normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (`:` between bytes allowed)."""
    clean = text.strip().replace(":", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", clean):
        raise ValueError(
            f"tls_fingerprint: found {text!r}, expected a SHA-256 fingerprint of 64 hex digits"
        )
    return clean


def _pinned_connection(expected: str) -> type[ClientConnection]:
    """A `ClientConnection` that checks the server's leaf certificate against `expected`
    after the TLS handshake and before it writes the upgrade request."""

    class _PinnedConnection(ClientConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            ssl_object = self.transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            presented = hashlib.sha256(der).hexdigest() if der else ""
            if presented != expected:
                self.transport.abort()
                raise TlsFingerprintError(expected, presented)
            await super().handshake(*args, **kwargs)

    return _PinnedConnection


class Client(Helpers):
    """A JSON-RPC 2.0 client of the clawgate gateway over one WebSocket.

    Args:
        url: `ws://host:port/` (a `?token=` query works too).
        token: sent as `Authorization: Bearer <token>` on the upgrade.
        reconnect: reconnect after the connection drops, and resume `events.subscribe`
            subscriptions from the last envelope seen. Requests in flight when it drops fail
            with `ConnectionLostError`; new requests wait for the reconnection.
        reconnect_timeout: give up reconnecting after this many seconds (subscriptions and
            waiting requests then raise `ConnectionLostError`).
        request_timeout: default seconds to wait for a response (`RequestTimeoutError`).
        open_timeout: seconds allowed for the WebSocket handshake.
        client_info: if given, `gateway.hello` is called with it on every (re)connect, naming
            this client in presence; the result is kept in `hello_result`.
        max_message_size: largest incoming message in bytes (the gateway allows 4 MiB).
        connect_kwargs: extra keyword arguments for `websockets.asyncio.client.connect`.
        tls_fingerprint: for `wss://`: trust exactly the certificate whose SHA-256 fingerprint
            is this (64 hex digits, `:` allowed; the gateway logs it and returns it in
            `gateway.status`), whoever issued it. It is checked once the TLS handshake is done
            and before any byte of the upgrade request (the token) is sent; a mismatch raises
            `TlsFingerprintError`.
        tls_ca_file: for `wss://`: a PEM file of the CA certificates to trust (the host name
            is checked too).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        reconnect: bool = True,
        reconnect_timeout: float = 30.0,
        request_timeout: float = 30.0,
        open_timeout: float = 10.0,
        client_info: models.ClientInfo | Mapping[str, Any] | None = None,
        max_message_size: int = 64 * 1024 * 1024,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        connect_kwargs: Mapping[str, Any] | None = None,
        tls_fingerprint: str | None = None,
        tls_ca_file: str | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.reconnect = reconnect
        self.reconnect_timeout = reconnect_timeout
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.client_info = client_info
        self.max_message_size = max_message_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._connect_kwargs = dict(connect_kwargs or {})
        self.tls_fingerprint = (
            _normalize_fingerprint(tls_fingerprint) if tls_fingerprint is not None else None
        )
        self.tls_ca_file = tls_ca_file
        if tls_fingerprint is not None and tls_ca_file is not None:
            raise ValueError("give either tls_fingerprint or tls_ca_file, not both")
        if (tls_fingerprint is not None or tls_ca_file is not None) and not url.startswith(
            "wss://"
        ):
            raise ValueError("tls_fingerprint and tls_ca_file apply to wss:// URLs")
        #: The result of the last automatic `gateway.hello` (with `client_info`).
        self.hello_result: models.HelloResult | None = None
        #: How many times the connection was re-established.
        self.reconnect_count = 0

        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._routes: dict[str, Subscription] = {}
        # Ids of ended subscriptions (late notifications for them are dropped quietly),
        # oldest first, bounded.
        self._retired: dict[str, None] = {}
        self._subscriptions: set[Subscription] = set()
        self._orphans: deque[tuple[str, str, Any]] = deque(maxlen=_ORPHAN_LIMIT)
        self._orphan_count = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._opened = False
        self._closing = False
        self._failure: BaseException | None = None
        self._init_namespaces()

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        reconnect: bool = True,
        reconnect_timeout: float = 30.0,
        request_timeout: float = 30.0,
        open_timeout: float = 10.0,
        client_info: models.ClientInfo | Mapping[str, Any] | None = None,
        max_message_size: int = 64 * 1024 * 1024,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        connect_kwargs: Mapping[str, Any] | None = None,
        tls_fingerprint: str | None = None,
        tls_ca_file: str | None = None,
    ) -> _Connect:
        """`async with Client.connect(url, token) as client:` or `client = await
        Client.connect(url)` (then `await client.close()`); options as for `Client(...)`."""
        return _Connect(
            cls(
                url,
                token,
                reconnect=reconnect,
                reconnect_timeout=reconnect_timeout,
                request_timeout=request_timeout,
                open_timeout=open_timeout,
                client_info=client_info,
                max_message_size=max_message_size,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
                connect_kwargs=connect_kwargs,
                tls_fingerprint=tls_fingerprint,
                tls_ca_file=tls_ca_file,
            )
        )

    async def open(self) -> None:
        """Open the connection (once). Raises `AuthenticationError` on HTTP 401,
        `HandshakeError` on another refusal, `ClawgateConnectionError` if unreachable."""
        if self._opened:
            return
        if self._closing:
            raise ClientClosedError("the client is closed")
        ws = await self._dial()
        self._opened = True
        self._install(ws)
        if self.client_info is not None:
            await self._say_hello()

    async def close(self) -> None:
        """Close the connection: subscriptions end (StopAsyncIteration), requests in flight
        fail with `ClientClosedError`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        task = self._reconnect_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for sub in list(self._subscriptions):
            sub._end()
        ws = self._ws
        if ws is not None:
            try:
                await ws.close()
            except Exception as exc:  # closing anyway
                log.debug("close: %s", exc)
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(lambda: ClientClosedError("the client is closed"))
        self._ws = None
        self._notify_waiters()

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closing

    @property
    def closed(self) -> bool:
        return self._closing

    def _is_passing(self, exc: BaseException) -> bool:
        """Whether `exc` is worth trying again after a pause: the gateway is starting or stopping
        (`unavailable`, retryable), or the connection dropped and this client is reconnecting."""
        if isinstance(exc, UnavailableError):
            return exc.retryable
        if self._closing or not self.reconnect or self._failure is not None:
            return False
        if isinstance(exc, ConnectionLostError):
            return True
        # Waited for a reconnection that is still being tried.
        return isinstance(exc, RequestTimeoutError) and self._reconnect_task is not None

    @property
    def orphaned_notifications(self) -> int:
        """Notifications that arrived for a subscription id before its subscribe response
        (kept and delivered once the id is known). Zero with a well-behaved gateway."""
        return self._orphan_count

    # -- calls --------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | list[Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call any method (plugin methods included) and return the raw JSON result.

        Raises `ClawgateError` (a subclass per `data.kind`) on an error response."""
        return await self._request(
            method, to_wire(params) if params is not None else None, timeout=timeout
        )

    async def notify(
        self, method: str, params: Mapping[str, Any] | list[Any] | None = None
    ) -> None:
        """Send a JSON-RPC notification (no id; the gateway runs it and never answers)."""
        ws = await self._wait_connected(self.request_timeout)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = to_wire(params)
        try:
            await ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"connection to {self.url} lost") from exc

    async def _request(
        self,
        method: str,
        params: Any,
        *,
        subscription: Subscription | None = None,
        timeout: float | None = None,
    ) -> Any:
        timeout = self.request_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ws = await self._wait_connected(timeout)
        req_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[req_id] = _Pending(future, method, subscription)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            await ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed as exc:
            self._pending.pop(req_id, None)
            raise ConnectionLostError(f"connection to {self.url} lost before {method}") from exc
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self._pending.pop(req_id, None)
            raise RequestTimeoutError(f"no response to {method} within {timeout} s") from None

    # -- subscriptions ------------------------------------------------------------------------

    def _subscription(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        notification: str,
        unsubscribe: str,
        item: type[models.EventEnvelope] = models.EventEnvelope,
        resumable: bool = False,
    ) -> Subscription:
        return Subscription(
            self,
            method,
            params,
            notification=notification,
            unsubscribe=unsubscribe,
            item=item,
            resumable=resumable,
        )

    async def _start_subscription(self, sub: Subscription) -> None:
        if self._closing:
            raise ClientClosedError("the client is closed")
        self._subscriptions.add(sub)
        try:
            if sub.resumable and sub.last_seq is None:
                # Know where "now" is, so a reconnect before the first envelope resumes from
                # here: subscribing after the snapshot's seq replays anything published between
                # the two calls, so nothing falls in between.
                hello = await self.call("gateway.hello", {})
                snapshot = hello["snapshot"]
                sub.epoch, sub.last_seq = str(snapshot["epoch"]), int(snapshot["seq"])
            await self._request(sub.method, sub._wire_params(), subscription=sub)
        except BaseException:
            self._subscriptions.discard(sub)
            raise

    def _drop_subscription(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        if sub.id is not None and self._routes.get(sub.id) is sub:
            del self._routes[sub.id]
            self._retire(sub.id)

    def _forget_subscription_id(self, subscription_id: str) -> None:
        """After an explicit unsubscribe call: end the matching iterator."""
        sub = self._routes.get(subscription_id)
        if sub is not None:
            sub._end()
        self._retire(subscription_id)

    def _retire(self, subscription_id: str) -> None:
        self._retired[subscription_id] = None
        while len(self._retired) > _RETIRED_LIMIT:
            del self._retired[next(iter(self._retired))]

    def _route(self, sub: Subscription, subscription_id: str) -> None:
        sub.id = subscription_id
        if sub._state == "done":  # closed while subscribing: let the gateway know
            self._retire(subscription_id)
            asyncio.ensure_future(self._quiet_call(sub.unsubscribe_method, [subscription_id]))
            return
        self._routes[subscription_id] = sub
        if any(o[0] == subscription_id for o in self._orphans):
            keep: deque[tuple[str, str, Any]] = deque(maxlen=_ORPHAN_LIMIT)
            for orphan in self._orphans:
                if orphan[0] == subscription_id and orphan[1] == sub.notification:
                    sub._feed(orphan[2])
                elif orphan[0] != subscription_id:
                    keep.append(orphan)
            self._orphans = keep

    async def _quiet_call(self, method: str, params: Any) -> None:
        try:
            await self.call(method, params)
        except ClawgateException as exc:
            log.debug("%s failed: %s", method, exc)

    # -- connection internals -----------------------------------------------------------------

    async def _dial(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        options: dict[str, Any] = {
            "additional_headers": headers,
            "open_timeout": self.open_timeout,
            "max_size": self.max_message_size,
        }
        if self.tls_fingerprint is not None:
            # The fingerprint is the trust: no chain or name check, the pin checked in
            # `_PinnedConnection.handshake` before the upgrade request is written.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            options["ssl"] = context
            options["create_connection"] = _pinned_connection(self.tls_fingerprint)
        elif self.tls_ca_file is not None:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
            context.set_alpn_protocols(["http/1.1"])
            options["ssl"] = context
        options.update(self._connect_kwargs)
        try:
            return await ws_connect(self.url, **options)
        except TlsFingerprintError:
            raise
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = bytes(exc.response.body or b"")
            cls = AuthenticationError if status == 401 else HandshakeError
            raise cls(status, "the gateway refused the WebSocket upgrade", body) from exc
        except (OSError, InvalidHandshake, TimeoutError, asyncio.TimeoutError) as exc:
            raise ClawgateConnectionError(f"cannot connect to {self.url}: {exc}") from exc

    def _install(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._reader = asyncio.create_task(self._read_loop(ws), name="clawgate-reader")
        self._notify_waiters()

    async def _say_hello(self) -> None:
        result = await self.call("gateway.hello", {"client": to_wire(self.client_info)})
        self.hello_result = models.HelloResult.model_validate(result)

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        except Exception:  # a bug here must not leave requests hanging
            log.exception("clawgate reader failed")
        finally:
            self._connection_lost(ws)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("unparsable message from the gateway: %.200r", raw)
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                self._dispatch_one(item)

    def _dispatch_one(self, message: dict[str, Any]) -> None:
        if "id" not in message:
            params = message.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("subscription"), str):
                log.debug("notification ignored: %.200r", message)
                return
            sub_id: str = params["subscription"]
            method = str(message.get("method"))
            sub = self._routes.get(sub_id)
            if sub is not None:
                if method == sub.notification:
                    sub._feed(params.get("result"))
                else:
                    log.warning("unexpected %s for subscription %s", method, sub_id)
            elif sub_id not in self._retired:
                self._orphan_count += 1
                self._orphans.append((sub_id, method, params.get("result")))
            return
        req_id = message.get("id")
        pending = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        if pending is None:
            log.debug("response without a request: %.200r", message)
            return
        if "error" in message:
            if not pending.future.done():
                pending.future.set_exception(error_from_response(message["error"]))
            return
        result = message.get("result")
        if pending.subscription is not None:
            if not isinstance(result, str):
                if not pending.future.done():
                    pending.future.set_exception(
                        ProtocolError(f"{pending.method} returned {result!r}, not an id")
                    )
                return
            if pending.future.done():  # the caller gave up (timeout): do not leak it
                pending.subscription._end()
            self._route(pending.subscription, result)
        if not pending.future.done():
            pending.future.set_result(result)

    def _fail_pending(self, make_error: Callable[[], BaseException]) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(make_error())

    def _connection_lost(self, ws: ClientConnection) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        reason = f"connection to {self.url} lost"
        if ws.close_code is not None:
            reason += (
                f" (close code {ws.close_code}{' ' + ws.close_reason if ws.close_reason else ''})"
            )
        self._fail_pending(lambda: ConnectionLostError(reason))
        self._retired.clear()  # ids belong to a connection
        self._routes.clear()
        self._orphans.clear()
        for sub in list(self._subscriptions):
            if self._closing:
                sub._end()
            elif sub.resumable and sub._state in ("active", "suspended"):
                sub._suspend()
            else:
                sub._end(ConnectionLostError(reason))
        if self._closing:
            return
        if self.reconnect:
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = asyncio.create_task(
                    self._reconnect_loop(), name="clawgate-reconnect"
                )
        else:
            self._failure = ConnectionLostError(reason)
        self._notify_waiters()

    async def _reconnect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        delay = self.backoff_initial
        last_error: BaseException | None = None
        while not self._closing:
            try:
                ws = await self._dial()
            except HandshakeError as exc:
                if exc.status in (401, 403):  # retrying cannot help
                    self._give_up(exc)
                    return
                last_error = exc
            except ClawgateConnectionError as exc:
                last_error = exc
            else:
                self.reconnect_count += 1
                self._install(ws)
                try:
                    if self.client_info is not None:
                        await self._hello_after_reconnect()
                    for sub in [s for s in self._subscriptions if s._state == "suspended"]:
                        await self._resubscribe(sub)
                except (ClawgateConnectionError, UnavailableError) as exc:
                    # Lost again, or the gateway is still starting / already stopping.
                    last_error = exc
                    if self._ws is ws:
                        await ws.close()
                    if self._reader is not None:
                        await asyncio.gather(self._reader, return_exceptions=True)
                else:
                    if self._ws is ws:
                        self._reconnect_task = None
                        log.info("reconnected to %s", self.url)
                        return
            if loop.time() + delay > deadline:
                self._give_up(
                    ConnectionLostError(
                        f"could not reconnect to {self.url} within {self.reconnect_timeout} s"
                        + (f": {last_error}" if last_error else "")
                    )
                )
                return
            await asyncio.sleep(delay)  # back off before the next attempt
            delay = min(delay * 2, self.backoff_max)

    async def _hello_after_reconnect(self) -> None:
        try:
            await self._say_hello()
        except ClawgateError as exc:
            if isinstance(exc, UnavailableError):
                raise
            log.warning("gateway.hello after reconnecting failed: %s", exc)

    async def _resubscribe(self, sub: Subscription) -> None:
        try:
            await self._request(sub.method, sub._wire_params(), subscription=sub)
        except ClawgateError as exc:
            if isinstance(exc, UnavailableError):
                raise
            sub._end(exc)  # the gateway will not take it back: say why
            return
        sub.reconnects += 1
        if sub._state == "suspended":
            sub._state = "active"

    def _give_up(self, error: BaseException) -> None:
        self._failure = error
        self._reconnect_task = None
        for sub in list(self._subscriptions):
            sub._end(error)
        self._notify_waiters()

    def _notify_waiters(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_connected(self, timeout: float) -> ClientConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._closing:
                raise ClientClosedError("the client is closed")
            if self._ws is not None:
                return self._ws
            if not self._opened:
                raise ClawgateConnectionError("the client is not open: use Client.connect()")
            if self._failure is not None:
                raise self._failure
            if self._reconnect_task is None:
                raise ConnectionLostError(f"connection to {self.url} lost")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"not reconnected to {self.url} within {timeout} s"
                ) from None
            finally:
                self._waiters.discard(waiter)
