"""Hand-written helpers over the generated methods: approvals (resolve, list, receive requests as
they come) and runs (rejoin, wait for the end, list), mixed into `Client`.

    async with client.approval_requests(session_key="main") as requests:
        async for req in requests:                      # models.Approval, state pending
            if await ask_the_user(req.name, req.input):
                await client.approve(req.approval_id)
            else:
                await client.deny(req.approval_id, "not now")

    result = await client.wait_for_run(run_id)          # RunResult(outcome="final", payload=...)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from . import models
from ._wire import UNSET, Unset
from .errors import ClawgateException, NotFoundError
from .methods import Namespaces, RunsMethods
from .payloads import AbortedPayload, ChatPayload, ErrorPayload, FinalPayload, chat_payload

if TYPE_CHECKING:
    from .client import Subscription

__all__ = ["ApprovalRequests", "Helpers", "RunPayloads", "RunResult", "RunsNamespace"]

T = TypeVar("T")

#: Longest pause between two tries after a passing failure, seconds.
_MAX_BACKOFF: Final = 2.0
#: How many requests the de-duplication of `ApprovalRequests` remembers.
_SEEN_LIMIT: Final = 4096

#: What `send`'s `mode` takes.
SendModeArg = models.SendMode | Literal["queue", "steer", "interrupt", "reject"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended, as `Client.wait_for_run` tells it."""

    run_id: str
    """The run."""
    session_key: str
    """Its session."""
    outcome: str
    """`final`, `aborted` or `error` (a plain string: the protocol's enums are open)."""
    payload: FinalPayload | AbortedPayload | ErrorPayload | None
    """The terminal payload (the answer of a `final`, the error of an `error`); `None` only when
    the gateway could tell the outcome (`runs.get`) but no longer give the payload."""


class RunsNamespace(RunsMethods):
    """The `runs` namespace (`client.runs.list(...)`, `client.runs.get(...)`); calling it lists
    the runs: `await client.runs()` / `await client.runs("main")` -> `list[models.RunEntry]`."""

    async def __call__(self, session_key: str | None = None) -> list[models.RunEntry]:
        """The runs queued, running or waiting for an approval (of one session, when given)."""
        result = await self.list(session_key=UNSET if session_key is None else session_key)
        return result.runs


