// The console's benchmark: the time from navigation to a rendered history of 200 messages
// (the app's performance mark `clawgate:history-rendered`, read in the browser), and the
// gzipped size of the console's JavaScript and CSS as the gateway serves them.
//
// Run by hand: `node tests/console/bench.mjs [--runs 20] [--messages 200]` (after
// tests/console/run.sh installed chromium and playwright-core). Prints a Markdown table on
// stdout and one JSON object per figure on stderr ({scenario, figure, value, unit}), like the
// Rust benchmarks. bench.test.mjs runs it too and prints the figures without asserting times.
import { gzipSync } from "node:zlib";
import { pathToFileURL } from "node:url";
import { browser, closeBrowser, rpc, servesConsole, startGateway } from "./harness.mjs";

/** The name of the app's performance mark. */
export const MARK = "clawgate:history-rendered";
/** The budget of the console's JS + CSS, gzipped, in bytes (150 KB). */
export const SIZE_BUDGET = 150_000;

/** The p-th percentile (nearest rank) of `values`. */
export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** The content of message `i` of the benchmark's history: prose, some Markdown, a code block. */
function content(i) {
  let text = `Message ${i}: the quick brown fox jumps over the lazy dog, with **bold**, _emphasis_ and \`code\`.`;
  if (i % 5 === 0) text += "\n\n- one item\n- another item\n- a third";
  if (i % 10 === 0) text += `\n\n\`\`\`js\nconst value = ${i};\nconsole.log(value * 2);\n\`\`\``;
  return text;
}

/** Writes `count` messages into session `key` with chat.inject, in batches over HTTP POST. */
export async function fill(gw, key, count) {
  for (let start = 0; start < count; start += 50) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + 50); i++) {
      batch.push({
        jsonrpc: "2.0",
        id: i,
        method: "chat.inject",
        params: { sessionKey: key, role: i % 20 === 19 ? "system" : "assistant", content: content(i) },
      });
    }
    const res = await fetch(gw.url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(batch) });
    const answers = await res.json();
    const failed = answers.find((a) => a.error);
    if (failed) throw new Error(`chat.inject failed: ${JSON.stringify(failed.error)}`);
  }
  const { messages } = await rpc(gw, "chat.history", { sessionKey: key, limit: 1000 });
  if (messages.length !== count) throw new Error(`expected ${count} messages in ${key}, found ${messages.length}`);
}

/**
 * One navigation in a fresh browser context: the mark's time (ms since navigation), messages
 * shown and the /console/ assets loaded. The mark is reported by a PerformanceObserver the
 * context installs before the page starts, through a console message, so nothing polls the page
 * meanwhile: Playwright's own evaluation (its injected script is compiled in the page at the first
 * `evaluate`, ~20 ms of the page's main thread) comes after the mark, not on the measured path.
 */
async function loadOnce(b, url) {
  const context = await b.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await context.addInitScript((mark) => {
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) if (e.name === mark) console.debug(`${mark} ${e.startTime}`);
      }).observe({ type: "mark" });
    }, MARK);
    const page = await context.newPage();
    const assets = new Set();
    page.on("response", (res) => {
      const u = new URL(res.url());
      if (res.ok() && u.pathname.startsWith("/console/") && /\.(m?js|css)$/.test(u.pathname)) assets.add(u.pathname);
    });
    const marked = page.waitForEvent("console", { predicate: (m) => m.text().startsWith(`${MARK} `), timeout: 15_000 });
    await page.goto(url);
    const ms = Number((await marked).text().slice(MARK.length + 1));
    const shown = await page.evaluate(() => document.querySelectorAll('[data-testid="message"]').length);
    return { ms, shown, assets };
  } finally {
    await context.close();
  }
}

/** The raw and gzipped (level 9) size of each asset path, fetched from the gateway. */
async function sizes(gw, paths) {
  const out = [];
  for (const path of [...paths].sort()) {
    const res = await fetch(new URL(path, gw.url));
    const body = Buffer.from(await res.arrayBuffer());
    if (!res.ok) throw new Error(`GET ${path} answered ${res.status}: the page names an asset the gateway does not serve`);
    out.push({ path, bytes: body.length, gzip: gzipSync(body, { level: 9 }).length });
  }
  return out;
}

