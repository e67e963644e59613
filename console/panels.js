// The side panels: live events, the gateway's status, and the configuration (TOML view and a
// JSON merge-patch editor that shows the conflict when its baseHash went stale).

import { h, show, setData, clock, dateTime, pretty, duration } from './dom.js';
import { toToml } from './toml.js';

const MAX_EVENTS = 400;

/** The live events panel: the newest envelopes, newest first. */
export class EventsPanel {
  constructor(els) {
    this.els = els;
    this.events = [];
    this.visible = false;
    this.paused = false;
    els.filter.addEventListener('input', () => this.renderAll());
    els.clear.addEventListener('click', () => {
      this.events = [];
      this.renderAll();
    });
    els.pause.addEventListener('click', () => {
      this.paused = !this.paused;
      els.pause.setAttribute('aria-pressed', String(this.paused));
      els.pause.textContent = this.paused ? 'Resume' : 'Pause';
    });
  }

  matches(env) {
    const q = this.els.filter.value.trim().toLowerCase();
    return !q || env.event.toLowerCase().includes(q) || (env.sessionKey || '').toLowerCase().includes(q) || (env.payload?.state || '').includes(q);
  }

  add(env) {
    if (this.paused) return;
    this.events.push(env);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    if (!this.visible || !this.matches(env)) return;
    const list = this.els.list;
    list.insertBefore(this.node(env), list.firstChild);
    while (list.childNodes.length > MAX_EVENTS) list.removeChild(list.lastChild);
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible) this.renderAll();
    else this.els.list.replaceChildren();
  }

  renderAll() {
    if (!this.visible) return;
    const nodes = [];
    for (let i = this.events.length - 1; i >= 0; i -= 1) if (this.matches(this.events[i])) nodes.push(this.node(this.events[i]));
    this.els.list.replaceChildren(...nodes);
  }

  node(env) {
    const p = env.payload || {};
    const what = env.event === 'chat' ? p.state : env.event === 'gap' ? p.reason : env.event === 'sessions.changed' ? p.reason : '';
    const body = h('pre', { class: 'io' });
    const details = h(
      'details',
      null,
      h(
        'summary',
        null,
        h('span', { class: 'ev-seq', text: `#${env.seq}` }),
        h('span', { class: 'ev-name', text: env.event }),
        what ? h('span', { class: 'badge', text: what }) : null,
        env.sessionKey ? h('span', { class: 'ev-session', text: env.sessionKey }) : null,
        h('time', { class: 'ev-time', title: dateTime(env.ts), text: clock(env.ts) }),
      ),
      body,
    );
    details.addEventListener('toggle', () => {
      if (details.open && !body.textContent) body.textContent = pretty(env.payload);
    });
    return h('li', { testid: 'event', class: 'event', data: { event: env.event, seq: env.seq, state: p.state } }, details);
  }
}

/** The status panel: health, version, agents (provider, model), plugins, MCP servers and
 * the keys that wait for a restart. */
