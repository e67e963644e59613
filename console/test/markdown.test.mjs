// node --test console/test/*.test.mjs: the Markdown renderer (parse tree and the DOM it builds).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse, render, renderInto, safeUrl } from '../markdown.js';
import { FakeDocument } from './fakedom.mjs';

const doc = new FakeDocument();
const html = (text) => render(parse(text), doc).html;

test('paragraphs, line breaks, headings and emphasis', () => {
  assert.equal(html('hello\nworld\n\nnext'), '<p>hello<br>world</p><p>next</p>');
  assert.equal(html('# Title\n## Sub ##'), '<h1>Title</h1><h2>Sub</h2>');
  assert.equal(html('**bold** and *it* and __b__ and _i_ and ~~gone~~'), '<p><strong>bold</strong> and <em>it</em> and <strong>b</strong> and <em>i</em> and <del>gone</del></p>');
  assert.equal(html('***both***'), '<p><em><strong>both</strong></em></p>');
  assert.equal(html('2 * 3 * 4'), '<p>2 * 3 * 4</p>');
  assert.equal(html('snake_case_name and __init__'), '<p>snake_case_name and <strong>init</strong></p>');
  assert.equal(html('\\*not em\\*'), '<p>*not em*</p>');
  assert.equal(html('**unclosed'), '<p>**unclosed</p>');
});

test('inline code and fenced code blocks', () => {
  assert.equal(html('use `a < b` here'), '<p>use <code>a &lt; b</code> here</p>');
  assert.equal(html('``a ` b``'), '<p><code>a ` b</code></p>');
  assert.equal(html('`*not em*`'), '<p><code>*not em*</code></p>');
  assert.equal(html('```js\nconst x = "<b>";\n```'), '<pre data-lang="js"><code class="language-js">const x = "&lt;b&gt;";</code></pre>');
  assert.equal(html('~~~\nplain\n~~~\nafter'), '<pre><code>plain</code></pre><p>after</p>');
  // Still streaming: an unclosed fence runs to the end.
  assert.equal(html('text\n```\nline 1\nline 2'), '<p>text</p><pre><code>line 1\nline 2</code></pre>');
  // A language with odd characters is not put in a class.
  assert.equal(html('```"><script>\nx\n```'), '<pre><code>x</code></pre>');
});

test('lists, nested lists, quotes and rules', () => {
  assert.equal(html('- a\n- b'), '<ul><li>a</li><li>b</li></ul>');
  assert.equal(html('1. one\n2. two'), '<ol><li>one</li><li>two</li></ol>');
  assert.equal(html('3) three\n4) four'), '<ol start="3"><li>three</li><li>four</li></ol>');
  assert.equal(html('- a\n  - a1\n  - a2\n- b'), '<ul><li><p>a</p><ul><li>a1</li><li>a2</li></ul></li><li>b</li></ul>');
  assert.equal(html('- a\n\n- b'), '<ul><li>a</li><li>b</li></ul>');
  assert.equal(html('- item\n```\ncode\n```'), '<ul><li>item</li></ul><pre><code>code</code></pre>');
  assert.equal(html('> quoted\n> more'), '<blockquote><p>quoted<br>more</p></blockquote>');
  assert.equal(html('a\n\n---\n\nb'), '<p>a</p><hr><p>b</p>');
  assert.equal(html('text\n- item'), '<p>text</p><ul><li>item</li></ul>');
});

test('links: only http and https, with rel=noopener', () => {
  assert.equal(
    html('[site](https://example.com/a?b=1)'),
    '<p><a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow" target="_blank" referrerpolicy="no-referrer">site</a></p>',
  );
  assert.equal(html('[x](javascript:alert(1))'), '<p>x</p>');
  assert.equal(html('[x](JAVASCRIPT:alert(1))'), '<p>x</p>');
  assert.equal(html('[x](data:text/html,<b>hi</b>)'), '<p>x</p>');
  assert.equal(html('[x](/relative)'), '<p>x</p>');
  assert.equal(html('[**b**](http://e.x "title")'), '<p><a href="http://e.x/" rel="noopener noreferrer nofollow" target="_blank" referrerpolicy="no-referrer"><strong>b</strong></a></p>');
  assert.match(html('see https://example.com/x.'), /^<p>see <a href="https:\/\/example.com\/x"[^>]*>https:\/\/example.com\/x<\/a>.<\/p>$/);
  assert.match(html('(https://e.x/a_(b))'), /<a href="https:\/\/e.x\/a_\(b\)"/);
  assert.match(html('<https://e.x/auto>'), /<a href="https:\/\/e.x\/auto"/);
  // Images are never loaded: an http(s) image is a link, anything else its alt text.
  assert.match(html('![cat](https://e.x/cat.png)'), /^<p><a href="https:\/\/e.x\/cat.png"[^>]*>image: cat<\/a><\/p>$/);
  assert.equal(html('![cat](javascript:x)'), '<p>cat</p>');
  assert.equal(safeUrl('https://e.x'), 'https://e.x/');
  assert.equal(safeUrl('vbscript:x'), null);
  assert.equal(safeUrl('not a url'), null);
});

test('markup in the text stays text', () => {
  const out = html('<img src=x onerror=alert(1)> <script>alert(1)</script> <b>b</b>');
  assert.equal(out, '<p>&lt;img src=x onerror=alert(1)&gt; &lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;b&lt;/b&gt;</p>');
  const frag = render(parse('<a href="javascript:x">y</a>\n\n# <i>h</i>'), doc);
  assert.equal(frag.querySelectorAll('a').length, 0);
  assert.equal(frag.querySelectorAll('i').length, 0);
  assert.equal(frag.querySelectorAll('script').length, 0);
});

test('renderInto replaces what the element held', () => {
  const el = doc.createElement('div');
  renderInto(el, 'one');
  renderInto(el, 'two **2**');
  assert.equal(el.html, '<div><p>two <strong>2</strong></p></div>');
});

test('odd input never throws and ends', () => {
  const inputs = ['', '\n\n', '*'.repeat(5000), '['.repeat(3000), '`'.repeat(3000), '> '.repeat(500) + 'x', '- '.repeat(500) + 'x', '_a_'.repeat(1000), '\r\n\r\n# x\r\n', '1.\n2.\n', '#', '######## seven', '*a '.repeat(20000), 'a_b '.repeat(20000), '[a '.repeat(20000), '**x '.repeat(20000), '~~a '.repeat(20000), '`a '.repeat(20001), '[x](' + '('.repeat(20000)];
  for (const input of inputs) {
    const started = Date.now();
    assert.doesNotThrow(() => html(input));
    assert.ok(Date.now() - started < 2000, `slow on ${JSON.stringify(input.slice(0, 20))}`);
  }
});
