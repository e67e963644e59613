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
  }

  /** Whether the socket is open. */
  get connected() {
    return this.ws !== null && this.opened;
  }

  /** Opens a connection to `url` (closing any current one). */
  open(url) {
    this.drop(4000, 'reconnecting', false);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      queueMicrotask(() => this.handlers.onClose({ code: 1006, reason: String(err), opened: false }));
      return;
    }
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.opened = true;
      this.lastMessageAt = Date.now();
      this.startWatchdog();
      this.handlers.onOpen();
    };
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

  /** Calls `method`; rejects with RpcError (also when not connected, or after `timeoutMs`). */
  call(method, params, { timeoutMs = 30000, onNotify = null } = {}) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new RpcError('disconnected', 'not connected to the gateway'));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new RpcError('timeout', `${method}: no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, onNotify });
      const body = { jsonrpc: '2.0', id, method };
      if (params !== undefined) body.params = params;
      try {
        this.ws.send(JSON.stringify(body));
      } catch (err) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new RpcError('disconnected', String(err)));
      }
    });
  }

  /** Subscribes: `onNotify(result)` gets each notification's result; resolves the id. */
  subscribe(method, params, onNotify) {
    return this.call(method, params, { onNotify });
  }
}
