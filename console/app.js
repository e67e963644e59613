// The console's entry point: the connection (login, reconnect with backoff, resume from the
// last {epoch, seq}, resync after a gap), the outbox flush, the composer and the keyboard, and
// the wiring of the sidebar, the conversation and the panels.

import { h, byTestId, show, setData } from './dom.js';
import { RpcClient, backoffDelay } from './rpc.js';
import { TOKEN_KEY, helloParams, take, wsUrl } from './boot.js';
import { Outbox } from './outbox.js';
import { Conversation, TERMINAL, tickTimers } from './conversation.js';
import { Sessions } from './sessions.js';
import { EventsPanel, StatusPanel, ConfigPanel } from './panels.js';

const SESSION_KEY = 'clawgate.session';
const DRAFT_PREFIX = 'clawgate.draft.';
const THEME_KEY = 'clawgate.theme';
const MAX_MESSAGE_BYTES = 1024 * 1024;

const $ = (id) => document.getElementById(id);
const tid = (id) => byTestId(id);

function storageGet(store, key) {
  try {
    return store.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(store, key, value) {
  try {
    if (value === null || value === undefined || value === '') store.removeItem(key);
    else store.setItem(key, value);
  } catch {
    // Storage disabled: the value lives in memory only.
  }
}

const state = {
  token: storageGet(sessionStorage, TOKEN_KEY),
  session: storageGet(sessionStorage, SESSION_KEY) || 'main',
  everConnected: false,
  connected: false,
  attempt: 0,
  retryTimer: null,
  pos: null,
  clockOffset: null,
  runs: new Map(),
  buffers: new Map(),
  approvals: new Map(),
  agents: [],
  flushing: false,
  resyncing: false,
  resyncAgain: false,
  login: false,
};

// ---- UI elements ----

const ui = {
  app: $('app'),
  conn: tid('conn-status'),
  runState: tid('run-state'),
  composer: tid('composer'),
  send: tid('send'),
  abort: tid('abort'),
  sendMode: tid('send-mode'),
  outbox: tid('outbox'),
  messages: tid('messages'),
  title: $('conv-title'),
  agent: $('conv-agent'),
  agentPicker: tid('agent-picker'),
  renameForm: $('rename-form'),
  renameInput: tid('rename-input'),
  loginOverlay: $('login-overlay'),
  login: tid('login'),
  tokenInput: tid('token-input'),
  loginError: tid('login-error'),
  loginSubmit: tid('login-submit'),
  logout: $('logout'),
  confirmOverlay: $('confirm-overlay'),
  confirmText: $('confirm-text'),
  confirmOk: tid('confirm-ok'),
  confirmCancel: tid('confirm-cancel'),
  toasts: $('toasts'),
  panels: $('panels'),
  scrim: $('scrim'),
  sidebarToggle: $('sidebar-toggle'),
  theme: $('theme-toggle'),
};

/** Shows a short message (errors by default) for a few seconds. */
function toast(text, kind = 'error') {
  const el = h('div', { class: `toast toast-${kind}`, testid: 'toast', role: kind === 'error' ? 'alert' : 'status', data: { kind } }, text);
  ui.toasts.appendChild(el);
  while (ui.toasts.childNodes.length > 4) ui.toasts.removeChild(ui.toasts.firstChild);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

const CONN_TEXT = { connecting: 'connecting…', connected: 'connected', reconnecting: 'reconnecting…', login: 'login needed' };

function setConn(s, detail) {
  ui.conn.setAttribute('data-state', s);
  ui.conn.textContent = detail ? `${CONN_TEXT[s]} ${detail}` : CONN_TEXT[s];
  ui.conn.title = detail || CONN_TEXT[s];
  ui.app.setAttribute('data-conn', s);
}

// ---- the connection ----

const client = new RpcClient({ onOpen: () => onOpen(), onClose: (ev) => onClose(ev) });

/** Calls a method; rejects at once when not connected. */
function call(method, params) {
  return client.call(method, params);
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  if (state.login) return;
  setConn(state.everConnected ? 'reconnecting' : 'connecting');
  const url = wsUrl(state.token);
  // The first time, the socket boot.js opened while the page loaded (when it is still good).
  client.open(url, take(url));
}

function scheduleReconnect(delay, detail) {
  clearTimeout(state.retryTimer);
  const wait = delay ?? backoffDelay(state.attempt);
  state.attempt += 1;
  setConn(state.everConnected ? 'reconnecting' : 'connecting', detail || `(retry in ${Math.max(1, Math.round(wait / 1000))} s)`);
  state.retryTimer = setTimeout(connect, wait);
}

function reconnectNow() {
  if (state.retryTimer && !state.login) connect();
}

/** What the gateway says to a plain HTTP call with our token: ok, auth (401), forbidden
 * (403: origin or host refused), locked (429), or down. */
async function probe(token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch('/', {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 'console-probe', method: 'gateway.health' }),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch (err) {
    return { kind: 'down', message: String(err?.message || err) };
  }
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) return { kind: 'auth' };
  if (res.status === 403) return { kind: 'forbidden', message: body?.error?.message || 'refused (Origin or Host)' };
  if (res.status === 429) {
    const retryMs = body?.error?.retryAfterMs ?? (Number(res.headers.get('retry-after')) || 30) * 1000;
    return { kind: body?.error?.kind === 'rate_limited' ? 'locked' : 'busy', retryMs };
  }
  if (res.ok) return { kind: 'ok' };
  return { kind: 'down', message: `HTTP ${res.status}` };
}

async function onOpen() {
  state.clockOffset = null;
  const hello = client.takeEarly() ?? client.call('gateway.hello', helloParams());
  try {
    // Resuming needs no hello: the subscription goes out at once, beside it.
    let subscribed = state.pos ? client.subscribe('events.subscribe', { afterSeq: state.pos.seq, epoch: state.pos.epoch }, onEnvelope) : null;
    const fresh = !state.pos;
    const { policy, snapshot } = await hello;
    client.idleLimitMs = Math.max(20000, (policy?.tickIntervalMs || 30000) * 2.5);
    const now = { afterSeq: snapshot.seq, epoch: snapshot.epoch };
    if (!subscribed) {
      // The first time: from the snapshot, so nothing between it and the history is missed.
      state.pos = { epoch: snapshot.epoch, seq: snapshot.seq };
      subscribed = client.subscribe('events.subscribe', now, onEnvelope);
    }
    // The history and the lists load while the subscription is set up: what happens meanwhile
    // is replayed to them from the buffer (each payload applied once).
    // Otherwise the view stays and the replay fills it in; the newest page is read again in
    // case a run ended while its reload could not be made.
    const opening = fresh || !conv.loaded || conv.key !== state.session ? openSession(state.session) : conv.reloadLatest();
    const lists = Promise.all([loadAgents(), refreshRuns(), refreshApprovals(), sessions.refresh()]);
    try {
      await subscribed;
    } catch (err) {
      if (err.code !== -32602) throw err;
      // The position is not one this gateway can resume from: start from now, reload all.
      state.pos = { epoch: snapshot.epoch, seq: snapshot.seq };
      state.buffers.clear();
      await client.subscribe('events.subscribe', now, onEnvelope);
      resync();
    }
    state.connected = true;
    state.attempt = 0;
    state.everConnected = true;
    setConn('connected');
    show(ui.logout, !!state.token);
    flushOutbox();
    await Promise.all([opening, lists]);
    status.stale();
    if (config.visible && !config.loadedOnce) config.load();
  } catch (err) {
    hello.catch(() => {});
    if (err.code === 'disconnected') return;
    toast(`Could not start the session with the gateway: ${err.message}`);
    client.drop(4002, 'handshake failed');
  }
}

async function onClose({ code, opened }) {
  state.connected = false;
  if (state.login) return;
  if (code === 1008) {
    forgetToken();
    showLogin('The token is no longer accepted.');
    return;
  }
  if (opened) {
    scheduleReconnect(state.attempt === 0 ? 300 + Math.random() * 500 : undefined);
    return;
  }
  const p = await probe(state.token);
  if (state.login) return;
  switch (p.kind) {
    case 'auth':
      if (state.token) {
        forgetToken();
        showLogin('The token is not accepted.');
      } else {
        showLogin('');
      }
      return;
    case 'forbidden':
      toast(`The gateway refuses this page: ${p.message}`);
      scheduleReconnect(30000, '(refused: Origin or Host)');
      return;
    case 'locked':
      scheduleReconnect(p.retryMs, `(locked out for ${Math.round(p.retryMs / 1000)} s)`);
      return;
    default:
      scheduleReconnect();
  }
}

function forgetToken() {
  state.token = null;
  storageSet(sessionStorage, TOKEN_KEY, null);
  show(ui.logout, false);
}

function showLogin(error) {
  state.login = true;
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  client.drop(1000, 'login', false);
  state.connected = false;
  setConn('login');
  ui.loginError.textContent = error || '';
  show(ui.loginOverlay, true);
  ui.tokenInput.focus();
}

ui.login.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (!token) {
    ui.loginError.textContent = 'Enter a token.';
    return;
  }
  ui.loginSubmit.disabled = true;
  ui.loginError.textContent = '';
  try {
    const p = await probe(token);
    if (p.kind === 'ok') {
      state.token = token;
      storageSet(sessionStorage, TOKEN_KEY, token);
      ui.tokenInput.value = '';
      state.login = false;
      show(ui.loginOverlay, false);
      state.attempt = 0;
      connect();
      ui.composer.focus();
    } else if (p.kind === 'auth') {
      ui.loginError.textContent = 'That token is not accepted.';
    } else if (p.kind === 'locked') {
      ui.loginError.textContent = `Too many failed attempts from this address: try again in ${Math.ceil(p.retryMs / 1000)} s.`;
    } else if (p.kind === 'forbidden') {
      ui.loginError.textContent = `The gateway refuses this page: ${p.message}`;
    } else {
      ui.loginError.textContent = `Cannot reach the gateway${p.message ? ` (${p.message})` : ''}.`;
    }
  } finally {
    ui.loginSubmit.disabled = false;
  }
});

