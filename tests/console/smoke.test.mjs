// The harness itself, against the gateway as it is: the binary starts and restarts on its data
// directory and port, a page opens on it, and a screenshot is written for the test.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  SCREENSHOTS, closeBrowser, consoleServed, rpc, screenshotName, servesConsole, startGateway, withConsole,
} from "./harness.mjs";

after(closeBrowser);

test("smoke: the binary starts, a page opens on it, a screenshot is written", async (t) => {
  let status;
  await withConsole(t, { needsConsole: false, navigate: false }, async ({ gw, goto }) => {
    assert.match(gw.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+\/$/);
    const res = await goto("/");
    status = res.status();
    assert.ok(status === 200 || status === 405, `GET / answered ${status}`);
    // The health route is there whatever / serves.
    const health = await goto("/healthz");
    assert.equal(health.status(), 200);
    await goto("/");
  });
  const file = join(SCREENSHOTS, screenshotName(t.name));
  assert.ok(existsSync(file), `${file} was written`);
  assert.ok(statSync(file).size > 0);
  t.diagnostic(`GET / answered ${status}; screenshot ${file}`);
});

test("smoke: a gateway restarts on the same data directory and port (SIGTERM and SIGKILL)", async () => {
  const first = await startGateway({ config: "" });
  let second;
  let third;
  try {
    await rpc(first, "sessions.create", { key: "kept", label: "Kept" });
    second = await first.restart("SIGTERM");
    assert.equal(second.port, first.port);
    assert.equal((await rpc(second, "sessions.get", { key: "kept" })).label, "Kept");
    third = await second.restart("SIGKILL");
    assert.equal(third.port, first.port);
    assert.equal((await rpc(third, "sessions.get", { key: "kept" })).label, "Kept");
  } finally {
    await third?.stop("SIGKILL");
    await second?.stop("SIGKILL");
    await first.stop("SIGKILL");
  }
});

test("smoke: whether this build serves the console (the feature tests skip when it does not)", async (t) => {
  const served = await consoleServed();
  const gw = await startGateway();
  try {
    assert.equal(await servesConsole(gw), served);
  } finally {
    await gw.stop();
  }
  t.diagnostic(served ? "GET / serves the console: the feature tests run" : "GET / does not answer HTML: the feature tests skip");
});
