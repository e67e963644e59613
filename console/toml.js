// JSON → TOML, for showing `config.get`'s effective configuration the way the file is written.
//
// A table's plain keys come first, then its sub-tables as `[a.b]`, then arrays of tables as
// `[[a.b]]`. Keys that are not bare are quoted; strings are TOML basic strings. TOML has no
// null: a null value is shown as a comment (`# key is not set`), and skipped inside arrays and
// inline tables.

const BARE = /^[A-Za-z0-9_-]+$/;

/** A TOML key: bare when it can be, else quoted. */
export function tomlKey(key) {
  return BARE.test(key) ? key : tomlString(key);
}

/** A TOML basic string. */
export function tomlString(s) {
  let out = '"';
  for (const ch of String(s)) {
    const code = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (code < 0x20 || code === 0x7f) out += '\\u' + code.toString(16).toUpperCase().padStart(4, '0');
    else if (code >= 0xd800 && code <= 0xdfff) out += '\\uFFFD';
    else out += ch;
  }
  return out + '"';
}

function isTable(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isArrayOfTables(v) {
  return Array.isArray(v) && v.length > 0 && v.every(isTable);
}

/** A value written inline (after `key = `, inside arrays and inline tables). */
export function tomlValue(v) {
  if (typeof v === 'string') return tomlString(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'nan';
    if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
    return String(v);
  }
  if (typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) {
    const items = v.filter((x) => x !== null && x !== undefined).map(tomlValue);
    return items.length ? `[${items.join(', ')}]` : '[]';
  }
  if (isTable(v)) {
    const entries = Object.entries(v).filter(([, x]) => x !== null && x !== undefined);
    if (!entries.length) return '{}';
    return `{ ${entries.map(([k, x]) => `${tomlKey(k)} = ${tomlValue(x)}`).join(', ')} }`;
  }
  return '""';
}

function emitTable(lines, path, table, arrayEntry) {
  const plain = [];
  const unset = [];
  const tables = [];
  const arrays = [];
  for (const [k, v] of Object.entries(table)) {
    if (v === null || v === undefined) unset.push(k);
    else if (isTable(v)) tables.push([k, v]);
    else if (isArrayOfTables(v)) arrays.push([k, v]);
    else plain.push([k, v]);
  }
  const name = path.map(tomlKey).join('.');
  const needsHeader = arrayEntry || plain.length || unset.length || (!tables.length && !arrays.length);
  if (path.length && needsHeader) {
    if (lines.length) lines.push('');
    lines.push(arrayEntry ? `[[${name}]]` : `[${name}]`);
  }
  for (const [k, v] of plain) lines.push(`${tomlKey(k)} = ${tomlValue(v)}`);
  for (const k of unset) lines.push(`# ${tomlKey(k)} is not set`);
  for (const [k, v] of tables) emitTable(lines, [...path, k], v, false);
  for (const [k, v] of arrays) for (const entry of v) emitTable(lines, [...path, k], entry, true);
}

/** The TOML text of a JSON object (a non-object is shown as `value = ...`). */
export function toToml(value) {
  const lines = [];
  if (isTable(value)) emitTable(lines, [], value, false);
  else if (value !== null && value !== undefined) lines.push(`value = ${tomlValue(value)}`);
  return lines.length ? lines.join('\n') + '\n' : '';
}