ui.logout.addEventListener('click', () => {
  forgetToken();
  showLogin('');
});

// ---- events ----

function onEnvelope(env) {
  if (!env || typeof env !== 'object') return;
  if (typeof env.seq === 'number' && env.epoch) {
    if (!state.pos || state.pos.epoch !== env.epoch || env.seq >= state.pos.seq) state.pos = { epoch: env.epoch, seq: env.seq };
  }
  if (typeof env.ts === 'number') {
    const offset = env.ts - Date.now();
    state.clockOffset = state.clockOffset === null ? offset : Math.max(state.clockOffset, offset);
  }
  events.add(env);
  const p = env.payload || {};
  switch (env.event) {
    case 'gap':
      onGap(p);
      break;
    case 'chat':
      onChat(p, env);
      break;
    case 'sessions.changed':
      onSessionChanged(p);
      break;
    case 'approvals.changed':
      onApproval(p.approval);
      break;
    case 'config.changed':
      config.changed(p);
      loadAgents();
      status.stale();
      break;
    case 'health':
      status.health(p);
      break;
    case 'plugins.changed':
    case 'mcp.changed':
      status.stale();
      break;
    case 'shutdown':
      setConn('reconnecting', '(the gateway is restarting)');
      state.attempt = 0;
      break;
    default:
      break;
  }
}

