// A small, safe Markdown renderer: text is parsed into a tree of plain objects, and the tree
// is turned into DOM nodes with createElement/createTextNode only, so nothing in the text can
// become markup, script or style. Links are kept only for http(s) URLs (rel=noopener); images
// are shown as links (the console fetches nothing from outside the gateway).
//
// Blocks: paragraphs (a single newline is a line break, as in chat), ATX headings, fenced code
// blocks (``` or ~~~, an unclosed fence runs to the end: text that is still streaming),
// bullet and numbered lists (nested by indentation), block quotes, rules.
// Inline: `code`, **strong**, __strong__, *em*, _em_, ~~strike~~, [links](http://..),
// <http://..> and bare http(s) URLs, backslash escapes.

const LIST = /^( {0,3})([-*+]|\d{1,9}[.)])(?:[ \t]+|$)/;
const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}>/;
const BLANK = /^[ \t]*$/;

/** Parses Markdown text into a list of blocks (plain objects, see the file's header). */
export function parse(text) {
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  return parseBlocks(lines, 0);
}

function indentOf(line) {
  let n = 0;
  for (const c of line) {
    if (c === ' ') n += 1;
    else if (c === '\t') n += 4 - (n % 4);
    else break;
  }
  return n;
}

/** Removes up to `n` columns of leading indentation. */
function dedent(line, n) {
  let col = 0;
  let i = 0;
  while (i < line.length && col < n) {
    if (line[i] === ' ') col += 1;
    else if (line[i] === '\t') col += 4 - (col % 4);
    else break;
    i += 1;
  }
  return line.slice(i);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST.test(line);
}

