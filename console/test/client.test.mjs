// node --test console/test/*.test.mjs: the reconnect delay, the outbox and the adoption of an early socket (pure parts of the client).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, RpcClient, RpcError } from '../rpc.js';
import { Outbox, newIdempotencyKey } from '../outbox.js';

test('backoff doubles, is capped, and is jittered within [cap/2, cap]', () => {
  assert.equal(backoffDelay(0, () => 0), 250);
  assert.equal(backoffDelay(0, () => 1), 500);
  assert.equal(backoffDelay(3, () => 1), 4000);
  assert.equal(backoffDelay(50, () => 1), 15000);
  assert.equal(backoffDelay(50, () => 0), 7500);
  for (let attempt = 0; attempt < 12; attempt += 1) {
    const d = backoffDelay(attempt);
    const cap = Math.min(15000, 500 * 2 ** attempt);
    assert.ok(d >= cap / 2 && d <= cap, `${attempt}: ${d}`);
  }
});

test('retryable errors', () => {
  assert.ok(new RpcError('disconnected', 'x').retryable);
  assert.ok(new RpcError(-32025, 'x', { retryable: true }).retryable);
  assert.ok(!new RpcError(-32025, 'x', { retryable: false }).retryable);
  assert.ok(!new RpcError(-32602, 'x').retryable);
  assert.ok(!new RpcError(-32023, 'x').retryable);
});

class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

test('idempotency keys are fresh and fit the protocol', () => {
  const a = newIdempotencyKey();
  const b = newIdempotencyKey();
  assert.notEqual(a, b);
  assert.match(a, /^[A-Za-z0-9._:-]{1,128}$/);
});

test('the outbox keeps messages (and their keys) across a reload until acknowledged', () => {
  const storage = new MemoryStorage();
  const box = new Outbox(storage);
  let changes = 0;
  box.onChange(() => (changes += 1));
  const one = box.add({ sessionKey: 'main', message: 'one', mode: 'steer' });
  const two = box.add({ sessionKey: 'other', message: 'two' });
  assert.equal(box.count, 2);
  assert.equal(changes, 2);
  const again = new Outbox(storage);
  assert.deepEqual(again.items.map((i) => [i.idempotencyKey, i.message]), [[one.idempotencyKey, 'one'], [two.idempotencyKey, 'two']]);
  assert.equal(again.first().idempotencyKey, one.idempotencyKey, 'oldest first, the same key');
  assert.deepEqual(again.of('other').map((i) => i.message), ['two']);
  again.remove(one.idempotencyKey);
  assert.equal(new Outbox(storage).count, 1);
  storage.setItem('clawgate.outbox', '{not json');
  assert.equal(new Outbox(storage).count, 0);
});

/** A WebSocket stand-in: records what is sent; the test fires its events. */
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static made = 0;
  constructor(url) {
    FakeSocket.made += 1;
    this.url = url;
    this.readyState = FakeSocket.CONNECTING;
    this.sent = [];
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = FakeSocket.CLOSED;
  }
  fireOpen() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.();
  }
  fireMessage(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
}

/** A client over FakeSocket, with what its handlers saw. */
function fakeClient() {
  globalThis.WebSocket = FakeSocket;
  const seen = { opens: 0, closes: [] };
  const client = new RpcClient({ onOpen: () => (seen.opens += 1), onClose: (ev) => seen.closes.push(ev) });
  return { client, seen };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
const HELLO = { protocol: 1, snapshot: { seq: 7, epoch: 'e' } };

test('a socket opened early is adopted with the hello answer it already read', async () => {
  const { client, seen } = fakeClient();
  const ws = new FakeSocket('ws://x/');
  ws.fireOpen();
  const made = FakeSocket.made;
  client.open('ws://x/', { ws, helloId: 'boot-hello', answer: { jsonrpc: '2.0', id: 'boot-hello', result: HELLO }, closed: null });
  await tick();
  assert.equal(FakeSocket.made, made, 'no second socket');
  assert.equal(seen.opens, 1);
  assert.deepEqual(await client.takeEarly(), HELLO);
  assert.equal(client.takeEarly(), null, 'taken once');
  const next = client.call('sessions.list', {});
  assert.equal(ws.sent.at(-1).method, 'sessions.list');
  ws.fireMessage({ jsonrpc: '2.0', id: ws.sent.at(-1).id, result: { sessions: [] } });
  assert.deepEqual(await next, { sessions: [] });
  client.drop(1000, 'done', false);
});

test('an early hello still unanswered is answered through the adopting client', async () => {
  const { client, seen } = fakeClient();
  const ws = new FakeSocket('ws://x/');
  ws.fireOpen();
  client.open('ws://x/', { ws, helloId: 'boot-hello', answer: null, closed: null });
  await tick();
  assert.equal(seen.opens, 1);
  const hello = client.takeEarly();
  ws.fireMessage({ jsonrpc: '2.0', id: 'boot-hello', error: { code: -32602, message: 'bad hello' } });
  await assert.rejects(hello, (err) => err.code === -32602 && err.message === 'bad hello');
  client.drop(1000, 'done', false);
});

test('an early socket still connecting is adopted and opens later; one that failed is reported, not retried', async () => {
  const { client, seen } = fakeClient();
  const ws = new FakeSocket('ws://x/');
  client.open('ws://x/', { ws, helloId: null, answer: null, closed: null });
  await tick();
  assert.equal(seen.opens, 0);
  ws.fireOpen();
  assert.equal(seen.opens, 1);
  assert.equal(client.takeEarly(), null, 'nothing was sent early');
  client.drop(1000, 'done', false);

  const other = fakeClient();
  const made = FakeSocket.made;
  other.client.open('ws://x/', { ws: new FakeSocket('ws://x/'), helloId: null, answer: null, closed: { code: 1006, reason: '' } });
  await tick();
  assert.equal(FakeSocket.made, made + 1, 'only the early socket exists');
  assert.deepEqual(other.seen.closes, [{ code: 1006, reason: '', opened: false }]);
  assert.equal(other.seen.opens, 0);
});
