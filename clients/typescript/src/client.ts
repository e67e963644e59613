// The hand-written runtime: one WebSocket, request/response by id, subscriptions as async
// iterators, automatic reconnect that resumes `events.subscribe` with `afterSeq`/`epoch`; and
// the helper methods of helpers.ts (approvals, runs).
import {
  bindMethods,
  type Approval,
  type Calls,
  type ChatSendResult,
  type EventEnvelope,
  type Methods,
  type RunEntry,
  type Subscriptions,
  type Transport,
} from "./generated.js";
import * as helpers from "./helpers.js";
import type {
  ApprovalRequestsOptions,
  ApproveOptions,
  HelperHost,
  RunResult,
  SendOptions,
  WaitForRunOptions,
} from "./helpers.js";
import type { ChatPayload } from "./payloads.js";

/** A JSON-RPC error answered by the gateway. */
export class ClawgateError extends Error {
  /** The JSON-RPC error code (e.g. -32602). */
  readonly code: number;
  /** `error.data.kind` (e.g. "invalid_params", "not_found"). */
  readonly kind: string;
  /** The whole `error.data`. */
  readonly data: Record<string, unknown>;

  constructor(code: number, message: string, data: Record<string, unknown> | undefined) {
    super(message);
    this.name = "ClawgateError";
    this.code = code;
    this.data = data ?? {};
    this.kind = typeof this.data.kind === "string" ? (this.data.kind as string) : "unknown";
  }
}

/** The connection was lost (and reconnecting is off, or the client was closed). */
export class ConnectionClosedError extends Error {
  constructor(message = "the connection to the gateway is closed") {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** Options of {@link Client.connect}. */
export interface ConnectOptions {
  /** A bearer token (sent as a header in Node, as `?token=` in browsers). */
  token?: string;
  /** Reconnect after the connection drops (default true). */
  reconnect?: boolean;
  /** Longest wait between reconnect attempts, ms (default 5000). */
  maxBackoffMs?: number;
  /** How long a call may take, ms (default 120000). */
  requestTimeoutMs?: number;
  /**
   * Node only, for `wss://`: trust exactly the certificate whose SHA-256 fingerprint is this
   * (64 hex digits, `:` allowed; the gateway logs it and returns it in `gateway.status`),
   * whoever issued it. The client makes the TLS connection itself and checks the fingerprint
   * before any byte of the upgrade request (the token) is sent.
   */
  tlsFingerprint?: string;
  /** Node only, for `wss://`: a PEM file of the CA certificates to trust (names checked too). */
  tlsCaFile?: string;
}

/** The gateway presented another certificate than the pinned `tlsFingerprint`. */
export class TlsFingerprintError extends Error {
  /** The fingerprint asked for (lowercase hex). */
  readonly expected: string;
  /** The fingerprint of the certificate the server presented (lowercase hex). */
  readonly presented: string;

  constructor(expected: string, presented: string) {
    super(`TLS fingerprint mismatch: expected ${expected}, the server presented ${presented}; nothing was sent`);
    this.name = "TlsFingerprintError";
    this.expected = expected;
    this.presented = presented;
  }
}

type WsLike = {
  readyState: number;
  send(data: string): void;
  close(code?: number): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
};

interface Pending {
  /** Runs synchronously with the response, before any later message is handled. */
  onResult?: (value: unknown) => void;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/** An async queue feeding one subscription's iterator. */
class Feed<T> {
  private items: T[] = [];
  private waiters: Array<{ resolve(r: IteratorResult<T>): void; reject(e: Error): void }> = [];
  private ended = false;
  private failure: Error | null = null;

  push(item: T): void {
    if (this.ended) return;
    const w = this.waiters.shift();
    if (w) w.resolve({ value: item, done: false });
    else this.items.push(item);
  }

  end(failure?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure ?? null;
    for (const w of this.waiters.splice(0)) {
      if (this.failure) w.reject(this.failure);
      else w.resolve({ value: undefined as never, done: true });
    }
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.ended) {
      return this.failure ? Promise.reject(this.failure) : Promise.resolve({ value: undefined as never, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
}

interface SubState {
  method: keyof Subscriptions;
  params: Record<string, unknown>;
  unsubscribe: string;
  feed: Feed<EventEnvelope>;
  serverId: string | null;
  lastSeq: number | null;
  lastEpoch: string | null;
  /** `chat.stream` ends after its run's terminal payload and is not resumed. */
  resumable: boolean;
}

const TERMINAL = new Set(["final", "aborted", "error"]);

/** A fingerprint as 64 lowercase hex digits (or an error saying what was expected). */
function normalizeFingerprint(text: string): string {
  const hex = text.trim().replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(`tlsFingerprint: found ${JSON.stringify(text)}, expected a SHA-256 fingerprint of 64 hex digits`);
  }
  return hex;
}

/**
 * A TLS connection to `url`'s host whose leaf certificate has the SHA-256 `expected`, checked
 * once the handshake is done and before the socket is handed to `ws` (which only then writes
 * the upgrade request).
 */
async function pinnedSocket(url: URL, expected: string): Promise<unknown> {
  const tls = await import("node:tls");
  const net = await import("node:net");
  const { createHash } = await import("node:crypto");
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 443);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      servername: net.isIP(host) ? undefined : host,
      // The fingerprint is the trust: the chain and names are not checked.
      rejectUnauthorized: false,
      ALPNProtocols: ["http/1.1"],
    });
    socket.once("secureConnect", () => {
      const raw = socket.getPeerCertificate().raw;
      const presented = raw ? createHash("sha256").update(raw).digest("hex") : "";
      if (presented !== expected) {
        socket.destroy();
        reject(new TlsFingerprintError(expected, presented));
        return;
      }
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err) => reject(new ConnectionClosedError(`cannot connect to ${url.href}: ${err.message}`)));
  });
}

