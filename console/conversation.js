// The conversation of the selected session: its history (paged backwards on scroll), the
// live run (text streaming in, tool cards, approvals), compaction markers and the messages
// still waiting in the outbox. A model of plain objects is kept and rendered into keyed
// elements, so a delta re-renders one message and a new event moves no other node.

import { h, setData, clock, dateTime, pretty, duration } from './dom.js';
import { renderInto } from './markdown.js';

/** Messages per older history page (scrolling up). */
export const PAGE = 50;
/** Messages of the newest page, shown when a session opens or is reloaded. */
export const FIRST_PAGE = 200;

const TERMINAL = new Set(['final', 'aborted', 'error']);

/** Updates every approval timer under `root` from its data-expires-at. */
export function tickTimers(root, serverNow) {
  for (const el of root.querySelectorAll('[data-testid="approval-timer"]')) {
    const left = Number(el.getAttribute('data-expires-at')) - serverNow();
    const text = left > 0 ? `${duration(left)} left` : 'expired';
    if (el.textContent !== text) el.textContent = text;
    setData(el, 'expired', left > 0 ? null : 'true');
  }
}

function shortInput(input) {
  if (input === undefined || input === null) return '';
  let s;
  try {
    s = typeof input === 'string' ? input : JSON.stringify(input);
  } catch {
    s = String(input);
  }
  return s.length > 90 ? s.slice(0, 89) + '…' : s;
}

export class Conversation {
  /**
   * `el`: the messages container. `opts`: {call(method, params), toast(text), runOf(key) →
   * {active, state}, buffered(key) → [[payload, envelope]], resolveApproval(approval, decision,
   * remember), serverNow(), onLoaded(conversation)}.
   */
  constructor(el, opts) {
    this.el = el;
    this.opts = opts;
    this.cache = new Map();
    this.keys = [];
    this.openTools = new Set();
    this.gen = 0;
    this.dirty = new Set();
    this.frame = 0;
    this.reset(null);
    el.addEventListener('scroll', () => this.onScroll(), { passive: true });
  }

  /** Forgets everything and shows session `key` as empty (nothing loaded yet). */
  reset(key) {
    this.gen += 1;
    this.key = key;
    this.sessionId = null;
    this.msgs = [];
    this.byId = new Map();
    this.compactions = [];
    this.liveCompactions = [];
    this.hasMore = false;
    this.loading = false;
    this.loaded = false;
    this.loadingOlder = false;
    this.failed = null;
    this.liveItems = [];
    this.tools = new Map();
    this.approvals = new Map();
    this.notices = [];
    this.seen = new Set();
    this.attempts = new Map();
    this.queue = [];
    this.unsent = key && this.opts.unsent ? this.opts.unsent(key) : [];
    this.sent = new Map();
    this.seenKeys = new Set();
    this.finished = new Set();
    this.reloadTimer = null;
    this.reindex();
    this.cache.clear();
    this.keys = [];
    this.el.replaceChildren();
    this.el.scrollTop = 0;
  }

  /** Loads session `key`'s newest page (and its pending approvals), then the buffered live
   * payloads of its runs, and renders. */
  async open(key) {
    this.reset(key);
    const gen = this.gen;
    this.loading = true;
    this.render();
    let page;
    let approvals = [];
    try {
      const [p, a] = await Promise.all([
        this.opts.call('chat.history', { sessionKey: key, limit: FIRST_PAGE }),
        this.opts.call('approvals.list', { sessionKey: key }).catch(() => ({ approvals: [] })),
      ]);
      page = p;
      approvals = a.approvals || [];
    } catch (err) {
      if (gen !== this.gen) return;
      this.loading = false;
      this.failed = err;
      this.render();
      throw err;
    }
    if (gen !== this.gen) return;
    this.sessionId = page.sessionId;
    this.msgs = page.messages.slice();
    this.compactions = (page.compactions || []).slice();
    this.hasMore = !!page.hasMore;
    for (const a of approvals) this.approvals.set(a.approvalId, a);
    this.reindex();
    this.loading = false;
    this.loaded = true;
    const queued = this.queue;
    this.queue = [];
    for (const [p, env] of this.opts.buffered(key)) this.applyChat(p, env, true);
    for (const [p, env] of queued) this.applyChat(p, env, true);
    this.render({ toBottom: true });
    try {
      performance.mark('clawgate:history-rendered');
    } catch {
      // No performance timeline: nothing to mark.
    }
    this.opts.onLoaded?.(this);
    this.fillViewport();
  }