class _Iterator:
    """What the helper iterators share: `async for`, `await it.next(timeout=...)`, `async with`
    (which stops it on exit) and `aclose()`."""

    async def start(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def aclose(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __await__(self) -> Generator[Any, None, Any]:
        return self.start().__await__()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class ApprovalRequests(_Iterator):
    """The approval requests as they come, as an async iterator of `models.Approval` (from
    `Client.approval_requests`).

    Each request is yielded once, and only if `approvals.get` still says `pending` just before
    (a request resolved elsewhere meanwhile is skipped). It starts with the requests already
    waiting (unless `include_pending=False`), follows `approvals.changed` (resumed after
    reconnects like any `events.subscribe`), lists the pending ones again after a `gap`, and
    yields again a request asked again after a gateway restart (same `approval_id`, new
    `expires_at`). `aclose()` (or leaving `async with`) unsubscribes; a task waiting in the
    iteration then gets `StopAsyncIteration`.
    """

    def __init__(self, client: Helpers, session_key: str | None, include_pending: bool) -> None:
        self._client = client
        #: Only this session's requests (None: every session's).
        self.session_key = session_key
        self._include_pending = include_pending
        self._sub: Subscription = client.events.subscribe(
            events=["approvals.changed"],
            session_key=UNSET if session_key is None else session_key,
        )
        self._backlog: deque[models.Approval] = deque()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> ApprovalRequests:
        """Subscribe and list the pending requests (once); done by the first iteration."""
        async with self._start_lock:
            if not self._started:
                # Subscribed first (from a `gateway.hello` snapshot), listed second: a request
                # made meanwhile is in both, and yielded once.
                await self._sub.start()
                if self._include_pending:
                    await self._relist()
                self._started = True
        return self

    def __aiter__(self) -> ApprovalRequests:
        return self

    async def __anext__(self) -> models.Approval:
        await self.start()
        while not self._closed:
            if self._backlog:
                current = await self._still_pending(self._backlog.popleft())
                if current is not None and not self._closed:
                    return current
                continue
            env = await self._sub.__anext__()
            if env.event == "gap":
                await self._relist()
            elif env.event == "approvals.changed" and isinstance(env.payload, dict):
                approval = env.payload.get("approval")
                if isinstance(approval, dict):
                    self._take(approval)
        raise StopAsyncIteration

    async def next(self, timeout: float | None = None) -> models.Approval:
        """The next request; `TimeoutError` after `timeout` seconds."""
        if timeout is None:
            return await self.__anext__()
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def aclose(self) -> None:
        """Stop: unsubscribe and end the iteration."""
        self._closed = True
        await self._sub.aclose()

    def _take(self, raw: dict[str, Any]) -> None:
        # Read as it came first: a state this SDK does not know is not a request.
        if raw.get("state") != "pending":
            return
        if self.session_key is not None and raw.get("sessionKey") != self.session_key:
            return
        approval = models.Approval.model_validate(raw)
        key = (approval.approval_id, approval.expires_at)
        if key in self._seen:
            return
        self._seen[key] = None
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        self._backlog.append(approval)

    async def _relist(self) -> None:
        params = {} if self.session_key is None else {"sessionKey": self.session_key}
        result = await self._client._retrying(lambda: self._client.call("approvals.list", params))
        for raw in result.get("approvals", []) if isinstance(result, dict) else []:
            if isinstance(raw, dict):
                self._take(raw)

    async def _still_pending(self, approval: models.Approval) -> models.Approval | None:
        try:
            raw = await self._client._retrying(
                lambda: self._client.call("approvals.get", {"approvalId": approval.approval_id})
            )
        except NotFoundError:
            return None
        if not isinstance(raw, dict) or raw.get("state") != "pending":
            return None
        return models.Approval.model_validate(raw)


class RunPayloads(_Iterator):
    """A run's payloads as typed `ChatPayload`s, up to and including the terminal one (from
    `Client.rejoin_run`). A run already done gives its terminal payload alone.

    An unknown run raises `NotFoundError` (-32022) at the start; a lost connection raises
    `ConnectionLostError`, as `chat.stream` does. `aclose()` (or leaving `async with`) stops the
    stream, not the run."""

    def __init__(self, client: Helpers, run_id: str) -> None:
        #: The run.
        self.run_id = run_id
        self._sub: Subscription = client.chat.stream(run_id=run_id)

    async def start(self) -> RunPayloads:
        """Subscribe (once); done by the first iteration."""
        await self._sub.start()
        return self

    def __aiter__(self) -> RunPayloads:
        return self

    async def __anext__(self) -> ChatPayload:
        while True:
            env = await self._sub.__anext__()  # ends by itself after the terminal payload
            if env.event != "chat":
                continue  # shutdown, for one
            payload = chat_payload(env)
            if payload.run_id is not None and payload.run_id != self.run_id:
                continue
            return payload

    async def next(self, timeout: float | None = None) -> ChatPayload:
        """The next payload; `TimeoutError` after `timeout` seconds."""
        if timeout is None:
            return await self.__anext__()
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def aclose(self) -> None:
        """Stop the stream (the run goes on)."""
        await self._sub.aclose()


class Helpers(Namespaces):
    """The helper methods of `Client` (approvals, runs); see the README."""

    runs: RunsNamespace

    if TYPE_CHECKING:

        async def call(
            self,
            method: str,
            params: Mapping[str, Any] | list[Any] | None = None,
            *,
            timeout: float | None = None,
        ) -> Any: ...

        def _is_passing(self, exc: BaseException) -> bool: ...

    def _init_namespaces(self) -> None:
        super()._init_namespaces()
        self.runs = RunsNamespace(self)  # type: ignore[arg-type]

    # -- chat ---------------------------------------------------------------------------------

    async def send(
        self,
        message: str,
        *,
        session_key: str | Unset = UNSET,
        mode: SendModeArg | Unset = UNSET,
        idempotency_key: str | Unset = UNSET,
        model: str | Unset = UNSET,
        agent: str | Unset = UNSET,
    ) -> models.ChatSendResult:
        """`chat.send` with the message first. `mode`: `queue` (default), `steer` (answers the
        active run's id with status `steered`), `interrupt` or `reject`."""
        return await self.chat.send(
            message=message,
            session_key=session_key,
            mode=mode,
            idempotency_key=idempotency_key,
            model=model,
            agent=agent,
        )

    # -- approvals ----------------------------------------------------------------------------

    async def approve(
        self,
        approval_id: str,
        *,
        remember: models.ApprovalRemember | Literal["session"] | Unset = UNSET,
        reason: str | Unset = UNSET,
    ) -> models.Approval:
        """Allow a pending tool call (`remember="session"`: that tool for the rest of the
        session). Resolving one already resolved raises `ConflictError` (-32023)."""
        return await self.approvals.resolve(
            approval_id=approval_id, decision="allow", remember=remember, reason=reason
        )

    async def deny(self, approval_id: str, reason: str | Unset = UNSET) -> models.Approval:
        """Deny a pending tool call; the model sees `reason` in the call's error result."""
        return await self.approvals.resolve(approval_id=approval_id, decision="deny", reason=reason)

    async def pending_approvals(self, session_key: str | None = None) -> list[models.Approval]:
        """The pending approvals (of one session, when given), oldest first."""
        result = await self.approvals.list(
            session_key=UNSET if session_key is None else session_key
        )
        return result.approvals

    def approval_requests(
        self, session_key: str | None = None, *, include_pending: bool = True
    ) -> ApprovalRequests:
        """The approval requests as they come (those already waiting first): an async iterator
        of `models.Approval`, each while still pending (see `ApprovalRequests`)."""
        return ApprovalRequests(self, session_key, include_pending)

    # -- runs ---------------------------------------------------------------------------------

    def rejoin_run(self, run_id: str) -> RunPayloads:
        """Join a run (`chat.stream {runId}`): its next payloads, typed, to the terminal one
        (alone, when it is done)."""
        return RunPayloads(self, run_id)

    async def run(self, run_id: str) -> models.RunEntry:
        """One run: where it is, or (`state` `done`) how it ended."""
        return await self.runs.get(run_id=run_id)

    async def wait_for_run(self, run_id: str) -> RunResult:
        """How a run ends. It rejoins the run; when the stream is cut (a lost connection, a
        gateway restart that suspends and resumes the run) it asks `runs.get` where the run is
        once reconnected, and rejoins it again until it is done. Errors that are not passing
        (an unknown run: `NotFoundError`) are raised. Bound it with `asyncio.timeout`; the run
        is not affected."""
        delay = 0.1
        while True:
            try:
                async with self.rejoin_run(run_id) as payloads:
                    async for p in payloads:
                        if isinstance(p, (FinalPayload, AbortedPayload, ErrorPayload)):
                            return RunResult(run_id, p.session_key, p.state, p)
            except ClawgateException as exc:
                if not self._is_passing(exc):
                    raise
            # Cut before the end: where is the run now (after the reconnect)?
            entry = await self._retrying(lambda: self.call("runs.get", {"runId": run_id}))
            if isinstance(entry, dict) and entry.get("state") == "done":
                payload = await self._terminal_of(run_id)
                outcome = payload.state if payload is not None else str(entry.get("outcome"))
                return RunResult(run_id, str(entry.get("sessionKey")), outcome, payload)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _terminal_of(
        self, run_id: str
    ) -> FinalPayload | AbortedPayload | ErrorPayload | None:
        """The terminal payload of a done run (rejoining one gives it alone), if it comes."""
        try:
            async with self.rejoin_run(run_id) as payloads:
                async for p in payloads:
                    if isinstance(p, (FinalPayload, AbortedPayload, ErrorPayload)):
                        return p
        except ClawgateException:
            pass
        return None

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds or fails for good, pausing after each passing failure."""
        delay = 0.1
        while True:
            try:
                return await attempt()
            except ClawgateException as exc:
                if not self._is_passing(exc):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
