// The console's Content Security Policy: every console response carries it, the page has no
// inline script or style, and using the page violates nothing.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { closeBrowser, connected, messages, send, until, withConsole } from "./harness.mjs";

after(closeBrowser);

test("CSP: a header on every console response, and no violation while the page is used", { timeout: 60_000 }, async (t) => {
  await withConsole(t, {}, async ({ page, ctx }) => {
    await connected(page);
    const origin = new URL(page.url()).origin;
    await send(page, "hello");
    await until("the answer", async () => (await messages(page)).some((m) => m.role === "assistant" && m.text === "Echo: hello" && m.id));

    const own = ctx.responses.filter((r) => {
      const u = new URL(r.url);
      return u.origin === origin && (u.pathname === "/" || u.pathname.startsWith("/console/"));
    });
    assert.ok(own.some((r) => new URL(r.url).pathname === "/"), "the page itself was loaded");
    assert.ok(own.some((r) => new URL(r.url).pathname.startsWith("/console/")), "assets under /console/ were loaded");
    for (const r of own) {
      assert.ok(r.headers["content-security-policy"], `${r.url} carries a Content-Security-Policy header`);
    }

    const html = await (await fetch(`${origin}/`)).text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, "no inline <script>");
    assert.doesNotMatch(html, /<style[\s>]/i, "no <style> element");
    assert.doesNotMatch(html, /\sstyle\s*=/i, "no style attribute");
    assert.doesNotMatch(html, /\son[a-z]+\s*=/i, "no inline event handler");

    assert.deepEqual(await ctx.cspViolations(), [], "no securitypolicyviolation event");
    assert.deepEqual(ctx.consoleErrors.filter((e) => /Content Security Policy|Refused to (load|execute|apply|connect|evaluate)/i.test(e)), [], "no CSP error in the console");
  });
});