function onGap(p) {
  // What was missed cannot be replayed: the buffered run payloads may have holes, so they go,
  // and everything is read again (events after the gap keep arriving meanwhile).
  state.buffers.clear();
  if (p.reason === 'restart') state.runs = new Map();
  resync();
}

async function resync() {
  if (state.resyncing) {
    state.resyncAgain = true;
    return;
  }
  state.resyncing = true;
  try {
    do {
      state.resyncAgain = false;
      await Promise.all([refreshRuns(), refreshApprovals(), sessions.refresh(), loadAgents()]);
      await openSession(state.session);
      status.stale();
    } while (state.resyncAgain && state.connected);
  } catch (err) {
    if (err.code !== 'disconnected') toast(`Could not reload after a gap: ${err.message}`);
  } finally {
    state.resyncing = false;
  }
}

function runOf(key) {
  let r = state.runs.get(key);
  if (!r) {
    r = { active: null, state: 'idle', queued: new Set() };
    state.runs.set(key, r);
  }
  return r;
}

function trackRun(p) {
  if (!p.runId) return;
  const r = runOf(p.sessionKey);
  switch (p.state) {
    case 'queued':
      r.queued.add(p.runId);
      break;
    case 'started':
    case 'resumed':
      r.queued.delete(p.runId);
      r.active = p.runId;
      r.state = 'running';
      break;
    case 'approval_requested':
      r.active = r.active || p.runId;
      if (r.active === p.runId) r.state = 'waiting_approval';
      break;
    case 'approval_resolved':
    case 'tool_start':
    case 'delta':
      if (r.active === p.runId) r.state = 'running';
      break;
    default:
      if (TERMINAL.has(p.state)) {
        r.queued.delete(p.runId);
        if (r.active === p.runId) {
          r.active = null;
          r.state = 'idle';
        }
      }
  }
}