export class StatusPanel {
  constructor(els, opts) {
    this.els = els;
    this.opts = opts;
    this.visible = false;
    this.data = null;
    this.timer = null;
    els.refresh.addEventListener('click', () => this.load());
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible) this.load();
  }

  /** Reloads soon (coalescing bursts of events). */
  stale() {
    if (!this.visible) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 200);
  }

  /** A `health` event: updates the health part without a round trip. */
  health(health) {
    if (!this.data) return;
    this.data.health = health;
    this.render();
  }

  async load() {
    const call = this.opts.call;
    const soft = (p) => p.catch((err) => ({ error: err }));
    const [status, health, agents, plugins, mcp] = await Promise.all([
      soft(call('gateway.status')),
      soft(call('gateway.health')),
      soft(call('agents.list')),
      soft(call('plugins.list')),
      soft(call('mcp.list')),
    ]);
    this.data = { status, health, agents, plugins, mcp };
    this.render();
  }

  render() {
    if (!this.visible || !this.data) return;
    const { status, health, agents, plugins, mcp } = this.data;
    const failed = (r) => (r?.error ? h('p', { class: 'error', text: r.error.message }) : null);
    const kv = (k, v, testid) => [h('dt', { text: k }), h('dd', { testid, text: v === undefined || v === null ? '—' : String(v) })];
    const sections = [];
    sections.push(
      h('h3', { text: 'Gateway' }),
      failed(health) || failed(status),
      h(
        'dl',
        { class: 'kv' },
        kv('health', health?.error ? 'unreachable' : health?.ok ? 'ok' : 'not ok', 'status-health'),
        kv('version', status?.version ?? health?.version, 'status-version'),
        kv('uptime', health?.uptimeMs !== undefined ? duration(health.uptimeMs) : undefined),
        kv('connections', health?.connections),
        kv('sessions', health?.sessions),
        kv('active runs', health?.activeRuns),
        kv('listening', status?.bind !== undefined ? `${status.bind}:${status.port}` : undefined),
        kv('data directory', status?.dataDir),
        kv('config file', status?.configPath),
      ),
    );
    sections.push(h('h3', { text: 'Agents' }), failed(agents));
    const agentRows = (agents?.agents || []).map((a) =>
      h(
        'tr',
        { testid: 'status-agent', data: { agent: a.id, provider: a.provider, model: a.model, default: a.default ? 'true' : null } },
        h('td', null, a.id, a.default ? h('span', { class: 'badge', text: 'default' }) : null),
        h('td', { data: { field: 'provider' }, text: a.provider }),
        h('td', { data: { field: 'model' }, text: a.model }),
        h('td', { class: 'dim', text: (a.tools || []).length ? `${a.tools.length} tools` : 'no tools' }),
      ),
    );
    sections.push(
      h(
        'table',
        { class: 'grid' },
        h('thead', null, h('tr', null, h('th', { text: 'agent' }), h('th', { text: 'provider' }), h('th', { text: 'model' }), h('th', { text: 'tools' }))),
        h('tbody', null, agentRows),
      ),
    );
    sections.push(h('h3', { text: 'Plugins' }), failed(plugins));
    const pluginList = plugins?.plugins || [];
    sections.push(
      h(
        'ul',
        { class: 'plain', testid: 'status-plugins' },
        pluginList.length
          ? pluginList.map((p) =>
              h(
                'li',
                { testid: 'status-plugin', data: { plugin: p.name, state: p.state } },
                h('strong', { text: p.name }),
                ' ',
                h('span', { class: `badge state-${p.state}`, text: p.state }),
                ` ${p.kind || ''} · ${(p.methods || []).length} methods · ${(p.tools || []).length} tools`,
                p.error ? h('div', { class: 'error', text: p.error }) : null,
              ),
            )
          : h('li', { class: 'dim', text: 'none configured' }),
      ),
    );
    sections.push(h('h3', { text: 'MCP servers' }), failed(mcp));
    const servers = mcp?.servers || [];
    sections.push(
      h(
        'ul',
        { class: 'plain', testid: 'status-mcp' },
        servers.length
          ? servers.map((s) =>
              h(
                'li',
                { testid: 'status-mcp-server', data: { server: s.name, state: s.state } },
                h('strong', { text: s.name }),
                ' ',
                h('span', { class: `badge state-${s.state}`, text: s.state }),
                ` ${s.transport} · ${(s.tools || []).length} tools`,
                s.error ? h('div', { class: 'error', text: s.error }) : null,
              ),
            )
          : h('li', { class: 'dim', text: 'none configured' }),
      ),
    );
    const pending = status?.pendingRestart || [];
    sections.push(
      h('h3', { text: 'Waiting for a restart' }),
      h(
        'ul',
        { class: 'plain', testid: 'status-pending', data: { count: pending.length } },
        pending.length ? pending.map((k) => h('li', null, h('code', { text: k }))) : h('li', { class: 'dim', text: 'nothing: every change is applied' }),
      ),
    );
    this.els.body.replaceChildren(...sections.filter(Boolean));
  }
}

