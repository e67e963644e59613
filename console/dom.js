// DOM helpers: every node is built with createElement and textContent, never from HTML text.

/**
 * Builds an element. `attrs` keys: `testid` (data-testid), `class`, `text` (textContent),
 * `on` ({event: handler}), `data` ({name: value} as data-*), booleans (`hidden`, `disabled`,
 * `open`, ...) set or removed, anything else as an attribute. Children: nodes, strings (text
 * nodes), arrays; null, undefined and false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (name === 'testid') el.setAttribute('data-testid', value);
      else if (name === 'class') el.className = value;
      else if (name === 'text') el.textContent = value;
      else if (name === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (name === 'data') {
        for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.setAttribute('data-' + k, String(v));
      } else if (value === true) el.setAttribute(name, '');
      else if (value === false) el.removeAttribute(name);
      else el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nodes, strings, arrays; null/undefined/false skipped) to `el`. */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (typeof child === 'string' || typeof child === 'number') el.appendChild(document.createTextNode(String(child)));
    else el.appendChild(child);
  }
  return el;
}

/** The element with `data-testid=id` under `root` (the document by default). */
export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** Shows or hides an element with the `hidden` attribute (no inline style). */
export function show(el, visible) {
  if (visible) el.removeAttribute('hidden');
  else el.setAttribute('hidden', '');
}

/** Sets `data-name` to `value` (removes it for null/undefined). */
export function setData(el, name, value) {
  if (value === null || value === undefined) el.removeAttribute('data-' + name);
  else el.setAttribute('data-' + name, String(value));
}

// Times are formatted by hand: the first Intl.DateTimeFormat a fresh page builds loads the
// locale data, 35-60 ms measured in chromium, on the path to the first rendered history.
const two = (n) => String(n).padStart(2, '0');

/** A short local time (HH:MM, 24-hour) for a timestamp in ms. */
export function clock(ms) {
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** A local date and time for tooltips (YYYY-MM-DD HH:MM:SS). */
export function dateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(ms)}:${two(d.getSeconds())}`;
}

/** JSON, indented, for showing inputs and payloads. */
export function pretty(value) {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** "1:05" for 65000 ms; "0:00" below zero. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