function bufferChat(p, env) {
  if (!p.runId) return;
  let list = state.buffers.get(p.sessionKey);
  if (TERMINAL.has(p.state)) {
    if (list) state.buffers.set(p.sessionKey, list.filter(([q]) => q.runId !== p.runId));
    return;
  }
  if (!list) state.buffers.set(p.sessionKey, (list = []));
  list.push([p, env]);
  if (list.length > 20000) list.splice(0, list.length - 20000);
}

function onChat(p, env) {
  const before = runOf(p.sessionKey).state;
  trackRun(p);
  bufferChat(p, env);
  conv.applyChat(p, env);
  if (p.sessionKey === state.session) updateRunUi();
  if (runOf(p.sessionKey).state !== before) sessions.render();
}

function onSessionChanged(p) {
  sessions.changed(p);
  if (p.sessionKey !== state.session) return;
  if (p.reason === 'deleted') {
    toast(`Session ${p.sessionKey} was deleted.`, 'info');
    selectSession('main');
    return;
  }
  if (p.reason === 'reset' && p.session && !conv.loading && p.session.sessionId !== conv.sessionId) openSession(state.session);
  updateHeader();
}

function onApproval(a) {
  if (!a) return;
  if (a.state === 'pending') state.approvals.set(a.approvalId, a);
  else state.approvals.delete(a.approvalId);
  conv.applyApproval(a);
  updateRunUi();
  sessions.render();
}

function approvalsBySession() {
  const counts = new Map();
  for (const a of state.approvals.values()) counts.set(a.sessionKey, (counts.get(a.sessionKey) || 0) + 1);
  return counts;
}

async function refreshRuns() {
  try {
    const res = await call('runs.list', {});
    const next = new Map();
    for (const r of res.runs) {
      const e = next.get(r.sessionKey) || { active: null, state: 'idle', queued: new Set() };
      if (r.state === 'queued') e.queued.add(r.runId);
      else {
        e.active = r.runId;
        e.state = r.state;
      }
      next.set(r.sessionKey, e);
    }
    state.runs = next;
    for (const [key, list] of state.buffers) {
      const active = next.get(key);
      state.buffers.set(key, list.filter(([q]) => active && (q.runId === active.active || active.queued.has(q.runId))));
    }
    updateRunUi();
    sessions.render();
  } catch (err) {
    if (err.code !== 'disconnected') toast(`Could not list runs: ${err.message}`);
  }
}

async function refreshApprovals() {
  try {
    const res = await call('approvals.list', {});
    state.approvals = new Map(res.approvals.map((a) => [a.approvalId, a]));
    sessions.render();
  } catch {
    // A token without read on approvals: no badges.
  }
}

async function loadAgents() {
  try {
    const res = await call('agents.list');
    state.agents = res.agents || [];
    const picker = ui.agentPicker;
    const chosen = picker.value;
    const options = state.agents.map((a) => h('option', { value: a.id, text: `${a.id} · ${a.provider}/${a.model}` }));
    picker.replaceChildren(...options);
    const fallback = state.agents.find((a) => a.default)?.id || state.agents[0]?.id;
    picker.value = state.agents.some((a) => a.id === chosen) ? chosen : fallback || '';
  } catch (err) {
    if (err.code !== 'disconnected') toast(`Could not list agents: ${err.message}`);
  }
}

// ---- the outbox ----

const outbox = new Outbox(sessionStorage);

function renderOutbox() {
  const n = outbox.count;
  ui.outbox.setAttribute('data-count', String(n));
  ui.outbox.textContent = n ? `${n} message${n === 1 ? '' : 's'} waiting to be sent` : 'all sent';
  setData(ui.outbox, 'waiting', n ? 'true' : null);
  conv.setUnsent(outbox.items);
}
outbox.onChange(renderOutbox);