/** The configuration panel. */
export class ConfigPanel {
  constructor(els, opts) {
    this.els = els;
    this.opts = opts;
    this.visible = false;
    this.hash = null;
    this.loadedOnce = false;
    this.conflictPatch = null;
    els.reload.addEventListener('click', () => this.load());
    els.apply.addEventListener('click', () => this.apply());
    els.rebase.addEventListener('click', () => this.rebase());
    els.cancelConflict.addEventListener('click', () => {
      show(els.conflict, false);
      this.conflictPatch = null;
    });
    els.patch.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        this.apply();
      }
    });
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible && !this.loadedOnce) this.load();
  }

  /** A `config.changed` event: the view is kept (its hash is the patch's base) but marked. */
  changed(p) {
    if (this.hash && p.hash !== this.hash) show(this.els.stale, true);
  }

  async load() {
    try {
      const res = await this.opts.call('config.get');
      this.loadedOnce = true;
      this.hash = res.hash;
      this.els.toml.textContent = toToml(res.config);
      setData(this.els.toml, 'hash', res.hash);
      const overridden = res.overriddenPaths?.length ? ` · set by environment or flags: ${res.overriddenPaths.join(', ')}` : '';
      this.els.meta.textContent = `${res.path} · hash ${res.hash.slice(0, 12)}${overridden}`;
      show(this.els.stale, false);
      return res;
    } catch (err) {
      this.result('error', `Could not read the configuration: ${err.message}`);
      return null;
    }
  }

  result(state, text, details) {
    const el = this.els.result;
    setData(el, 'state', state);
    el.replaceChildren(...[h('p', { text }), details ? h('pre', { class: 'io', text: details }) : null].filter(Boolean));
  }

  parsePatch() {
    const text = this.els.patch.value.trim();
    if (!text) {
      this.result('error', 'Write a JSON merge patch first, e.g. {"agents": {"main": {"model": "echo"}}}.');
      return null;
    }
    try {
      const patch = JSON.parse(text);
      if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new Error('the patch must be a JSON object');
      return patch;
    } catch (err) {
      this.result('error', `The patch is not valid JSON: ${err.message}`);
      return null;
    }
  }

  async apply() {
    const patch = this.parsePatch();
    if (!patch) return;
    if (this.hash === null && !(await this.load())) return;
    await this.send(patch, this.hash);
  }

  async send(patch, baseHash) {
    this.els.apply.disabled = true;
    this.els.rebase.disabled = true;
    try {
      const res = await this.opts.call('config.patch', { patch, baseHash });
      show(this.els.conflict, false);
      this.conflictPatch = null;
      const paths = res.changedPaths?.length ? res.changedPaths.join(', ') : 'nothing changed';
      this.result('ok', res.reloadKind === 'restart' ? `Saved; takes effect at the next restart: ${paths}` : `Applied: ${paths}`);
      await this.load();
    } catch (err) {
      if (err.code === -32023) {
        await this.showConflict(patch);
      } else {
        const where = err.data?.path ? ` (at ${err.data.path})` : '';
        this.result('error', `Refused${where}: ${err.message}`);
      }
    } finally {
      this.els.apply.disabled = false;
      this.els.rebase.disabled = false;
    }
  }

  async showConflict(patch) {
    let current = null;
    try {
      current = await this.opts.call('config.get');
    } catch (err) {
      this.result('error', `The configuration changed, and reading it again failed: ${err.message}`);
      return;
    }
    this.conflictPatch = { patch, hash: current.hash };
    this.els.conflictCurrent.textContent = toToml(current.config);
    this.els.conflictPatch.textContent = pretty(patch);
    setData(this.els.conflict, 'hash', current.hash);
    show(this.els.conflict, true);
    this.result('conflict', 'Not applied: the configuration changed since it was loaded (stale baseHash).');
  }

  async rebase() {
    if (!this.conflictPatch) return;
    const { patch, hash } = this.conflictPatch;
    await this.send(patch, hash);
  }
}
