// The console's benchmark as a test: it prints the figures (times are never asserted: they depend
// on the machine) and checks the size budget, JS + CSS at most 150 KB gzipped.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { closeBrowser, consoleServed, NO_CONSOLE } from "./harness.mjs";
import { bench, jsonLines, SIZE_BUDGET, table } from "./bench.mjs";

after(closeBrowser);

test("benchmark: 200 messages rendered after navigation; JS + CSS within 150 KB gzipped", { timeout: 120_000 }, async (t) => {
  if (!(await consoleServed())) {
    t.skip(NO_CONSOLE);
    return;
  }
  const r = await bench({ runs: 20, messages: 200 });
  assert.ok(r.served);
  for (const line of `${table(r)}\n${jsonLines(r)}`.split("\n")) t.diagnostic(line);
  assert.ok(r.assets.some((a) => a.path.endsWith(".js")), "the console's JavaScript was found");
  assert.ok(r.shown > 0, "the history was in the DOM at the mark");
  assert.ok(r.totalGzip <= SIZE_BUDGET, `JS + CSS gzipped is ${r.totalGzip} bytes, over the budget of ${SIZE_BUDGET}`);
});
