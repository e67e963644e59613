// The outbox: messages typed but not yet acknowledged by the gateway, each with the
// idempotencyKey generated once when it was typed, kept in sessionStorage so a reload or a
// dropped connection loses none of them. A resend with the same key starts nothing twice.

const STORAGE_KEY = 'clawgate.outbox';

/** A new idempotency key: `web-` and 32 random hex digits (fits `A-Za-z0-9._:-`, 1..128). */
export function newIdempotencyKey(cryptoImpl = globalThis.crypto) {
  const bytes = new Uint8Array(16);
  cryptoImpl.getRandomValues(bytes);
  return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Messages waiting to be acknowledged, oldest first. */
export class Outbox {
  /** `storage`: a Storage (sessionStorage), or null to keep them in memory only. */
  constructor(storage, key = STORAGE_KEY) {
    this.storage = storage;
    this.key = key;
    this.items = [];
    this.listeners = new Set();
    try {
      const saved = storage ? JSON.parse(storage.getItem(key) || '[]') : [];
      if (Array.isArray(saved)) {
        this.items = saved.filter((i) => i && typeof i.idempotencyKey === 'string' && typeof i.message === 'string');
      }
    } catch {
      this.items = [];
    }
  }

  /** Adds a message; returns the item (with its new idempotencyKey). */
  add({ sessionKey, message, mode }) {
    const item = { idempotencyKey: newIdempotencyKey(), sessionKey, message, mode: mode || null, createdAt: Date.now() };
    this.items.push(item);
    this.changed();
    return item;
  }

  /** Removes the message with this key (acknowledged, or refused for good). */
  remove(idempotencyKey) {
    const before = this.items.length;
    this.items = this.items.filter((i) => i.idempotencyKey !== idempotencyKey);
    if (this.items.length !== before) this.changed();
  }

  /** The first message not yet acknowledged. */
  first() {
    return this.items[0] || null;
  }

  /** How many wait. */
  get count() {
    return this.items.length;
  }

  /** The waiting messages of one session. */
  of(sessionKey) {
    return this.items.filter((i) => i.sessionKey === sessionKey);
  }

  /** Calls `fn` after every change. */
  onChange(fn) {
    this.listeners.add(fn);
  }

  changed() {
    try {
      if (this.storage) this.storage.setItem(this.key, JSON.stringify(this.items));
    } catch {
      // Storage full or disabled: the memory copy still holds them.
    }
    for (const fn of this.listeners) fn(this);
  }
}
