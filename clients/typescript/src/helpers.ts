// Hand-written helpers over the generated methods: approvals (resolve, list, receive requests as
// they come) and runs (rejoin, wait for the end, list). `Client` exposes each as a method.
import type {
  Approval,
  ApprovalRemember,
  ChatSendParams,
  ChatSendResult,
  EventEnvelope,
  Methods,
  RunEntry,
  RunOutcome,
} from "./generated.js";
import { chatPayload, isTerminalPayload, type ChatPayload, type TerminalChatPayload } from "./payloads.js";

/** Options of `Client.send`: those of `chat.send` but the message (`mode` included). */
export type SendOptions = Omit<ChatSendParams, "message">;

/** Options of `Client.approve`. */
export interface ApproveOptions {
  /** `"session"`: also allow later calls of this tool in this session without asking. */
  remember?: ApprovalRemember;
  /** Why (recorded with the approval). */
  reason?: string;
}

/** Options of `Client.approvalRequests`. */
export interface ApprovalRequestsOptions {
  /** Only this session's requests. */
  sessionKey?: string;
  /** Also yield the requests already waiting when the iteration starts (default true). */
  includePending?: boolean;
}

/** Options of `Client.waitForRun`. */
export interface WaitForRunOptions {
  /** Stops waiting (the promise rejects with the signal's reason); the run goes on. */
  signal?: AbortSignal;
}

/** How a run ended, as `Client.waitForRun` tells it. */
export interface RunResult {
  /** The run. */
  runId: string;
  /** Its session. */
  sessionKey: string;
  /** `final`, `aborted` or `error`. */
  outcome: RunOutcome;
  /**
   * The terminal payload (the answer of a `final`, the error of an `error`); absent only when the
   * gateway could tell the outcome (`runs.get`) but no longer give the payload.
   */
  payload?: TerminalChatPayload;
}

/** What the helpers need from a client. */
export interface HelperHost {
  /** The generated methods. */
  readonly api: Methods;
  /** Whether `err` is passing: a dropped connection the client reconnects from, or a gateway
   * that is starting or stopping (`unavailable`). */
  isPassing(err: unknown): boolean;
}

/** Longest pause between two tries after a passing failure, ms. */
const MAX_BACKOFF_MS = 2000;
/** How many entries the de-duplication of approval requests remembers. */
const SEEN_LIMIT = 4096;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `promise`, or the signal's reason as a rejection if it aborts first. */
function unlessAborted<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Runs `fn` until it succeeds or fails for good, pausing after each passing failure. */
async function retrying<T>(host: HelperHost, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  let delay = 100;
  for (;;) {
    try {
      return await unlessAborted(fn(), signal);
    } catch (err) {
      if (signal?.aborted || !host.isPassing(err)) throw err;
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, MAX_BACKOFF_MS);
  }
}

/** `chat.send` with the message first and the other params (`mode`, `sessionKey`, ...) after. */
export function send(host: HelperHost, message: string, options: SendOptions = {}): Promise<ChatSendResult> {
  return host.api.chat.send({ ...options, message });
}

/** `approvals.resolve` with `decision: "allow"`. */
export function approve(host: HelperHost, approvalId: string, options: ApproveOptions = {}): Promise<Approval> {
  const params: Parameters<Methods["approvals"]["resolve"]>[0] = { approvalId, decision: "allow" };
  if (options.remember !== undefined) params.remember = options.remember;
  if (options.reason !== undefined) params.reason = options.reason;
  return host.api.approvals.resolve(params);
}

/** `approvals.resolve` with `decision: "deny"`; the model sees `reason` in the tool result. */
export function deny(host: HelperHost, approvalId: string, reason?: string): Promise<Approval> {
  return host.api.approvals.resolve(reason === undefined ? { approvalId, decision: "deny" } : { approvalId, decision: "deny", reason });
}

/** The pending approvals (of one session, when given), oldest first. */
export async function pendingApprovals(host: HelperHost, sessionKey?: string): Promise<Approval[]> {
  const { approvals } = await host.api.approvals.list(sessionKey === undefined ? {} : { sessionKey });
  return approvals;
}

