// The harness of the console's browser tests: a real clawgate binary as a child process (started,
// restarted on the same data directory, stopped), Debian's chromium driven by playwright-core,
// a screenshot per test under target/console-screenshots/, and the page's errors collected.
//
// Everything started here is tracked and killed when the process exits, whatever happened.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = "1";
const { chromium } = await import("playwright-core");

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const repo = join(here, "..", "..");
/** The gateway binary under test. */
export const BIN = process.env.CLAWGATE_BIN ?? join(repo, "target", "debug", "clawgate");
/** Where each test's screenshot goes. */
export const SCREENSHOTS = join(repo, "target", "console-screenshots");

/** The chromium executable: $CHROMIUM, else `chromium` on the PATH. */
export function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  try {
    return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error("chromium is not installed: run tests/console/run.sh, which installs Debian's chromium");
  }
}

const children = new Set();
const dirs = new Set();
process.on("exit", () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A fresh data directory holding `clawgate.toml` with `config` (TOML text). */
export function dataDir(config = "") {
  const dir = mkdtempSync(join(tmpdir(), "clawgate-console-"));
  dirs.add(dir);
  writeFileSync(join(dir, "clawgate.toml"), config);
  return dir;
}

/**
 * A gateway started as `clawgate --data-dir DIR --port PORT` (a fresh directory holding
 * `config` when `dir` is absent). Resolves once it printed `listening on ws://...` on stdout.
 */
export async function startGateway({ config = "", dir, port = 0, env = {} } = {}) {
  const data = dir ?? dataDir(config);
  const childEnv = { ...process.env, RUST_LOG: "warn", ...env };
  if (!("CLAWGATE_TOKEN" in env)) delete childEnv.CLAWGATE_TOKEN;
  const child = spawn(BIN, ["--data-dir", data, "--port", String(port)], {
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the gateway did not start within 10 s\n${stderr}`)), 10_000);
    child.once("error", (err) => { clearTimeout(timer); reject(err); });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the gateway exited before listening (code ${code}, signal ${signal})\n${stderr}`));
    });
    createInterface({ input: child.stdout }).once("line", (line) => { clearTimeout(timer); resolve(line); });
  });
  const m = /^listening on (ws:\/\/[^ ]+)/.exec(first);
  assert.ok(m, `unexpected first line from the gateway: ${first}`);
  const wsUrl = m[1];
  const actualPort = Number(new URL(wsUrl).port);
  const httpUrl = `http://127.0.0.1:${actualPort}/`;
  const gw = {
    child,
    wsUrl,
    url: httpUrl,
    port: actualPort,
    dir: data,
    get stderr() { return stderr; },
    /** Stops it (SIGTERM: runs are suspended; SIGKILL: a crash) and waits for the exit. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    /** Stops it, then starts a new one on the same data directory and port. */
    async restart(signal = "SIGTERM", { downMs = 0 } = {}) {
      await gw.stop(signal);
      if (downMs) await sleep(downMs);
      return startGateway({ dir: data, port: actualPort, env });
    },
  };
  return gw;
}

/** One JSON-RPC call over HTTP POST to the gateway's `/`; resolves with `result` or throws. */
export async function rpc(gw, method, params, { token } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(gw.url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, ...(params === undefined ? {} : { params }) }),
  });
  const body = await res.json();
  if (body.error) {
    const err = new Error(`${method}: ${body.error.message} (${body.error.code})`);
    err.code = body.error.code;
    err.data = body.error.data;
    throw err;
  }
  return body.result;
}

/** Whether `GET /` of this gateway answers HTML (the console is served). */
export async function servesConsole(gw) {
  const res = await fetch(gw.url);
  const type = res.headers.get("content-type") ?? "";
  await res.arrayBuffer();
  return res.ok && type.startsWith("text/html");
}

let consoleProbe;
/**
 * Whether this build serves the web console at `GET /`, asked once of a gateway started for
 * the question (without auth, so the answer does not depend on a test's configuration).
 */