async function flushOutbox() {
  if (state.flushing) return;
  state.flushing = true;
  try {
    while (state.connected) {
      const item = outbox.first();
      if (!item) break;
      const params = { sessionKey: item.sessionKey, message: item.message, idempotencyKey: item.idempotencyKey };
      if (item.mode) params.mode = item.mode;
      try {
        const res = await client.call('chat.send', params, { timeoutMs: 60000 });
        outbox.remove(item.idempotencyKey);
        conv.markSent(item, res.status);
      } catch (err) {
        if (err.retryable) {
          // Sent again with the same key later: the gateway starts it at most once.
          if (err.code !== 'disconnected') setTimeout(flushOutbox, err.data?.retryAfterMs ?? 2000);
          break;
        }
        outbox.remove(item.idempotencyKey);
        toast(`Not sent to ${item.sessionKey}: ${err.message}`);
        if (item.sessionKey === state.session && !ui.composer.value) {
          ui.composer.value = item.message;
          saveDraft();
        }
      }
    }
  } finally {
    state.flushing = false;
  }
}

// ---- the composer ----

function draftKey(key) {
  return DRAFT_PREFIX + key;
}

function saveDraft() {
  storageSet(sessionStorage, draftKey(state.session), ui.composer.value);
}

function send() {
  const text = ui.composer.value;
  if (!text.trim()) return;
  if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
    toast('The message is over 1 MiB; shorten it.');
    return;
  }
  outbox.add({ sessionKey: state.session, message: text, mode: ui.sendMode.value });
  ui.composer.value = '';
  saveDraft();
  flushOutbox();
}

async function abort() {
  const run = runOf(state.session);
  if (!run.active) return;
  ui.abort.disabled = true;
  try {
    await call('chat.abort', { runId: run.active });
  } catch (err) {
    toast(`Could not abort: ${err.message}`);
  } finally {
    updateRunUi();
  }
}

ui.composer.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.altKey && !ev.isComposing && ev.keyCode !== 229) {
    ev.preventDefault();
    send();
  }
});
ui.composer.addEventListener('input', saveDraft);
ui.send.addEventListener('click', () => {
  send();
  ui.composer.focus();
});
ui.abort.addEventListener('click', abort);

const RUN_TEXT = { idle: 'idle', running: 'running', waiting_approval: 'waiting for approval' };

function updateRunUi() {
  const run = runOf(state.session);
  let s = run.state;
  if (run.active && [...state.approvals.values()].some((a) => a.runId === run.active)) s = 'waiting_approval';
  ui.runState.setAttribute('data-state', s);
  ui.runState.textContent = RUN_TEXT[s] + (run.queued.size ? ` · ${run.queued.size} queued` : '');
  setData(ui.runState, 'run-id', run.active);
  ui.abort.disabled = !run.active;
  ui.app.setAttribute('data-run', s);
}

// ---- sessions ----

const sessions = new Sessions(
  { list: tid('sessions'), search: tid('session-search'), total: $('sessions-total') },
  { call, onSelect: (key) => selectSession(key), toast },
);
sessions.runs = () => state.runs;
sessions.approvals = approvalsBySession;

function updateHeader() {
  const s = sessions.get(state.session);
  ui.title.textContent = s?.label || state.session;
  ui.title.title = s?.label ? `${s.label} (${state.session})` : state.session;
  ui.agent.textContent = s?.agentId || '';
  show(ui.agent, !!s?.agentId);
  tid('session-delete').disabled = state.session === 'main';
  tid('session-delete').title = state.session === 'main' ? 'main cannot be deleted, only reset' : 'Delete this session';
  document.title = `${s?.label || state.session} · clawgate`;
}

function selectSession(key) {
  const changed = key !== state.session;
  state.session = key;
  storageSet(sessionStorage, SESSION_KEY, key);
  sessions.select(key);
  closeRename();
  updateHeader();
  updateRunUi();
  closeSidebar();
  if (changed || !conv.loaded) {
    ui.composer.value = storageGet(sessionStorage, draftKey(key)) || '';
    if (state.connected) openSession(key);
    else conv.reset(key);
  }
}

async function openSession(key) {
  try {
    await conv.open(key);
    updateHeader();
  } catch (err) {
    if (err.code === -32022 && key !== 'main') {
      toast(`Session ${key} does not exist any more.`, 'info');
      selectSession('main');
    } else if (err.code !== 'disconnected') {
      toast(`Could not load ${key}: ${err.message}`);
    }
  }
}

tid('session-new').addEventListener('click', newSession);

async function newSession() {
  const params = {};
  if (ui.agentPicker.value) params.agent = ui.agentPicker.value;
  try {
    const s = await call('sessions.create', params);
    sessions.changed({ sessionKey: s.key, reason: 'created', session: s });
    selectSession(s.key);
    ui.composer.focus();
  } catch (err) {
    toast(`Could not create a session: ${err.message}`);
  }
}