  /** Loads the next older page when the first ones do not fill the view. */
  fillViewport() {
    if (this.hasMore && !this.loadingOlder && this.el.scrollHeight <= this.el.clientHeight + 40) {
      this.loadOlder();
    }
  }

  reindex() {
    this.byId = new Map(this.msgs.map((m) => [m.id, m]));
    this.results = new Map();
    this.calls = new Map();
    this.assistantCount = new Map();
    for (const m of this.msgs) {
      if (m.role === 'tool' && m.toolCallId) this.results.set(m.toolCallId, m);
      if (m.toolCalls) for (const c of m.toolCalls) this.calls.set(c.id, c);
      if (m.role === 'assistant' && m.runId) this.assistantCount.set(m.runId, (this.assistantCount.get(m.runId) || 0) + 1);
      if (m.role === 'user' && m.idempotencyKey) this.sawKey(m.idempotencyKey);
    }
  }

  sawKey(key) {
    this.seenKeys.add(key);
    this.sent.delete(key);
  }

  onScroll() {
    if (this.el.scrollTop < 150 && this.hasMore && this.loaded && !this.loadingOlder) this.loadOlder();
  }

  /** Loads the page before the oldest message shown, keeping the view where it is. */
  async loadOlder() {
    if (!this.hasMore || this.loadingOlder || !this.loaded) return;
    const oldest = this.msgs[0];
    if (!oldest) return;
    const gen = this.gen;
    this.loadingOlder = true;
    this.render({ keepFromBottom: true });
    try {
      const page = await this.opts.call('chat.history', { sessionKey: this.key, limit: PAGE, beforeId: oldest.id });
      if (gen !== this.gen) return;
      const fresh = page.messages.filter((m) => !this.byId.has(m.id));
      this.msgs = [...fresh, ...this.msgs];
      this.mergeCompactions(page.compactions);
      this.hasMore = !!page.hasMore;
      this.reindex();
    } catch (err) {
      if (gen === this.gen) this.opts.toast(`Could not load older messages: ${err.message}`);
    } finally {
      if (gen === this.gen) {
        this.loadingOlder = false;
        this.render({ keepFromBottom: true });
      }
    }
    if (gen === this.gen) this.fillViewport();
  }

  mergeCompactions(list) {
    const ids = new Set(this.compactions.map((c) => c.id));
    for (const c of list || []) if (!ids.has(c.id)) this.compactions.push(c);
    this.compactions.sort((a, b) => a.ts - b.ts);
  }

  /** Reloads the newest page and merges it in (after a run ends), without losing the older
   * pages already shown; a reset session (new sessionId) is opened afresh. */
  async reloadLatest() {
    if (!this.loaded || !this.key) return;
    const gen = this.gen;
    const done = new Set(this.finished);
    let page;
    try {
      page = await this.opts.call('chat.history', { sessionKey: this.key, limit: FIRST_PAGE });
    } catch (err) {
      if (gen === this.gen && err.code !== 'disconnected') this.opts.toast(`Could not reload the conversation: ${err.message}`);
      return;
    }
    if (gen !== this.gen) return;
    if (page.sessionId !== this.sessionId) {
      await this.open(this.key);
      return;
    }
    const msgs = page.messages;
    const pageIds = new Set(msgs.map((m) => m.id));
    const anchor = msgs.findIndex((m) => this.byId.has(m.id));
    if (anchor === -1) {
      // Nothing in common (more than a page was written since): start from this page.
      this.msgs = msgs.slice();
      this.compactions = (page.compactions || []).slice();
      this.hasMore = !!page.hasMore;
    } else {
      const at = this.msgs.findIndex((m) => m.id === msgs[anchor].id);
      const before = this.msgs.slice(0, at).filter((m) => !pageIds.has(m.id));
      const after = this.msgs.slice(at).filter((m) => !pageIds.has(m.id));
      this.msgs = [...before, ...msgs, ...after];
      this.mergeCompactions(page.compactions);
    }
    const newest = msgs.length ? msgs[msgs.length - 1].ts : 0;
    this.liveCompactions = this.liveCompactions.filter((c) => c.ts > newest);
    this.liveItems = this.liveItems.filter((i) => !(i.runId && done.has(i.runId)));
    for (const r of done) this.finished.delete(r);
    this.reindex();
    this.render();
  }

