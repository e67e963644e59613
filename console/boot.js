// The connection's head start: loaded `async` at the top of the page, this module opens the
// WebSocket and sends `gateway.hello` while the rest of the console is still being fetched and
// evaluated; app.js (which imports this same instance) adopts the socket and the answer.

/** Where the token and the selected session are kept (sessionStorage). */
export const TOKEN_KEY = 'clawgate.token';

/** The WebSocket URL of this page's gateway, with `?token=` when there is one. */
export function wsUrl(token) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `${proto}//${location.host}/${query}`;
}

/** The `gateway.hello` params the console sends. */
export function helloParams() {
  return {
    client: { name: 'clawgate-console', mode: 'ui', version: '1', platform: (navigator.platform || 'browser').slice(0, 64) || null },
  };
}

/** The token kept for this tab, or null. */
export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

const HELLO_ID = 'boot-hello';

/**
 * The socket opened at load: {url, ws, helloId (set once hello is sent), answer (the hello's
 * answer message once read), closed ({code, reason} once it closed: a refused token is then
 * not presented a second time)}. Null when no socket could be made or once taken.
 */
let early = null;
try {
  const url = wsUrl(storedToken());
  const ws = new WebSocket(url);
  const e = { url, ws, helloId: null, answer: null, closed: null };
  ws.onopen = () => {
    e.helloId = HELLO_ID;
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: HELLO_ID, method: 'gateway.hello', params: helloParams() }));
  };
  ws.onmessage = (ev) => {
    try {
      const msg = JSON.parse(ev.data);
      if (msg?.id === HELLO_ID) e.answer = msg;
    } catch {
      // Not JSON: nothing the console waits for.
    }
  };
  ws.onclose = (ev) => {
    e.closed = { code: ev.code, reason: ev.reason };
  };
  early = e;
} catch {
  early = null;
}

/**
 * The early socket if it was opened for `url` (the same token), with its handlers removed:
 * the caller owns it from here (RpcClient.open's `early`), closed or not. Null after the
 * first call, or when it was opened for another token (then it is closed).
 */
export function take(url) {
  const e = early;
  early = null;
  if (!e) return null;
  e.ws.onopen = e.ws.onmessage = e.ws.onclose = null;
  if (e.url === url) return e;
  try {
    e.ws.close(1000, 'not needed');
  } catch {
    // Already closing.
  }
  return null;
}