export function consoleServed() {
  consoleProbe ??= (async () => {
    const gw = await startGateway();
    try {
      return await servesConsole(gw);
    } finally {
      await gw.stop();
    }
  })();
  return consoleProbe;
}

/** The message a feature test skips with while the console is not built in. */
export const NO_CONSOLE =
  "the web console is not served yet: GET / does not answer HTML (these tests run once the console is merged)";

let sharedBrowser;
/** The browser of this test file: one headless Debian chromium, launched on first use. */
export async function browser() {
  if (!sharedBrowser) {
    sharedBrowser = chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
  }
  return sharedBrowser;
}

/** Closes the browser of this test file, if one was launched. */
export async function closeBrowser() {
  const b = sharedBrowser;
  sharedBrowser = undefined;
  if (b) {
    await (await b).close();
  }
}

/** A file name made of a test's name. */
export function screenshotName(name) {
  return `${name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 120) || "test"}.png`;
}

/**
 * Opens a page in a fresh browser context, wired to collect what goes wrong in it:
 * `pageErrors` (uncaught exceptions), `consoleErrors` (console.error and failed loads, as
 * text), `cspViolations` (securitypolicyviolation events, recorded by an init script) and
 * `responses` (every response's url, status and headers).
 */
export async function openPage() {
  const b = await browser();
  const context = await b.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const pageErrors = [];
  const consoleErrors = [];
  const responses = [];
  page.on("pageerror", (err) => pageErrors.push(err));
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("response", (res) => {
    responses.push({ url: res.url(), status: res.status(), headers: res.headers() });
  });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"}`);
    });
  });
  return {
    context,
    page,
    pageErrors,
    consoleErrors,
    responses,
    async cspViolations() {
      return page.evaluate(() => window.__cspViolations ?? []).catch(() => []);
    },
  };
}

/**
 * Runs one browser test: starts a gateway (with `config`), opens a page, runs `body`, then
 * always saves the screenshot `target/console-screenshots/<test name>.png`, closes the page
 * and stops every gateway the test started. The test fails on an uncaught page error.
 * With `needsConsole` (the default) it skips when the build does not serve the console.
 *
 * `body` gets `{gw, page, ctx, restart(signal, opts), goto()}`; `restart` replaces `gw` (read
 * `env.gw` again after it).
 */