  scheduleReload() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.reloadLatest(), 30);
  }

  /** The messages of the outbox waiting for this session (not yet acknowledged). */
  setUnsent(items) {
    this.unsent = items.filter((i) => i.sessionKey === this.key);
    this.render();
  }

  /** A message acknowledged (`status` of chat.send) whose user message is not shown yet. */
  markSent(item, status) {
    if (item.sessionKey !== this.key || this.seenKeys.has(item.idempotencyKey)) return;
    if (status === 'done') {
      this.scheduleReload();
      return;
    }
    this.sent.set(item.idempotencyKey, { ...item, status });
    this.render();
  }

  addMessage(m) {
    if (!m || !m.id || this.byId.has(m.id)) return;
    this.msgs.push(m);
    this.reindex();
  }

  pushLive(item) {
    if (!this.liveItems.some((i) => i.key === item.key)) this.liveItems.push(item);
  }

  endStreaming(runId) {
    for (const item of this.liveItems) {
      if (item.kind === 'turn' && item.runId === runId && item.streaming) {
        item.streaming = false;
        const node = this.cache.get(item.key);
        if (node) {
          node.removeAttribute('data-streaming');
          const typing = node.querySelector('.typing');
          if (typing) typing.textContent = '';
        }
      }
    }
  }

  /** Applies one `chat` payload of this session (others are ignored). */
  applyChat(p, env, quiet = false) {
    if (!p || p.sessionKey !== this.key) return;
    if (this.loading) {
      this.queue.push([p, env]);
      return;
    }
    if (p.runId && p.runSeq !== undefined && p.runSeq !== null) {
      if (p.state === 'resumed') this.attempts.set(p.runId, p.attempt ?? 1);
      const id = `${p.runId}:${this.attempts.get(p.runId) ?? 0}:${p.runSeq}`;
      if (this.seen.has(id)) return;
      this.seen.add(id);
    }
    const attempt = this.attempts.get(p.runId) ?? 0;
    switch (p.state) {
      case 'started':
        if (p.userMessage) this.addMessage(p.userMessage);
        break;
      case 'resumed':
        this.liveItems = this.liveItems.filter((i) => !(i.kind === 'turn' && i.runId === p.runId && i.turn >= (p.turn ?? 0)));
        break;
      case 'delta': {
        const key = `turn:${p.runId}:${attempt}:${p.turn}`;
        let item = this.liveItems.find((i) => i.key === key);
        if (!item) {
          this.endStreaming(p.runId);
          item = { kind: 'turn', key, runId: p.runId, turn: p.turn, text: '', streaming: true, ts: env?.ts ?? Date.now() };
          this.liveItems.push(item);
          item.text += p.text || '';
          break;
        }
        item.text += p.text || '';
        if (!quiet) this.repaint(item);
        return;
      }
      case 'approval_requested': {
        this.endStreaming(p.runId);
        const known = this.approvals.get(p.approvalId);
        if (!known || known.state === 'pending') {
          this.approvals.set(p.approvalId, {
            ...(known || {}),
            approvalId: p.approvalId,
            state: 'pending',
            runId: p.runId,
            sessionKey: p.sessionKey,
            toolCallId: p.toolCallId,
            name: p.name,
            input: p.input,
            expiresAt: p.expiresAt,
          });
        }
        this.pushLive({ kind: 'approval', key: `live-approval:${p.approvalId}`, runId: p.runId, approvalId: p.approvalId });
        break;
      }
      case 'approval_resolved': {
        const a = this.approvals.get(p.approvalId);
        if (a) {
          a.state = p.decision === 'allow' ? 'allowed' : 'denied';
          a.decision = p.decision;
          a.by = p.by;
        }
        break;
      }
      case 'steered':
        if (p.userMessage) {
          if (p.userMessage.idempotencyKey) this.sawKey(p.userMessage.idempotencyKey);
          this.pushLive({ kind: 'msg', key: `m:${p.userMessage.id}`, runId: p.runId, msg: p.userMessage });
        }
        break;
      case 'tool_start':
        this.endStreaming(p.runId);
        this.tools.set(p.toolCallId, { id: p.toolCallId, name: p.name, input: p.input, state: 'running', runId: p.runId });
        this.pushLive({ kind: 'tool', key: `live-tool:${p.toolCallId}`, runId: p.runId, toolCallId: p.toolCallId });
        break;
      case 'tool_end': {
        const t = this.tools.get(p.toolCallId) || { id: p.toolCallId, name: p.name, runId: p.runId };
        t.output = p.output ?? '';
        t.isError = !!p.isError;
        t.state = p.isError ? 'error' : 'done';
        this.tools.set(p.toolCallId, t);
        this.pushLive({ kind: 'tool', key: `live-tool:${p.toolCallId}`, runId: p.runId, toolCallId: p.toolCallId });
        break;
      }
      case 'final':
      case 'aborted':
      case 'error':
        this.endStreaming(p.runId);
        if (p.state === 'error' && p.error) this.notices.push({ runId: p.runId, error: p.error, ts: env?.ts ?? Date.now() });
        if (p.state === 'aborted') this.notices.push({ runId: p.runId, aborted: true, ts: env?.ts ?? Date.now() });
        this.finished.add(p.runId);
        // Approvals of the run still pending are over.
        for (const a of this.approvals.values()) {
          if (a.runId === p.runId && a.state === 'pending') {
            a.state = 'denied';
            a.by = a.by || p.state;
          }
        }
        if (!quiet) this.scheduleReload();
        else this.finishedWhileQuiet = true;
        break;
      case 'injected':
        if (p.message) this.addMessage(p.message);
        break;
      case 'compacted':
        this.liveCompactions.push({
          key: `live-compaction:${p.runId || ''}:${p.runSeq ?? ''}:${env?.seq ?? Date.now()}`,
          ts: env?.ts ?? Date.now(),
          tokensBefore: p.tokensBefore,
          tokensAfter: p.tokensAfter,
          reason: p.reason,
        });
        break;
      default:
        break;
    }
    if (!quiet) this.render();
    else if (this.finishedWhileQuiet) {
      this.finishedWhileQuiet = false;
      this.scheduleReload();
    }
  }

  /** An approval from `approvals.changed` or an `approvals.resolve` answer. */
  applyApproval(a) {
    if (!a || a.sessionKey !== this.key) return;
    const known = this.approvals.get(a.approvalId);
    if (known && known.state !== 'pending' && a.state === 'pending') return;
    this.approvals.set(a.approvalId, { ...(known || {}), ...a });
    if (!this.calls?.has(a.toolCallId)) this.pushLive({ kind: 'approval', key: `live-approval:${a.approvalId}`, runId: a.runId, approvalId: a.approvalId });
    this.render();
  }

  /** Builds the elements whose key starts with `prefix` again (e.g. to re-enable buttons). */
  rebuild(prefix) {
    for (const k of [...this.cache.keys()]) if (k.startsWith(prefix)) this.cache.delete(k);
    this.keys = [];
    this.render();
  }

  /** Re-renders one streaming message's text at the next frame. */
  repaint(item) {
    this.dirty.add(item);
    if (this.frame) return;
    const flush = () => {
      this.frame = 0;
      const stick = this.atBottom();
      for (const it of this.dirty) {
        const node = this.cache.get(it.key);
        const text = node?.querySelector('[data-testid="message-text"]');
        if (text) renderInto(text, it.text);
      }
      this.dirty.clear();
      if (stick) this.el.scrollTop = this.el.scrollHeight;
    };
    this.frame = typeof requestAnimationFrame === 'function' && !document.hidden ? requestAnimationFrame(flush) : setTimeout(flush, 50);
  }

  atBottom() {
    const el = this.el;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }

  /** Renders the model into the container, moving only what changed. */
  render({ toBottom = false, keepFromBottom = false } = {}) {
    const el = this.el;
    // Reading the geometry forces a layout: not needed while the view holds almost nothing.
    const measured = this.keys.length > 2;
    const fromBottom = measured ? el.scrollHeight - el.scrollTop : 0;
    const stick = measured ? this.atBottom() : true;
    const items = this.items();
    const used = new Set();
    const nodes = [];
    for (const it of items) {
      let node = this.cache.get(it.key);
      if (!node) {
        node = it.build();
        this.cache.set(it.key, node);
      }
      used.add(it.key);
      nodes.push(node);
    }
    for (const k of [...this.cache.keys()]) if (!used.has(k)) this.cache.delete(k);
    const keys = items.map((i) => i.key);
    const same = keys.length === this.keys.length && keys.every((k, i) => k === this.keys[i]);
    if (!same) {
      const prefix = this.keys.length <= keys.length && this.keys.every((k, i) => k === keys[i]) && el.childNodes.length === this.keys.length;
      if (prefix) for (const n of nodes.slice(this.keys.length)) el.appendChild(n);
      else el.replaceChildren(...nodes);
      this.keys = keys;
    }
    el.setAttribute('data-has-more', String(this.hasMore));
    setData(el, 'loading', this.loading ? 'true' : null);
    setData(el, 'session-key', this.key);
    if (keepFromBottom && measured) el.scrollTop = el.scrollHeight - fromBottom;
    else if (toBottom || stick) el.scrollTop = el.scrollHeight;
  }

  /** The items to show, in order, each {key, build()}. */
  items() {
    const out = [];
    const run = this.key ? this.opts.runOf(this.key) : { active: null };
    out.push(this.olderItem());
    if (this.failed && !this.loaded) {
      out.push({ key: `failed:${this.failed.message}`, build: () => h('p', { class: 'notice error', text: `Could not load this session: ${this.failed.message}` }) });
      return out;
    }
    if (!this.loaded) return out;
    const approvalsByCall = new Map();
    for (const a of this.approvals.values()) approvalsByCall.set(a.toolCallId, a);
    const comps = [
      ...this.compactions.map((c) => ({ ...c, key: `compaction:${c.id}` })),
      ...this.liveCompactions,
    ].sort((a, b) => a.ts - b.ts);
    let ci = 0;
    const lastOfRun = new Map();
    this.msgs.forEach((m, i) => m.runId && lastOfRun.set(m.runId, i));
    const noticesAfter = new Map();
    const trailing = [];
    for (const n of this.notices) {
      const at = lastOfRun.get(n.runId);
      if (at === undefined) trailing.push(n);
      else noticesAfter.set(at, [...(noticesAfter.get(at) || []), n]);
    }
    const approvalFor = (callId) => {
      const a = approvalsByCall.get(callId);
      if (a) out.push(this.approvalItem(a));
    };
    this.msgs.forEach((m, i) => {
      while (ci < comps.length && comps[ci].ts < m.ts) out.push(this.compactionItem(comps[ci++]));
      if (m.role === 'tool') {
        const call = this.calls.get(m.toolCallId);
        approvalFor(m.toolCallId);
        out.push(this.toolMessageItem(m, call));
      } else {
        out.push(this.messageItem(m));
        for (const c of m.toolCalls || []) {
          if (this.results.has(c.id)) continue;
          approvalFor(c.id);
          const live = this.tools.get(c.id);
          const state = live?.state || (run.active && run.active === m.runId ? 'running' : 'error');
          out.push(this.toolItem({ id: c.id, name: c.name, input: c.input, output: live?.output ?? (state === 'error' ? 'no result: the run ended before this call returned' : undefined), state }, null));
        }
      }
      for (const n of noticesAfter.get(i) || []) out.push(this.noticeItem(n));
    });
    while (ci < comps.length) out.push(this.compactionItem(comps[ci++]));
    for (const item of this.liveItems) {
      if (item.kind === 'turn') {
        if (item.turn < (this.assistantCount.get(item.runId) || 0)) continue;
        if (!item.text && !item.streaming) continue;
        out.push(this.turnItem(item));
      } else if (item.kind === 'msg') {
        if (this.byId.has(item.msg.id)) continue;
        out.push(this.messageItem(item.msg));
      } else if (item.kind === 'approval') {
        const a = this.approvals.get(item.approvalId);
        if (!a || this.calls.has(a.toolCallId)) continue;
        out.push(this.approvalItem(a));
      } else if (item.kind === 'tool') {
        const t = this.tools.get(item.toolCallId);
        if (!t || this.calls.has(t.id)) continue;
        out.push(this.toolItem(t, null));
      }
    }
    for (const n of trailing) out.push(this.noticeItem(n));
    if (!this.msgs.length && !this.liveItems.length && !this.unsent.length && !this.sent.size) {
      out.push({ key: 'empty', build: () => h('p', { class: 'empty', text: 'No messages yet. Type below; Enter sends.' }) });
    }
    for (const u of this.unsent) if (!this.seenKeys.has(u.idempotencyKey)) out.push(this.pendingItem(u, 'unsent'));
    for (const s of this.sent.values()) if (!this.seenKeys.has(s.idempotencyKey)) out.push(this.pendingItem(s, s.status || 'sent'));
    return out;
  }

  olderItem() {
    const state = this.loading ? 'loading' : this.loadingOlder ? 'loading-older' : this.hasMore ? 'more' : this.loaded ? 'start' : 'none';
    return {
      key: `older:${state}`,
      build: () => {
        if (state === 'loading' || state === 'loading-older') return h('div', { class: 'older', testid: 'history-loading', text: 'Loading…' });
        if (state === 'more') {
          return h('div', { class: 'older' }, h('button', { type: 'button', testid: 'load-older', on: { click: () => this.loadOlder() } }, 'Load older messages'));
        }
        if (state === 'start') return h('div', { class: 'older', text: this.msgs.length ? 'Start of the conversation' : '' });
        return h('div', { class: 'older' });
      },
    };
  }

  messageItem(m) {
    return {
      key: `m:${m.id}`,
      build: () => {
        const text = h('div', { class: m.role === 'user' ? 'text plain' : 'text md', testid: 'message-text' });
        if (m.role === 'user') text.textContent = m.content;
        else renderInto(text, m.content);
        const who = m.role === 'user' ? 'you' : m.role === 'assistant' ? 'assistant' : m.role;
        return h(
          'article',
          { class: `msg msg-${m.role}`, testid: 'message', data: { role: m.role, id: m.id, 'run-id': m.runId } },
          h(
            'header',
            { class: 'meta' },
            h('span', { class: 'who', text: who }),
            m.label ? h('span', { class: 'badge', text: m.label }) : null,
            h('time', { datetime: new Date(m.ts).toISOString(), title: dateTime(m.ts), text: clock(m.ts) }),
            m.model ? h('span', { class: 'model', text: m.model }) : null,
          ),
          m.content || m.role !== 'assistant' ? text : null,
          m.aborted ? h('p', { class: 'msg-note', text: 'aborted' }) : null,
          m.error ? h('p', { class: 'msg-error', testid: 'message-error', text: `error (${m.error.kind}): ${m.error.message}` }) : null,
        );
      },
    };
  }

  turnItem(item) {
    return {
      key: item.key,
      build: () => {
        const text = h('div', { class: 'text md', testid: 'message-text' });
        renderInto(text, item.text);
        return h(
          'article',
          { class: 'msg msg-assistant', testid: 'message', data: { role: 'assistant', streaming: item.streaming ? 'true' : null, 'run-id': item.runId } },
          h('header', { class: 'meta' }, h('span', { class: 'who', text: 'assistant' }), h('span', { class: 'typing', text: item.streaming ? 'writing…' : '' })),
          text,
        );
      },
    };
  }

  toolMessageItem(m, call) {
    const item = this.toolItem({ id: m.toolCallId, name: call?.name || this.tools.get(m.toolCallId)?.name || 'tool', input: call?.input, output: m.content, state: m.isError ? 'error' : 'done' }, m);
    return item;
  }

  toolItem(t, m) {
    const hasOutput = t.output !== undefined && t.output !== null;
    return {
      key: `tool:${t.id}:${t.state}:${hasOutput ? 1 : 0}:${m ? m.id : ''}`,
      build: () => {
        const details = h(
          'details',
          { open: this.openTools.has(t.id) },
          h(
            'summary',
            null,
            h('span', { class: 'tool-name', text: t.name || 'tool' }),
            h('span', { class: `tool-state state-${t.state}`, text: t.state === 'running' ? 'running…' : t.state }),
            h('span', { class: 'tool-brief', text: shortInput(t.input) }),
          ),
          h(
            'div',
            { class: 'tool-body' },
            h('div', { class: 'label', text: 'Input' }),
            h('pre', { testid: 'tool-input', class: 'io', text: pretty(t.input) }),
            h('div', { class: 'label', text: 'Output' }),
            h('pre', { testid: 'tool-output', class: 'io', data: { empty: hasOutput ? null : 'true' }, text: hasOutput ? String(t.output) : '' }),
          ),
        );
        details.addEventListener('toggle', () => {
          if (details.open) this.openTools.add(t.id);
          else this.openTools.delete(t.id);
        });
        const card = h('div', { class: `tool tool-${t.state}`, testid: 'tool-card', data: { 'tool-call-id': t.id, name: t.name || '', state: t.state } }, details);
        if (m) return h('article', { class: 'msg msg-tool', testid: 'message', data: { role: 'tool', id: m.id, 'run-id': m.runId } }, card);
        return h('div', { class: 'msg msg-tool' }, card);
      },
    };
  }

  approvalItem(a) {
    return {
      key: `approval:${a.approvalId}:${a.state}`,
      build: () => {
        const pending = a.state === 'pending';
        const resolve = (decision, remember) => (ev) => {
          for (const b of ev.currentTarget.parentElement.querySelectorAll('button')) b.disabled = true;
          this.opts.resolveApproval(a, decision, remember);
        };
        const by = a.by ? ` by ${a.by}` : '';
        return h(
          'div',
          { class: `approval approval-${a.state}`, testid: 'approval', role: 'group', 'aria-label': `Approval for ${a.name}`, data: { 'approval-id': a.approvalId, state: a.state, 'tool-call-id': a.toolCallId } },
          h(
            'div',
            { class: 'approval-head' },
            h('span', { class: 'approval-title', text: pending ? 'Approval needed: ' : a.state === 'allowed' ? 'Allowed: ' : 'Denied: ' }),
            h('code', { text: a.name }),
            pending ? h('span', { class: 'approval-timer', testid: 'approval-timer', data: { 'expires-at': a.expiresAt }, text: `${duration(a.expiresAt - this.opts.serverNow())} left` }) : null,
          ),
          h('pre', { class: 'io', text: pretty(a.input) }),
          pending
            ? h(
                'div',
                { class: 'approval-actions' },
                h('button', { type: 'button', class: 'primary', testid: 'approval-allow', on: { click: resolve('allow') } }, 'Allow'),
                h('button', { type: 'button', testid: 'approval-allow-session', on: { click: resolve('allow', 'session') }, title: `Allow ${a.name} for the rest of this session` }, 'Allow for this session'),
                h('button', { type: 'button', class: 'danger', testid: 'approval-deny', on: { click: resolve('deny') } }, 'Deny'),
              )
            : h('p', { class: 'approval-outcome', text: `${a.state}${by}${a.reason ? `: ${a.reason}` : ''}` }),
        );
      },
    };
  }

  compactionItem(c) {
    return {
      key: c.key,
      build: () => {
        const tokens = c.tokensBefore !== undefined && c.tokensAfter !== undefined ? `: ${c.tokensBefore} → ${c.tokensAfter} tokens` : '';
        const label = `Context compacted (${c.reason || 'auto'})${tokens}`;
        return h(
          'div',
          { class: 'compaction', testid: 'compaction', role: 'separator', data: { reason: c.reason, id: c.id } },
          c.summary ? h('details', null, h('summary', { text: label }), h('p', { class: 'summary', text: c.summary })) : h('span', { text: label }),
        );
      },
    };
  }

  noticeItem(n) {
    if (n.aborted) {
      return { key: `aborted:${n.runId}`, build: () => h('p', { class: 'notice', testid: 'run-aborted', text: 'Run aborted.' }) };
    }
    return {
      key: `error:${n.runId}`,
      build: () => h('p', { class: 'notice error', testid: 'run-error', data: { kind: n.error.kind }, text: `The run failed (${n.error.kind}): ${n.error.message}` }),
    };
  }

  pendingItem(u, state) {
    return {
      key: `pending:${u.idempotencyKey}:${state}`,
      build: () =>
        h(
          'article',
          { class: 'msg msg-user pending', testid: 'pending-message', data: { state, 'idempotency-key': u.idempotencyKey } },
          h('header', { class: 'meta' }, h('span', { class: 'who', text: 'you' }), h('span', { class: 'badge', text: state === 'unsent' ? 'waiting for the connection' : state })),
          h('div', { class: 'text plain', text: u.message }),
        ),
    };
  }
}

export { TERMINAL };
