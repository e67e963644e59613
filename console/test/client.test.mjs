// node --test console/test/*.test.mjs: the reconnect delay and the outbox (pure parts of the client).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, RpcError } from '../rpc.js';
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