async function openSocket(url: string, options: { token?: string; tlsFingerprint?: string; tlsCaFile?: string }): Promise<WsLike> {
  const token = options.token;
  const g = globalThis as unknown as { WebSocket?: new (url: string) => WsLike; window?: unknown };
  if (g.window !== undefined && g.WebSocket) {
    // Browsers cannot set headers on a WebSocket: the token goes in the query string.
    const u = new URL(url);
    if (token) u.searchParams.set("token", token);
    return new g.WebSocket(u.toString());
  }
  const { default: WebSocket } = await import("ws");
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const secure = /^(wss|https):/i.test(url);
  if ((options.tlsFingerprint || options.tlsCaFile) && !secure) {
    throw new Error("tlsFingerprint and tlsCaFile apply to wss:// and https:// URLs");
  }
  if (options.tlsFingerprint && options.tlsCaFile) {
    throw new Error("give either tlsFingerprint or tlsCaFile, not both");
  }
  if (options.tlsFingerprint) {
    const socket = await pinnedSocket(new URL(url), normalizeFingerprint(options.tlsFingerprint));
    const createConnection = () => socket;
    return new WebSocket(url, { headers, createConnection } as never) as unknown as WsLike;
  }
  if (options.tlsCaFile) {
    const { readFileSync } = await import("node:fs");
    const ca = readFileSync(options.tlsCaFile);
    return new WebSocket(url, { headers, ca }) as unknown as WsLike;
  }
  return new WebSocket(url, { headers }) as unknown as WsLike;
}

/** A connected clawgate client. */
export class Client implements Transport {
  /** One typed function per method, by namespace: `client.api.chat.send({...})`. */
  readonly api: Methods;
  private ws: WsLike | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subs = new Map<string, SubState>();
  private closed = false;
  private connecting: Promise<void> | null = null;
  private readonly host: HelperHost;

  private constructor(
    private readonly url: string,
    private readonly options: Required<Omit<ConnectOptions, "token" | "tlsFingerprint" | "tlsCaFile">> &
      Pick<ConnectOptions, "token" | "tlsFingerprint" | "tlsCaFile">,
  ) {
    this.api = bindMethods(this);
    this.host = { api: this.api, isPassing: (err) => this.isPassing(err) };
  }

  /** Connects to `url` (`ws://127.0.0.1:18789/`). */
  static async connect(url: string, options: ConnectOptions = {}): Promise<Client> {
    const client = new Client(url, {
      token: options.token,
      reconnect: options.reconnect ?? true,
      maxBackoffMs: options.maxBackoffMs ?? 5000,
      requestTimeoutMs: options.requestTimeoutMs ?? 120_000,
      tlsFingerprint: options.tlsFingerprint,
      tlsCaFile: options.tlsCaFile,
    });
    await client.open();
    return client;
  }