/** The `<script src>` and stylesheet `<link href>` paths under /console/ named by the page. */
async function linkedAssets(gw) {
  const html = await (await fetch(gw.url)).text();
  const paths = new Set();
  for (const m of html.matchAll(/<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']/gi)) {
    const u = new URL(m[1], gw.url);
    if (u.pathname.startsWith("/console/") && /\.(m?js|css)$/.test(u.pathname)) paths.add(u.pathname);
  }
  return paths;
}

/**
 * Runs the benchmark on a gateway of its own: `messages` in session main, one warm-up load,
 * then `runs` loads. Answers `{runs, messages, times, p50, p90, min, max, shown, assets,
 * totalGzip, totalBytes}`, or `{served: false}` when the build does not serve the console.
 */
export async function bench({ runs = 20, messages = 200 } = {}) {
  const gw = await startGateway();
  try {
    if (!(await servesConsole(gw))) return { served: false };
    await fill(gw, "main", messages);
    const b = await browser();
    const warm = await loadOnce(b, gw.url);
    const paths = new Set([...warm.assets, ...(await linkedAssets(gw))]);
    const times = [];
    let shown = warm.shown;
    for (let i = 0; i < runs; i++) {
      const r = await loadOnce(b, gw.url);
      times.push(r.ms);
      shown = r.shown;
      for (const p of r.assets) paths.add(p);
    }
    const assets = await sizes(gw, paths);
    return {
      served: true,
      runs,
      messages,
      times,
      p50: percentile(times, 50),
      p90: percentile(times, 90),
      min: Math.min(...times),
      max: Math.max(...times),
      shown,
      assets,
      totalBytes: assets.reduce((s, a) => s + a.bytes, 0),
      totalGzip: assets.reduce((s, a) => s + a.gzip, 0),
    };
  } finally {
    await gw.stop();
  }
}

/** The figures as a Markdown table. */
export function table(r) {
  const kb = (n) => (n / 1000).toFixed(1);
  const lines = [
    `| figure | value |`,
    `|---|---:|`,
    `| navigation → \`${MARK}\`, ${r.messages} messages, p50 | ${r.p50.toFixed(1)} ms |`,
    `| same, p90 | ${r.p90.toFixed(1)} ms |`,
    `| same, min / max of ${r.runs} runs | ${r.min.toFixed(1)} / ${r.max.toFixed(1)} ms |`,
    `| messages in the DOM at the mark | ${r.shown} |`,
  ];
  for (const a of r.assets) lines.push(`| \`${a.path}\` raw / gzip -9 | ${kb(a.bytes)} / ${kb(a.gzip)} KB |`);
  lines.push(`| **JS + CSS gzipped (budget ${kb(SIZE_BUDGET)} KB)** | **${kb(r.totalGzip)} KB** |`);
  return lines.join("\n");
}

/** The figures as JSON lines, one per figure. */
export function jsonLines(r) {
  const f = (figure, value, unit) => JSON.stringify({ scenario: "console", figure, value, unit });
  return [
    f("history_rendered_p50", Number(r.p50.toFixed(2)), "ms"),
    f("history_rendered_p90", Number(r.p90.toFixed(2)), "ms"),
    f("messages_shown", r.shown, "messages"),
    f("assets_gzip", r.totalGzip, "bytes"),
    f("assets_raw", r.totalBytes, "bytes"),
  ].join("\n");
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  try {
    const r = await bench({ runs: arg("runs", 20), messages: arg("messages", 200) });
    if (!r.served) {
      console.error("the web console is not served by this build (GET / does not answer HTML): nothing to measure");
      process.exitCode = 1;
    } else {
      console.log(table(r));
      console.error(jsonLines(r));
    }
  } finally {
    await closeBrowser();
  }
}