/** The runs queued, running or waiting for an approval (of one session, when given). */
export async function runs(host: HelperHost, sessionKey?: string): Promise<RunEntry[]> {
  const result = await host.api.runs.list(sessionKey === undefined ? {} : { sessionKey });
  return result.runs;
}

/** One run: where it is, or (`state: "done"`) how it ended. */
export function run(host: HelperHost, runId: string): Promise<RunEntry> {
  return host.api.runs.get({ runId });
}

/** The subscription a helper iterator reads, so that its `return()` can end it at once. */
class Inner {
  /** `return()` was called. */
  stopped = false;
  /** The helper waits for the subscription's next envelope. */
  reading = false;
  private sub?: AsyncIterator<EventEnvelope>;
  private over = false;

  /** The subscription to read. */
  set(sub: AsyncIterator<EventEnvelope>): void {
    this.sub = sub;
  }

  /** The subscription's next envelope. */
  async next(): Promise<IteratorResult<EventEnvelope>> {
    this.reading = true;
    try {
      const r = await this.sub!.next();
      if (r.done) this.over = true;
      return r;
    } finally {
      this.reading = false;
    }
  }

  /** The subscription has ended by itself (a chat stream after its terminal payload). */
  ended(): void {
    this.over = true;
  }

  /** Unsubscribes, once, unless it has ended by itself. */
  async close(): Promise<void> {
    if (this.over || !this.sub) return;
    this.over = true;
    await this.sub.return?.();
  }
}

/**
 * An iterator over `gen` whose `return()` works at once, also while `gen` waits for its
 * subscription: it ends that subscription first (so the pending read ends), then `gen`.
 */