  /** Shorthands for the namespaces. */
  get gateway() { return this.api.gateway; }
  get events() { return this.api.events; }
  get chat() { return this.api.chat; }
  get sessions() { return this.api.sessions; }
  get models() { return this.api.models; }
  get tools() { return this.api.tools; }
  get rpc() { return this.api.rpc; }
  get usage() { return this.api.usage; }

  /** `chat.send` with the message first: `send("hi", { sessionKey, mode: "steer" })`. */
  send(message: string, options?: SendOptions): Promise<ChatSendResult> {
    return helpers.send(this.host, message, options);
  }

  /** Allows a pending tool call (`remember: "session"`: that tool for the rest of the session). */
  approve(approvalId: string, options?: ApproveOptions): Promise<Approval> {
    return helpers.approve(this.host, approvalId, options);
  }

  /** Denies a pending tool call; the model sees `reason` in the call's error result. */
  deny(approvalId: string, reason?: string): Promise<Approval> {
    return helpers.deny(this.host, approvalId, reason);
  }

  /** The pending approvals (of one session, when given), oldest first. */
  pendingApprovals(sessionKey?: string): Promise<Approval[]> {
    return helpers.pendingApprovals(this.host, sessionKey);
  }

  /**
   * Approval requests as they come (those already waiting first), each while still pending:
   * `for await (const a of client.approvalRequests()) await client.approve(a.approvalId)`.
   */
  approvalRequests(options?: ApprovalRequestsOptions): AsyncIterableIterator<Approval> {
    return helpers.approvalRequests(this.host, options);
  }

  /** Joins a run: its next payloads, typed, to the terminal one (alone, when it is done). */
  rejoinRun(runId: string): AsyncIterableIterator<ChatPayload> {
    return helpers.rejoinRun(this.host, runId);
  }

  /** How a run ends (waiting through reconnects and gateway restarts). */
  waitForRun(runId: string, options?: WaitForRunOptions): Promise<RunResult> {
    return helpers.waitForRun(this.host, runId, options);
  }

  /** The runs queued, running or waiting for an approval (of one session, when given). */
  runs(sessionKey?: string): Promise<RunEntry[]> {
    return helpers.runs(this.host, sessionKey);
  }

  /** One run: where it is, or (`state: "done"`) how it ended. */
  run(runId: string): Promise<RunEntry> {
    return helpers.run(this.host, runId);
  }

  /** A failure worth trying again: a dropped connection this client reconnects from, or a
   * gateway starting or stopping (`unavailable`, retryable). */
  private isPassing(err: unknown): boolean {
    if (err instanceof ConnectionClosedError) return !this.closed && this.options.reconnect;
    return err instanceof ClawgateError && err.kind === "unavailable" && err.data.retryable === true;
  }

  private open(): Promise<void> {
    return new Promise((resolve, reject) => {
      openSocket(this.url, this.options).then((ws) => {
        let opened = false;
        ws.onopen = () => {
          opened = true;
          this.ws = ws;
          resolve();
        };
        ws.onerror = (ev) => {
          if (!opened) reject(new ConnectionClosedError(`cannot connect to ${this.url}: ${String((ev as { message?: string })?.message ?? "error")}`));
        };
        ws.onclose = () => {
          if (!opened) {
            reject(new ConnectionClosedError(`cannot connect to ${this.url}`));
            return;
          }
          this.onDisconnect(ws);
        };
        ws.onmessage = (ev) => this.onMessage(String(ev.data));
      }, reject);
    });
  }

