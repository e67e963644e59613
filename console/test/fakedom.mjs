// A tiny stand-in for the DOM, enough for markdown.js's render(): elements, text nodes and
// fragments, serialised back to HTML (text escaped) so tests can compare what was built.

class Node {
  constructor(doc) {
    this.ownerDocument = doc;
    this.childNodes = [];
    this.parentNode = null;
  }
  appendChild(child) {
    if (child.isFragment) {
      for (const c of [...child.childNodes]) this.appendChild(c);
      child.childNodes = [];
      return child;
    }
    child.parentNode = this;
    this.childNodes.push(child);
    return child;
  }
  removeChild(child) {
    this.childNodes = this.childNodes.filter((c) => c !== child);
    child.parentNode = null;
    return child;
  }
  get firstChild() {
    return this.childNodes[0] || null;
  }
  get textContent() {
    return this.childNodes.map((c) => c.textContent).join('');
  }
  set textContent(value) {
    this.childNodes = [];
    if (value !== '') this.appendChild(new Text(this.ownerDocument, String(value)));
  }
}

class Text extends Node {
  constructor(doc, text) {
    super(doc);
    this.data = text;
  }
  get textContent() {
    return this.data;
  }
  get html() {
    return this.data.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
}

class Element extends Node {
  constructor(doc, tag) {
    super(doc);
    this.tagName = tag.toUpperCase();
    this.attributes = new Map();
  }
  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }
  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }
  get html() {
    const tag = this.tagName.toLowerCase();
    const attrs = [...this.attributes].map(([k, v]) => ` ${k}="${v.replace(/&/g, '&amp;').replace(/"/g, '&quot;')}"`).join('');
    if (tag === 'br' || tag === 'hr') return `<${tag}${attrs}>`;
    return `<${tag}${attrs}>${this.childNodes.map((c) => c.html).join('')}</${tag}>`;
  }
  querySelectorAll(tag) {
    const out = [];
    const walk = (n) => {
      for (const c of n.childNodes) {
        if (c instanceof Element) {
          if (c.tagName === tag.toUpperCase()) out.push(c);
          walk(c);
        }
      }
    };
    walk(this);
    return out;
  }
}

class Fragment extends Element {
  constructor(doc) {
    super(doc, '#fragment');
    this.isFragment = true;
  }
  get html() {
    return this.childNodes.map((c) => c.html).join('');
  }
}

export class FakeDocument {
  createElement(tag) {
    return new Element(this, tag);
  }
  createTextNode(text) {
    return new Text(this, text);
  }
  createDocumentFragment() {
    return new Fragment(this);
  }
}
