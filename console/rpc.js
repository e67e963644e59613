// A small JSON-RPC 2.0 client over one WebSocket: calls with ids and timeouts, subscriptions
// (a subscribe call's answer registers the notification handler before any notification of
// it can be read), a watchdog for a silent connection, and the reconnect delay (exponential
// backoff with jitter). Reconnecting and resuming are the caller's: it knows what to resume.

/** An error answered by the gateway, or a local one (`code` 'disconnected' / 'timeout'). */
export class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }

  /** Whether trying the same call later may succeed. */
  get retryable() {
    return (
      this.code === 'disconnected' ||
      this.code === 'timeout' ||
      this.code === -32009 ||
      this.code === -32024 ||
      (this.code === -32025 && this.data?.retryable !== false)
    );
  }
}

/** The delay before reconnect attempt `attempt` (0, 1, ...): `base`·2^attempt capped at `max`,
 * half of it fixed and half random ("equal jitter"), so clients that lost the gateway at the
 * same moment do not all come back at once. */
export function backoffDelay(attempt, random = Math.random, base = 500, max = 15000) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(cap / 2 + (random() * cap) / 2);
}

/** One WebSocket connection at a time; `open()` again after a close to reconnect. */
export class RpcClient {
  /** `handlers`: {onOpen(), onClose({code, reason, opened}), onNotification(msg)} */
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.subscriptions = new Map();
    this.opened = false;
    this.lastMessageAt = 0;
    this.idleLimitMs = 75000;
    this.watchdog = null;
    this.early = null;
  }

  /** Whether the socket is open. */
  get connected() {
    return this.ws !== null && this.opened;
  }

  /**
   * Opens a connection to `url` (closing any current one). `early` ({ws, helloId, answer},
   * boot.js) is a socket opened before this client existed: it is adopted instead of a new one,
   * and the answer to the call it already sent (`helloId`) is given by `takeEarly()`.
   */
  open(url, early = null) {
    this.drop(4000, 'reconnecting', false);
    if (early?.closed) {
      // It failed already: reported as this attempt's failure, not tried again.
      const { code, reason } = early.closed;
      queueMicrotask(() => this.handlers.onClose({ code, reason, opened: false }));
      return;
    }
    let ws = early?.ws ?? null;
    if (!ws) {
      try {
        ws = new WebSocket(url);
      } catch (err) {
        queueMicrotask(() => this.handlers.onClose({ code: 1006, reason: String(err), opened: false }));
        return;
      }
    }
    this.ws = ws;
    this.opened = false;
    this.early = null;
    const opened = () => {
      if (this.ws !== ws || this.opened) return;
      this.opened = true;
      this.lastMessageAt = Date.now();
      this.startWatchdog();
      this.handlers.onOpen();
    };
    ws.onopen = opened;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastMessageAt = Date.now();
      this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.closed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event follows every error.
    };
    if (early && ws.readyState === WebSocket.OPEN) {
      if (early.helloId !== null) {
        this.early = this.expect(early.helloId, 'gateway.hello', 30000, null);
        this.early.catch(() => {});
        if (early.answer) this.handle(early.answer);
      }
      queueMicrotask(opened);
    }
  }

  /** The answer to the call an adopted socket had already sent (once), or null. */
  takeEarly() {
    const p = this.early;
    this.early = null;
    return p;
  }

  /** Closes the connection now, without waiting for the socket's own close (which a dead
   * network can delay for minutes); reports it through onClose when `report` is set. */
  drop(code = 1000, reason = 'closed', report = true) {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code >= 4000 || code === 1000 ? code : 1000, reason);
    } catch {
      // Already closing.
    }
    if (report) this.closed(code, reason);
    else this.reset();
  }

  reset() {
    const opened = this.opened;
    this.ws = null;
    this.opened = false;
    clearInterval(this.watchdog);
    this.watchdog = null;
    this.early = null;
    this.subscriptions.clear();
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new RpcError('disconnected', 'the connection closed before the answer'));
    }
    this.pending.clear();
    return opened;
  }

  closed(code, reason) {
    const opened = this.reset();
    this.handlers.onClose({ code, reason, opened });
  }

  startWatchdog() {
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (this.connected && Date.now() - this.lastMessageAt > this.idleLimitMs) {
        this.drop(4001, 'silent');
      }
    }, 5000);
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    this.handle(msg);
  }

  /** Dispatches one parsed message (or batch): notifications to their handlers, answers to their calls. */
  handle(msg) {
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (!m || typeof m !== 'object') continue;
      if (m.method && m.id === undefined) {
        const sub = m.params?.subscription;
        const handler = sub !== undefined ? this.subscriptions.get(sub) : null;
        if (handler) handler(m.params.result, m);
        this.handlers.onNotification?.(m);
        continue;
      }
      const entry = this.pending.get(m.id);
      if (!entry) continue;
      this.pending.delete(m.id);
      clearTimeout(entry.timer);
      if (m.error) {
        entry.reject(new RpcError(m.error.code, m.error.message || 'error', m.error.data));
      } else {
        // A subscription's handler is in place before the next message is read.
        if (entry.onNotify && m.result !== undefined) this.subscriptions.set(m.result, entry.onNotify);
        entry.resolve(m.result);
      }
    }
  }

  /** A promise for the answer to request `id`, rejected after `timeoutMs` or on a close. */
  expect(id, method, timeoutMs, onNotify) {
    let entry;
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new RpcError('timeout', `${method}: no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      entry = { resolve, reject, timer, onNotify };
    });
    this.pending.set(id, entry);
    return answer;
  }

  /** Calls `method`; rejects with RpcError (also when not connected, or after `timeoutMs`). */
  call(method, params, { timeoutMs = 30000, onNotify = null } = {}) {
    if (!this.connected) return Promise.reject(new RpcError('disconnected', 'not connected to the gateway'));
    const id = this.nextId++;
    const answer = this.expect(id, method, timeoutMs, onNotify);
    const body = { jsonrpc: '2.0', id, method };
    if (params !== undefined) body.params = params;
    try {
      this.ws.send(JSON.stringify(body));
    } catch (err) {
      const entry = this.pending.get(id);
      this.pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(new RpcError('disconnected', String(err)));
    }
    return answer;
  }

  /** Subscribes: `onNotify(result)` gets each notification's result; resolves the id. */
  subscribe(method, params, onNotify) {
    return this.call(method, params, { onNotify });
  }
}