  private onMessage(text: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof msg.id === "number" && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id)!;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      const err = msg.error as { code: number; message: string; data?: Record<string, unknown> } | undefined;
      if (err) p.reject(new ClawgateError(err.code, err.message, err.data));
      else {
        p.onResult?.(msg.result);
        p.resolve(msg.result);
      }
      return;
    }
    const params = msg.params as { subscription?: string; result?: EventEnvelope } | undefined;
    if (typeof msg.method === "string" && params?.subscription && params.result) {
      for (const sub of this.subs.values()) {
        if (sub.serverId !== params.subscription) continue;
        const env = params.result;
        if (env.event !== "gap" && env.event !== "tick" && env.event !== "shutdown") {
          sub.lastSeq = env.seq;
        }
        sub.lastEpoch = env.epoch;
        sub.feed.push(env);
        const state = (env.payload as { state?: string } | undefined)?.state;
        if (sub.method === "chat.stream" && state && TERMINAL.has(state)) {
          sub.feed.end();
          this.subs.delete(this.keyOf(sub));
        }
      }
    }
  }

  private keyOf(sub: SubState): string {
    for (const [k, v] of this.subs) if (v === sub) return k;
    return "";
  }

  private onDisconnect(ws: WsLike): void {
    if (this.ws !== ws) return;
    this.ws = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ConnectionClosedError());
      this.pending.delete(id);
    }
    for (const [k, sub] of this.subs) {
      sub.serverId = null;
      if (!sub.resumable || this.closed || !this.options.reconnect) {
        sub.feed.end(sub.resumable && !this.closed ? new ConnectionClosedError() : undefined);
        this.subs.delete(k);
      }
    }
    if (!this.closed && this.options.reconnect) void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      let backoff = 100;
      while (!this.closed) {
        try {
          await this.open();
          break;
        } catch {
          await new Promise((r) => setTimeout(r, backoff + Math.random() * backoff));
          backoff = Math.min(backoff * 2, this.options.maxBackoffMs);
        }
      }
      // Resume every events subscription where it stopped; the gateway replays what was missed
      // or announces a `gap` (expired, or restart when the epoch changed).
      for (const sub of this.subs.values()) {
        const params: Record<string, unknown> = { ...sub.params };
        if (sub.lastSeq !== null && sub.lastEpoch !== null) {
          params.afterSeq = sub.lastSeq;
          params.epoch = sub.lastEpoch;
        }
        try {
          // Set synchronously: the first notification may follow the response in the same read.
          await this.rawCall(sub.method, params, (id) => {
            sub.serverId = id as string;
          });
        } catch (err) {
          sub.feed.end(err as Error);
        }
      }
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private rawCall(method: string, params: unknown, onResult?: (value: unknown) => void): Promise<unknown> {
    const ws = this.ws;
    if (!ws || this.closed) return Promise.reject(new ConnectionClosedError());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} timed out after ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer, onResult });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params: params ?? {} }));
    });
  }

  /** Calls a method by name with typed params and result. */
  async call<M extends keyof Calls>(method: M, params: Calls[M]["params"]): Promise<Calls[M]["result"]> {
    if (!this.ws && this.connecting) await this.connecting;
    return (await this.rawCall(method, params)) as Calls[M]["result"];
  }

  /**
   * Subscribes; the iterator yields each envelope (including `gap`, `tick` and `shutdown`).
   * Breaking out of a `for await` unsubscribes.
   */
  subscribe<M extends keyof Subscriptions>(
    method: M,
    params: Subscriptions[M]["params"],
    unsubscribe: Subscriptions[M]["unsubscribe"],
  ): AsyncIterableIterator<Subscriptions[M]["item"]> {
    const sub: SubState = {
      method,
      params: { ...(params as Record<string, unknown>) },
      unsubscribe,
      feed: new Feed<EventEnvelope>(),
      serverId: null,
      lastSeq: null,
      lastEpoch: null,
      resumable: method === "events.subscribe",
    };
    const key = `s${this.nextId++}`;
    this.subs.set(key, sub);
    const started = this.rawCall(method, sub.params, (id) => {
      // Set synchronously: the first notification may follow the response in the same read.
      sub.serverId = id as string;
    }).then(
      () => undefined,
      (err: Error) => {
        sub.feed.end(err);
        this.subs.delete(key);
      },
    );
    const stop = async () => {
      this.subs.delete(key);
      sub.feed.end();
      if (sub.serverId && this.ws) {
        try {
          await this.rawCall(unsubscribe, [sub.serverId]);
        } catch {
          // The subscription is gone either way.
        }
      }
    };
    const iterator: AsyncIterableIterator<EventEnvelope> = {
      next: async () => {
        await started;
        return sub.feed.next();
      },
      return: async () => {
        await started.catch(() => undefined);
        await stop();
        return { value: undefined as never, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return iterator;
  }

  /** Closes the connection; pending calls fail, subscriptions end. */
  close(): void {
    this.closed = true;
    for (const sub of this.subs.values()) sub.feed.end();
    this.subs.clear();
    this.ws?.close(1000);
  }
}