function stoppable<T>(inner: Inner, gen: AsyncGenerator<T, void, undefined>): AsyncIterableIterator<T> {
  return {
    next: () => gen.next(),
    return: async () => {
      inner.stopped = true;
      if (inner.reading) await inner.close();
      await gen.return(undefined);
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/**
 * The approval requests as they come: each tool call waiting for a person, once, as an
 * `Approval` whose `state` was `pending` when it was yielded (checked with `approvals.get` just
 * before, so a request resolved elsewhere meanwhile is skipped). It starts with the requests
 * already waiting (unless `includePending: false`), survives reconnects, and after a `gap`
 * lists the pending ones again so none is lost. A request asked again after a gateway restart
 * (same `approvalId`, new `expiresAt`) is yielded again. `return()` (or breaking out of a
 * `for await`) unsubscribes.
 */
export function approvalRequests(host: HelperHost, options: ApprovalRequestsOptions = {}): AsyncIterableIterator<Approval> {
  const inner = new Inner();
  return stoppable(inner, approvalRequestsGen(host, options, inner));
}

async function* approvalRequestsGen(
  host: HelperHost,
  options: ApprovalRequestsOptions,
  inner: Inner,
): AsyncGenerator<Approval, void, undefined> {
  const { sessionKey, includePending = true } = options;
  // Subscribe from the snapshot's seq, then list: a request made after the snapshot is replayed,
  // one made before it is listed (or already resolved), and the two are merged below.
  const hello = await retrying(host, () => host.api.gateway.hello());
  if (inner.stopped) return;
  const events = host.api.events.subscribe({
    events: ["approvals.changed"],
    afterSeq: hello.snapshot.seq,
    epoch: hello.snapshot.epoch,
    ...(sessionKey === undefined ? {} : { sessionKey }),
  });
  inner.set(events);
  const seen = new Set<string>();
  const backlog: Approval[] = [];
  const take = (a: Approval) => {
    if (a.state !== "pending" || (sessionKey !== undefined && a.sessionKey !== sessionKey)) return;
    const key = `${a.approvalId}\u0000${a.expiresAt}`;
    if (seen.has(key)) return;
    seen.add(key);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value as string);
    backlog.push(a);
  };
  const relist = async () => {
    for (const a of await retrying(host, () => pendingApprovals(host, sessionKey))) take(a);
  };
  try {
    if (includePending) await relist();
    while (!inner.stopped) {
      const queued = backlog.shift();
      if (queued) {
        const current = await stillPending(host, queued);
        if (current && !inner.stopped) yield current;
        continue;
      }
      const next = await inner.next();
      if (next.done) return;
      const env: EventEnvelope = next.value;
      if (env.event === "gap") await relist();
      else if (env.event === "approvals.changed") {
        const approval = (env.payload as { approval?: Approval }).approval;
        if (approval && typeof approval.approvalId === "string") take(approval);
      }
    }
  } finally {
    await inner.close();
  }
}

/** The approval as it is now if it is still pending, else undefined. */
async function stillPending(host: HelperHost, a: Approval): Promise<Approval | undefined> {
  try {
    const now = await retrying(host, () => host.api.approvals.get({ approvalId: a.approvalId }));
    return now.state === "pending" ? now : undefined;
  } catch (err) {
    if ((err as { kind?: string }).kind === "not_found") return undefined;
    throw err;
  }
}

/** Thrown by `rejoinRun` when the stream ends before the run's terminal payload. */
export class RunStreamEndedError extends Error {
  /** The run. */
  readonly runId: string;

  constructor(runId: string) {
    super(`the stream of run ${runId} ended before its terminal payload (the connection was lost or closed)`);
    this.name = "RunStreamEndedError";
    this.runId = runId;
  }
}

/**
 * Joins a run (`chat.stream {runId}`): its next payloads, typed, up to and including the
 * terminal one; a run already done yields its terminal payload alone. An unknown run rejects
 * with `ClawgateError` -32022; a stream cut before the end (connection lost) throws
 * `RunStreamEndedError`. `return()` (or breaking out of a `for await`) stops the stream, not
 * the run.
 */
export function rejoinRun(host: HelperHost, runId: string): AsyncIterableIterator<ChatPayload> {
  const inner = new Inner();
  return stoppable(inner, rejoinRunGen(host, runId, inner));
}

async function* rejoinRunGen(host: HelperHost, runId: string, inner: Inner): AsyncGenerator<ChatPayload, void, undefined> {
  inner.set(host.api.chat.stream({ runId }));
  try {
    for (;;) {
      const next = await inner.next();
      if (next.done) {
        if (inner.stopped) return;
        throw new RunStreamEndedError(runId);
      }
      if (next.value.event !== "chat") continue; // shutdown, for one
      const payload = chatPayload(next.value);
      if (payload.runId !== undefined && payload.runId !== runId) continue;
      const terminal = isTerminalPayload(payload);
      if (terminal) inner.ended(); // the subscription is over on both sides after it
      yield payload;
      if (terminal) return;
    }
  } finally {
    await inner.close();
  }
}

/**
 * Waits for a run to end and returns how: by rejoining it; when the stream is cut (a dropped
 * connection, a gateway restart that suspends and resumes the run) it asks `runs.get` where the
 * run is once the client has reconnected, and rejoins it again until it is done. Errors that are
 * not passing (an unknown run: -32022) reject; so does `signal` when it aborts.
 */
export async function waitForRun(host: HelperHost, runId: string, options: WaitForRunOptions = {}): Promise<RunResult> {
  const { signal } = options;
  let delay = 100;
  for (;;) {
    signal?.throwIfAborted();
    const payloads = rejoinRun(host, runId);
    try {
      for (;;) {
        const next = await unlessAborted(payloads.next(), signal);
        if (next.done) break;
        const p = next.value;
        if (isTerminalPayload(p)) return { runId, sessionKey: p.sessionKey, outcome: p.state, payload: p };
      }
    } catch (err) {
      if (signal?.aborted || !(err instanceof RunStreamEndedError || host.isPassing(err))) throw err;
    } finally {
      await payloads.return?.();
    }
    // Cut before the end: where is the run now (after the reconnect)?
    const entry = await retrying(host, () => run(host, runId), signal);
    if (entry.state === "done") {
      // Rejoining a done run gives its terminal payload alone; the outcome stands without it.
      const payload = await terminalOf(host, runId).catch(() => undefined);
      return { runId, sessionKey: entry.sessionKey, outcome: payload?.state ?? entry.outcome ?? "unknown", payload };
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, MAX_BACKOFF_MS);
  }
}

/** The terminal payload of a done run. */
async function terminalOf(host: HelperHost, runId: string): Promise<TerminalChatPayload | undefined> {
  for await (const p of rejoinRun(host, runId)) if (isTerminalPayload(p)) return p;
  return undefined;
}
