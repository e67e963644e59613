// The sessions sidebar: the list (most recently updated first), search, the agent of each
// session, a run dot and pending-approval count, kept current from `sessions.changed`.

import { h, clock, dateTime } from './dom.js';

export class Sessions {
  /** `els`: {list, search, total}. `opts`: {call, onSelect(key), toast}. */
  constructor(els, opts) {
    this.els = els;
    this.opts = opts;
    this.sessions = new Map();
    // Every session seen, whatever the search: the header still knows the selected one.
    this.known = new Map();
    this.total = 0;
    this.selected = null;
    this.runs = () => new Map();
    this.approvals = () => new Map();
    this.searchTimer = null;
    this.gen = 0;
    els.search.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.refresh(), 150);
    });
    els.search.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowDown') {
        ev.preventDefault();
        els.list.querySelector('[data-testid="session-item"] button')?.focus();
      }
    });
    els.list.addEventListener('keydown', (ev) => {
      const items = [...els.list.querySelectorAll('[data-testid="session-item"] button')];
      const at = items.indexOf(document.activeElement);
      if (at === -1) return;
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        items[Math.max(0, Math.min(items.length - 1, at + (ev.key === 'ArrowDown' ? 1 : -1)))].focus();
      }
    });
  }

  get search() {
    return this.els.search.value.trim();
  }

  matches(s) {
    const q = this.search.toLowerCase();
    return !q || s.key.toLowerCase().includes(q) || (s.label || '').toLowerCase().includes(q);
  }

  /** Reloads the list (with the current search). */
  async refresh() {
    const gen = ++this.gen;
    try {
      const params = { limit: 500 };
      if (this.search) params.search = this.search;
      const res = await this.opts.call('sessions.list', params);
      if (gen !== this.gen) return;
      this.sessions = new Map(res.sessions.map((s) => [s.key, s]));
      for (const s of res.sessions) this.known.set(s.key, s);
      this.total = res.total;
      this.render();
    } catch (err) {
      if (gen === this.gen && err.code !== 'disconnected') this.opts.toast(`Could not list sessions: ${err.message}`);
    }
  }

  /** The session `key`, when listed or seen before. */
  get(key) {
    return this.sessions.get(key) || this.known.get(key) || null;
  }

  /** Applies a `sessions.changed` payload. */
  changed(p) {
    if (p.reason === 'deleted') {
      this.known.delete(p.sessionKey);
      if (this.sessions.delete(p.sessionKey)) this.total = Math.max(0, this.total - 1);
    } else if (p.session) {
      this.known.set(p.session.key, p.session);
      const had = this.sessions.has(p.session.key);
      if (this.matches(p.session)) {
        this.sessions.set(p.session.key, p.session);
        if (!had) this.total += 1;
      }
    }
    this.render();
  }

  select(key) {
    this.selected = key;
    this.render();
  }

  /** Renders the list; `runs()` and `approvals()` give the badges. */
  render() {
    const runs = this.runs();
    const approvals = this.approvals();
    const list = [...this.sessions.values()].sort((a, b) => b.updatedAt - a.updatedAt || a.key.localeCompare(b.key));
    const focused = document.activeElement?.closest?.('[data-testid="session-item"]')?.getAttribute('data-key');
    const nodes = list.map((s) => {
      const run = runs.get(s.key);
      const waiting = approvals.get(s.key) || 0;
      const active = s.key === this.selected;
      const runState = run?.state || 'idle';
      const button = h(
        'button',
        {
          type: 'button',
          class: 'session-button',
          'aria-current': active ? 'true' : null,
          title: `${s.key} · agent ${s.agentId} · ${s.messageCount} messages · updated ${dateTime(s.updatedAt)}`,
        },
        h(
          'span',
          { class: 'session-line' },
          h('span', { class: 'session-title', text: s.label || s.key }),
          runState !== 'idle' ? h('span', { class: `dot dot-${runState}`, title: runState.replace('_', ' '), 'aria-label': runState.replace('_', ' ') }) : null,
          waiting ? h('span', { class: 'badge warn', title: 'approvals waiting', text: String(waiting) }) : null,
          h('time', { class: 'session-time', text: clock(s.updatedAt) }),
        ),
        h(
          'span',
          { class: 'session-line sub' },
          h('span', { class: 'badge agent', text: s.agentId }),
          s.label ? h('span', { class: 'session-key', text: s.key }) : null,
          h('span', { class: 'session-preview', text: s.lastMessagePreview || '' }),
        ),
      );
      const li = h(
        'li',
        { testid: 'session-item', class: active ? 'session active' : 'session', data: { key: s.key, agent: s.agentId, active: active ? 'true' : null, 'run-state': runState } },
        button,
      );
      li.addEventListener('click', () => this.opts.onSelect(s.key));
      return li;
    });
    this.els.list.replaceChildren(...nodes);
    if (!nodes.length) this.els.list.appendChild(h('li', { class: 'empty', text: this.search ? 'No session matches.' : 'No sessions.' }));
    this.els.total.textContent = this.total > list.length ? `${list.length} of ${this.total}` : `${this.total} session${this.total === 1 ? '' : 's'}`;
    if (focused) this.els.list.querySelector(`[data-key="${CSS.escape(focused)}"] button`)?.focus();
  }
}