function closeRename() {
  show(ui.renameForm, false);
  show($('conv-actions'), true);
}

tid('session-rename').addEventListener('click', () => {
  const s = sessions.get(state.session);
  ui.renameInput.value = s?.label || '';
  show($('conv-actions'), false);
  show(ui.renameForm, true);
  ui.renameInput.focus();
  ui.renameInput.select();
});
$('rename-cancel').addEventListener('click', closeRename);
ui.renameForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const label = ui.renameInput.value.trim();
  try {
    const s = await call('sessions.patch', { key: state.session, label: label || null });
    sessions.changed({ sessionKey: s.key, reason: 'updated', session: s });
    closeRename();
    updateHeader();
  } catch (err) {
    toast(`Could not rename: ${err.message}`);
  }
});

tid('session-fork').addEventListener('click', async () => {
  try {
    const s = await call('sessions.fork', { key: state.session });
    sessions.changed({ sessionKey: s.key, reason: 'forked', session: s });
    selectSession(s.key);
    toast(`Forked into ${s.key}.`, 'info');
  } catch (err) {
    toast(`Could not fork: ${err.message}`);
  }
});

tid('session-reset').addEventListener('click', async () => {
  const key = state.session;
  if (!(await confirmDialog(`Reset ${key}? Its transcript is archived and a new one starts; the label stays.`, 'Reset'))) return;
  try {
    const s = await call('sessions.reset', { key });
    sessions.changed({ sessionKey: s.key, reason: 'reset', session: s });
    if (state.session === key && !conv.loading && s.sessionId !== conv.sessionId) openSession(key);
  } catch (err) {
    toast(`Could not reset: ${err.message}`);
  }
});

tid('session-delete').addEventListener('click', async () => {
  const key = state.session;
  if (key === 'main') return;
  if (!(await confirmDialog(`Delete ${key}? Its transcript is archived, and the session is gone from this list.`, 'Delete'))) return;
  try {
    await call('sessions.delete', { key });
    sessions.changed({ sessionKey: key, reason: 'deleted' });
    if (state.session === key) selectSession('main');
  } catch (err) {
    toast(`Could not delete: ${err.message}`);
  }
});

// ---- the confirmation dialog ----

let confirmDone = null;

function confirmDialog(text, okLabel = 'OK') {
  if (confirmDone) confirmDone(false);
  ui.confirmText.textContent = text;
  ui.confirmOk.textContent = okLabel;
  show(ui.confirmOverlay, true);
  const back = document.activeElement;
  ui.confirmCancel.focus();
  return new Promise((resolve) => {
    confirmDone = (ok) => {
      confirmDone = null;
      show(ui.confirmOverlay, false);
      back?.focus?.();
      resolve(ok);
    };
  });
}

ui.confirmOk.addEventListener('click', () => confirmDone?.(true));
ui.confirmCancel.addEventListener('click', () => confirmDone?.(false));
ui.confirmOverlay.addEventListener('click', (ev) => {
  if (ev.target === ui.confirmOverlay) confirmDone?.(false);
});

// ---- the conversation ----

const conv = new Conversation(ui.messages, {
  call,
  toast,
  runOf,
  unsent: (key) => outbox.of(key),
  buffered: (key) => state.buffers.get(key) || [],
  serverNow,
  resolveApproval,
  onLoaded: () => updateRunUi(),
});

function serverNow() {
  return Date.now() + (state.clockOffset ?? 0);
}

async function resolveApproval(a, decision, remember) {
  const params = { approvalId: a.approvalId, decision };
  if (remember) params.remember = remember;
  try {
    onApproval(await call('approvals.resolve', params));
  } catch (err) {
    toast(`Could not ${decision} ${a.name}: ${err.message}`);
    try {
      onApproval(await call('approvals.get', { approvalId: a.approvalId }));
    } catch {
      // Unknown or unreachable: leave the card as it is.
    }
    conv.rebuild(`approval:${a.approvalId}:`);
  }
}

setInterval(() => tickTimers(ui.messages, serverNow), 1000);

// ---- panels ----