function parseBlocks(lines, depth) {
  const out = [];
  let para = [];
  const flush = () => {
    if (para.length) out.push({ type: 'p', children: parseInline(para.join('\n')) });
    para = [];
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const close = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}[ \\t]*$`);
      const indent = indentOf(line);
      const body = [];
      i += 1;
      while (i < lines.length && !close.test(lines[i])) {
        body.push(dedent(lines[i], indent));
        i += 1;
      }
      i += 1;
      out.push({ type: 'code', lang: m[2] || '', text: body.join('\n') });
      continue;
    }
    if (BLANK.test(line)) {
      flush();
      i += 1;
      continue;
    }
    if ((m = HEADING.exec(line))) {
      flush();
      out.push({ type: 'heading', level: m[1].length, children: parseInline(m[2] || '') });
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      flush();
      out.push({ type: 'rule' });
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(lines[i].replace(/^ {0,3}> ?/, ''));
        i += 1;
      }
      out.push({ type: 'quote', children: depth < 20 ? parseBlocks(body, depth + 1) : [{ type: 'p', children: [{ type: 'text', text: body.join('\n') }] }] });
      continue;
    }
    if (LIST.test(line) && (para.length === 0 || !/^\d/.test(line.trim()) || /^1[.)]/.test(line.trim()))) {
      flush();
      const [list, next] = parseList(lines, i, depth);
      out.push(list);
      i = next;
      continue;
    }
    para.push(line);
    i += 1;
  }
  flush();
  return out;
}

function parseList(lines, start, depth) {
  const first = LIST.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const baseIndent = indentOf(first[1]);
  const list = { type: 'list', ordered, start: ordered ? parseInt(first[2], 10) : null, items: [] };
  let i = start;
  while (i < lines.length) {
    const m = LIST.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered || indentOf(m[1]) > baseIndent + 1) break;
    const markerEnd = m[1].length + m[2].length;
    const after = m[0].slice(markerEnd);
    const contentIndent = after.length ? indentOf(' '.repeat(markerEnd) + after) : markerEnd + 1;
    const nestIndent = Math.min(contentIndent, baseIndent + 2);
    const body = [lines[i].slice(m[0].length)];
    i += 1;
    let endOfList = false;
    while (i < lines.length) {
      const l = lines[i];
      if (BLANK.test(l)) {
        let j = i + 1;
        while (j < lines.length && BLANK.test(lines[j])) j += 1;
        if (j < lines.length && indentOf(lines[j]) >= nestIndent) {
          for (; i < j; i += 1) body.push('');
          continue;
        }
        const sibling = j < lines.length ? LIST.exec(lines[j]) : null;
        if (sibling && /\d/.test(sibling[2]) === ordered && indentOf(sibling[1]) <= baseIndent + 1) {
          i = j;
        } else {
          endOfList = true;
        }
        break;
      }
      if (indentOf(l) >= nestIndent) {
        body.push(dedent(l, contentIndent));
        i += 1;
        continue;
      }
      if (startsBlock(l)) break;
      body.push(l.trim());
      i += 1;
    }
    list.items.push(depth < 20 ? parseBlocks(body, depth + 1) : [{ type: 'p', children: [{ type: 'text', text: body.join('\n') }] }]);
    if (endOfList) break;
  }
  return [list, i];
}

/** Whether `url` is an absolute http(s) URL; returns its normalised form, or null. */
export function safeUrl(url) {
  let parsed;
  try {
    parsed = new URL(String(url).trim());
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  return parsed.href;
}

const PUNCT = /[!-/:-@[-`{-~]/;
const BARE_URL = /https?:\/\/[^\s<>"'`]+/iy;
const AUTOLINK = /<(https?:\/\/[^\s<>]+)>/iy;

// How far a closing delimiter or a link's parts are looked for: the bound keeps a long text
// full of unmatched `*` or `[` linear, not quadratic (it is parsed again at every delta).
const MAX_SPAN = 20000;
const MAX_LABEL = 1000;
const MAX_URL = 2048;

/** Parses inline Markdown into a list of inline nodes. */
export function parseInline(text, depth = 0) {
  const out = [];
  // Where a search for each delimiter found no closer: a later one cannot find one either.
  const failed = new Map();
  const close = (s, i, delim) => {
    if (failed.has(delim) && failed.get(delim) <= i) return -1;
    const at = closeDelim(s, i, delim);
    if (at === -1 && (!failed.has(delim) || failed.get(delim) > i)) failed.set(delim, i);
    return at;
  };
  let buf = '';
  const push = (node) => {
    if (buf) out.push({ type: 'text', text: buf });
    buf = '';
    out.push(node);
  };
  const s = text;
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length && PUNCT.test(s[i + 1])) {
      buf += s[i + 1];
      i += 2;
      continue;
    }
    if (c === '\\' && s[i + 1] === '\n') {
      push({ type: 'br' });
      i += 2;
      continue;
    }
    if (c === '\n') {
      buf = buf.replace(/ +$/, '');
      push({ type: 'br' });
      i += 1;
      continue;
    }
    if (c === '`') {
      let n = 1;
      while (s[i + n] === '`') n += 1;
      const ticks = '`'.repeat(n);
      let j = i + n;
      let close = -1;
      while ((j = s.indexOf(ticks, j)) !== -1) {
        if (s[j + n] !== '`' && s[j - 1] !== '`') {
          close = j;
          break;
        }
        while (s[j] === '`') j += 1;
      }
      if (close === -1) {
        buf += ticks;
        i += n;
        continue;
      }
      let code = s.slice(i + n, close).replace(/\n/g, ' ');
      if (code.length > 2 && code[0] === ' ' && code[code.length - 1] === ' ' && code.trim()) code = code.slice(1, -1);
      push({ type: 'code', text: code });
      i = close + n;
      continue;
    }
    if (depth < 10 && (c === '*' || c === '_' || c === '~')) {
      const strong = s[i + 1] === c;
      if (c === '~' && !strong) {
        buf += c;
        i += 1;
        continue;
      }
      if (c !== '~' && strong && s[i + 2] === c) {
        // ***both***: emphasis around strong.
        const end = close(s, i, c + c + c);
        if (end !== -1) {
          push({ type: 'em', children: [{ type: 'strong', children: parseInline(s.slice(i + 3, end), depth + 1) }] });
          i = end + 3;
          continue;
        }
      }
      const delim = strong ? c + c : c;
      const found = close(s, i, delim);
      if (found !== -1) {
        const inner = s.slice(i + delim.length, found);
        const type = c === '~' ? 'del' : strong ? 'strong' : 'em';
        push({ type, children: parseInline(inner, depth + 1) });
        i = found + delim.length;
        continue;
      }
      // An unmatched run of delimiters is text.
      let n = 1;
      while (s[i + n] === c) n += 1;
      buf += s.slice(i, i + n);
      i += n;
      continue;
    }
    if (c === '!' && s[i + 1] === '[') {
      const link = parseLink(s, i + 1, depth);
      if (link) {
        const href = safeUrl(link.url);
        const label = link.label || 'image';
        if (href) push({ type: 'link', href, children: [{ type: 'text', text: `image: ${label}` }] });
        else buf += label;
        i = link.end;
        continue;
      }
    }
    if (c === '[') {
      const link = parseLink(s, i, depth);
      if (link) {
        const href = safeUrl(link.url);
        const children = parseInline(link.label, depth + 1);
        if (href) push({ type: 'link', href, children });
        else for (const child of children) push(child);
        i = link.end;
        continue;
      }
    }
    if (c === '<') {
      AUTOLINK.lastIndex = i;
      const m = AUTOLINK.exec(s);
      if (m && safeUrl(m[1])) {
        push({ type: 'link', href: safeUrl(m[1]), children: [{ type: 'text', text: m[1] }] });
        i += m[0].length;
        continue;
      }
    }
    if ((c === 'h' || c === 'H') && !/[A-Za-z0-9]/.test(s[i - 1] || '')) {
      BARE_URL.lastIndex = i;
      const m = BARE_URL.exec(s);
      if (m) {
        let url = m[0];
        // Trailing punctuation ends the sentence, not the URL (a ")" only when unbalanced).
        while (/[.,;:!?'"*_~]$/.test(url) || (url.endsWith(')') && count(url, '(') < count(url, ')'))) url = url.slice(0, -1);
        const href = safeUrl(url);
        if (href) {
          push({ type: 'link', href, children: [{ type: 'text', text: url }] });
          i += url.length;
          continue;
        }
      }
    }
    buf += c;
    i += 1;
  }
  if (buf) out.push({ type: 'text', text: buf });
  return out;
}

function count(s, ch) {
  let n = 0;
  for (const c of s) if (c === ch) n += 1;
  return n;
}

/** The index of the delimiter closing the one at `i`, or -1 (no emphasis then). */
function closeDelim(s, i, delim) {
  const c = delim[0];
  const after = s[i + delim.length];
  if (after === undefined || /\s/.test(after)) return -1;
  // `_` inside a word (snake_case) is not emphasis.
  if (c === '_' && i > 0 && /[A-Za-z0-9]/.test(s[i - 1])) return -1;
  let j = i + delim.length + 1;
  const last = Math.min(s.length - delim.length, i + MAX_SPAN);
  while (j <= last) {
    if (s[j] === '`') {
      // Skip a code span: delimiters inside it do not count.
      let n = 1;
      while (s[j + n] === '`') n += 1;
      const end = s.indexOf('`'.repeat(n), j + n);
      if (end !== -1) {
        j = end + n;
        continue;
      }
    }
    if (s[j] === '\\') {
      j += 2;
      continue;
    }
    if (s.startsWith(delim, j) && !/\s/.test(s[j - 1])) {
      const next = s[j + delim.length];
      if (delim.length === 1 && next === c) {
        // `*a **b** c*`: a double delimiter is not the single one's end.
        let k = j;
        while (s[k] === c) k += 1;
        j = k;
        continue;
      }
      if (c === '_' && next !== undefined && /[A-Za-z0-9]/.test(next)) {
        j += 1;
        continue;
      }
      return j;
    }
    j += 1;
  }
  return -1;
}

/** `[label](url "title")` starting at `i`: {label, url, end}, or null. */
function parseLink(s, i, depth) {
  if (depth >= 10) return null;
  let j = i + 1;
  let level = 1;
  const labelEnd = Math.min(s.length, i + MAX_LABEL);
  while (j < labelEnd) {
    if (s[j] === '\\') j += 1;
    else if (s[j] === '[') level += 1;
    else if (s[j] === ']') {
      level -= 1;
      if (level === 0) break;
    } else if (s[j] === '\n' && s[j + 1] === '\n') return null;
    j += 1;
  }
  if (level !== 0 || s[j + 1] !== '(') return null;
  const label = s.slice(i + 1, j);
  let k = j + 2;
  let parens = 1;
  const urlEnd = Math.min(s.length, k + MAX_URL);
  while (k < urlEnd) {
    if (s[k] === '\\') k += 1;
    else if (s[k] === '(') parens += 1;
    else if (s[k] === ')') {
      parens -= 1;
      if (parens === 0) break;
    } else if (s[k] === '\n') return null;
    k += 1;
  }
  if (parens !== 0) return null;
  let target = s.slice(j + 2, k).trim();
  const titled = /^(\S+)\s+(?:"[^"]*"|'[^']*')$/.exec(target);
  if (titled) target = titled[1];
  if (target.startsWith('<') && target.endsWith('>')) target = target.slice(1, -1);
  return { label, url: target, end: k + 1 };
}

/** Renders blocks (from `parse`) as a DocumentFragment of `doc`. */
export function render(blocks, doc = globalThis.document) {
  const frag = doc.createDocumentFragment();
  for (const block of blocks) frag.appendChild(renderBlock(block, doc));
  return frag;
}

/** Parses and renders `text` into `el`, replacing what it held. */
export function renderInto(el, text) {
  const frag = render(parse(text), el.ownerDocument);
  while (el.firstChild) el.removeChild(el.firstChild);
  el.appendChild(frag);
}

function renderBlock(block, doc) {
  switch (block.type) {
    case 'p':
      return inlines(doc.createElement('p'), block.children, doc);
    case 'heading':
      return inlines(doc.createElement('h' + Math.min(6, Math.max(1, block.level))), block.children, doc);
    case 'code': {
      const pre = doc.createElement('pre');
      const code = doc.createElement('code');
      if (/^[A-Za-z0-9_+#.-]{1,32}$/.test(block.lang)) {
        code.setAttribute('class', 'language-' + block.lang);
        pre.setAttribute('data-lang', block.lang);
      }
      code.textContent = block.text;
      pre.appendChild(code);
      return pre;
    }
    case 'quote': {
      const q = doc.createElement('blockquote');
      for (const b of block.children) q.appendChild(renderBlock(b, doc));
      return q;
    }
    case 'rule':
      return doc.createElement('hr');
    case 'list': {
      const list = doc.createElement(block.ordered ? 'ol' : 'ul');
      if (block.ordered && block.start !== null && block.start !== 1) list.setAttribute('start', String(block.start));
      for (const item of block.items) {
        const li = doc.createElement('li');
        if (item.length === 1 && item[0].type === 'p') inlines(li, item[0].children, doc);
        else for (const b of item) li.appendChild(renderBlock(b, doc));
        list.appendChild(li);
      }
      return list;
    }
    default:
      return doc.createTextNode('');
  }
}

function inlines(parent, nodes, doc) {
  for (const node of nodes) parent.appendChild(renderInline(node, doc));
  return parent;
}

function renderInline(node, doc) {
  switch (node.type) {
    case 'text':
      return doc.createTextNode(node.text);
    case 'br':
      return doc.createElement('br');
    case 'code': {
      const code = doc.createElement('code');
      code.textContent = node.text;
      return code;
    }
    case 'strong':
    case 'em':
    case 'del':
      return inlines(doc.createElement(node.type), node.children, doc);
    case 'link': {
      const href = safeUrl(node.href);
      if (!href) return inlines(doc.createElement('span'), node.children, doc);
      const a = doc.createElement('a');
      a.setAttribute('href', href);
      a.setAttribute('rel', 'noopener noreferrer nofollow');
      a.setAttribute('target', '_blank');
      a.setAttribute('referrerpolicy', 'no-referrer');
      return inlines(a, node.children, doc);
    }
    default:
      return doc.createTextNode('');
  }
}