export async function withConsole(t, { config = "", needsConsole = true, navigate = true } = {}, body) {
  if (needsConsole && !(await consoleServed())) {
    t.skip(NO_CONSOLE);
    return;
  }
  const ctx = await openPage();
  const started = [];
  const env = {
    gw: await startGateway({ config }),
    page: ctx.page,
    ctx,
    async restart(signal = "SIGTERM", opts = {}) {
      const old = env.gw;
      await old.stop(signal);
      if (opts.whileDown) await opts.whileDown();
      if (opts.downMs) await sleep(opts.downMs);
      env.gw = await startGateway({ dir: old.dir, port: old.port });
      started.push(env.gw);
      return env.gw;
    },
    async goto(path = "/") {
      return ctx.page.goto(new URL(path, env.gw.url).href, { waitUntil: "load" });
    },
  };
  started.push(env.gw);
  let failed;
  try {
    if (navigate) await env.goto();
    await body(env);
  } catch (err) {
    failed = err;
  } finally {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const file = join(SCREENSHOTS, screenshotName(t.fullName ?? t.name));
    await ctx.page.screenshot({ path: file, fullPage: true }).catch((err) => {
      if (!failed) failed = new Error(`could not save the screenshot ${file}: ${err.message}`);
    });
    await ctx.context.close().catch(() => {});
    for (const gw of started) await gw.stop("SIGKILL");
  }
  if (failed) {
    if (env.gw?.stderr) failed.message += `\n--- gateway stderr (last lines) ---\n${env.gw.stderr.split("\n").slice(-30).join("\n")}`;
    throw failed;
  }
  assert.deepEqual(ctx.pageErrors.map((e) => String(e.stack ?? e)), [], "uncaught errors in the page");
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `fn` (sync or async) until it returns a truthy value or stops throwing; resolves with
 * that value. On timeout, throws with `what` and the last value or error seen.
 */
export async function until(what, fn, { timeout = 10_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

/** A locator of `[data-testid=ID]` plus an optional attribute selector suffix. */
export function tid(page, id, extra = "") {
  return page.locator(`[data-testid="${id}"]${extra}`);
}

/** Waits until `[data-testid=ID]` has `data-state` = `state` (one of them, for an array). */
export async function waitState(page, id, state, { timeout = 10_000 } = {}) {
  const states = Array.isArray(state) ? state : [state];
  return until(`${id} data-state ${states.join("|")}`, async () => {
    const s = await tid(page, id).first().getAttribute("data-state", { timeout: 200 });
    return states.includes(s) ? s : false;
  }, { timeout });
}

/**
 * Starts recording every value of `attr` taken by elements matching `selector` (watched by a
 * MutationObserver from now on, the current values included). Read with `recorded(page, name)`.
 */
export async function record(page, name, selector, attr) {
  await page.evaluate(({ name, selector, attr }) => {
    const seen = [];
    window.__recorded = window.__recorded ?? {};
    window.__recorded[name] = seen;
    const push = (v) => {
      if (v !== null && seen.at(-1) !== v) seen.push(v);
    };
    const note = (el) => {
      if (el instanceof Element && el.matches(selector)) push(el.getAttribute(attr));
    };
    document.querySelectorAll(selector).forEach(note);
    new MutationObserver((records) => {
      // Replays one batch in order: an attribute record's oldValue is the value the element had
      // until then, so a value set and changed again within one task is still seen, in order.
      const changed = new Set();
      records.forEach((r, i) => {
        if (r.type === "attributes") {
          if (r.target instanceof Element && r.target.matches(selector)) {
            push(r.oldValue);
            changed.add(r.target);
          }
          return;
        }
        const laterChange = (el) => records.slice(i + 1).some((q) => q.type === "attributes" && q.target === el);
        for (const n of r.addedNodes) {
          if (!(n instanceof Element)) continue;
          for (const el of [n, ...n.querySelectorAll(selector)]) {
            if (el.matches(selector) && !laterChange(el)) note(el);
          }
        }
      });
      changed.forEach(note);
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeOldValue: true, attributeFilter: [attr] });
  }, { name, selector, attr });
}

/** The values recorded under `name` by `record`. */
export async function recorded(page, name) {
  return page.evaluate((name) => window.__recorded?.[name] ?? [], name);
}

/** Types `text` into the composer and presses Enter. */
export async function send(page, text) {
  const composer = tid(page, "composer");
  await composer.fill(text);
  await composer.press("Enter");
}

/** The `[data-testid=message]` elements as {role, id, streaming, text}, in DOM order. */
export async function messages(page) {
  return page.$$eval('[data-testid="message"]', (els) => els.map((el) => ({
    role: el.getAttribute("data-role"),
    id: el.getAttribute("data-id"),
    streaming: el.getAttribute("data-streaming"),
    text: (el.querySelector('[data-testid="message-text"]')?.textContent ?? "").trim(),
  })));
}

/** Waits until the console says it is connected (`conn-status` `connected`). */
export async function connected(page, { timeout = 10_000 } = {}) {
  await waitState(page, "conn-status", "connected", { timeout });
}

/** The key of the selected session (`session-item[data-active=true]`), once there is one. */
export async function activeKey(page) {
  return until("a selected session", () => tid(page, "session-item", '[data-active="true"]').first().getAttribute("data-key", { timeout: 200 }));
}

/** The messages of a session as `chat.history` over HTTP gives them (up to 1000). */
export async function history(gw, sessionKey, opts) {
  return (await rpc(gw, "chat.history", { sessionKey, limit: 1000 }, opts)).messages;
}

/** Config text: the main agent's exec tool set to `exec` (`on` | `ask` | `off`). */
export function execConfig(exec) {
  return `[agents.main.tools]\nexec = "${exec}"\n`;
}