const events = new EventsPanel({ list: $('events-list'), filter: $('events-filter'), clear: $('events-clear'), pause: $('events-pause') });
const status = new StatusPanel({ body: $('status-body'), refresh: $('status-refresh') }, { call });
const config = new ConfigPanel(
  {
    toml: tid('config-toml'),
    patch: tid('config-patch'),
    apply: tid('config-apply'),
    result: tid('config-result'),
    conflict: tid('config-conflict'),
    conflictCurrent: $('config-conflict-current'),
    conflictPatch: $('config-conflict-patch'),
    rebase: tid('config-rebase'),
    cancelConflict: $('config-conflict-cancel'),
    reload: $('config-reload'),
    meta: $('config-meta'),
    stale: $('config-stale'),
  },
  { call },
);
const panels = { events, status, config };

function setPanel(name, visible) {
  const panel = tid(name);
  show(panel, visible);
  tid(`${name}-toggle`).setAttribute('aria-pressed', String(visible));
  const any = Object.keys(panels).some((n) => !tid(n).hidden);
  show(ui.panels, any);
  ui.app.setAttribute('data-panels', any ? 'open' : 'closed');
  if (!visible || state.connected) panels[name].setVisible(visible);
  else panels[name].visible = true;
}

for (const name of Object.keys(panels)) {
  tid(`${name}-toggle`).addEventListener('click', () => setPanel(name, tid(name).hidden));
}
for (const button of document.querySelectorAll('[data-close]')) {
  button.addEventListener('click', () => setPanel(button.getAttribute('data-close'), false));
}

// ---- layout, theme, keyboard ----

function openSidebar() {
  ui.app.setAttribute('data-sidebar', 'open');
  ui.sidebarToggle.setAttribute('aria-expanded', 'true');
  show(ui.scrim, true);
}

function closeSidebar() {
  ui.app.setAttribute('data-sidebar', 'closed');
  ui.sidebarToggle.setAttribute('aria-expanded', 'false');
  show(ui.scrim, false);
}

ui.sidebarToggle.addEventListener('click', () => (ui.app.getAttribute('data-sidebar') === 'open' ? closeSidebar() : openSidebar()));
ui.scrim.addEventListener('click', closeSidebar);

const THEMES = ['auto', 'light', 'dark'];

function applyTheme(theme) {
  if (theme === 'auto') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.setAttribute('data-theme', theme);
  ui.theme.title = theme === 'auto' ? 'Theme: follows the system' : `Theme: ${theme}`;
  setData(ui.theme, 'theme', theme);
}

applyTheme(THEMES.includes(storageGet(localStorage, THEME_KEY)) ? storageGet(localStorage, THEME_KEY) : 'auto');
ui.theme.addEventListener('click', () => {
  const current = ui.theme.getAttribute('data-theme') || 'auto';
  const next = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
  storageSet(localStorage, THEME_KEY, next === 'auto' ? null : next);
  applyTheme(next);
});

function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape') {
    if (confirmDone) {
      ev.preventDefault();
      confirmDone(false);
    } else if (state.login) {
      // Nothing to close: the login stays until a token is accepted.
    } else if (!ui.renameForm.hidden) {
      ev.preventDefault();
      closeRename();
    } else if (ui.app.getAttribute('data-sidebar') === 'open' && matchMedia('(max-width: 760px)').matches) {
      ev.preventDefault();
      closeSidebar();
    } else if (runOf(state.session).active) {
      ev.preventDefault();
      abort();
    }
    return;
  }
  if (state.login || confirmDone) return;
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === 'k') {
    ev.preventDefault();
    openSidebar();
    tid('session-search').focus();
  } else if (ev.altKey && ev.key.toLowerCase() === 'n') {
    ev.preventDefault();
    newSession();
  } else if (ev.key === '/' && !isTyping(ev.target)) {
    ev.preventDefault();
    ui.composer.focus();
  }
});

// Trap the focus inside an open dialog.
document.addEventListener('focusin', (ev) => {
  const overlay = confirmDone ? ui.confirmOverlay : state.login ? ui.loginOverlay : null;
  if (overlay && !overlay.contains(ev.target)) {
    (confirmDone ? ui.confirmCancel : ui.tokenInput).focus();
  }
});

window.addEventListener('online', reconnectNow);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) reconnectNow();
});

// ---- start ----

sessions.select(state.session);
conv.reset(state.session);
updateHeader();
updateRunUi();
renderOutbox();
ui.composer.value = storageGet(sessionStorage, draftKey(state.session)) || '';
connect();
