// The gateway restarts under the console: it reconnects, the suspended run resumes and the whole
// history shows once; a message typed while the gateway is down is sent once when it is back.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  activeKey, closeBrowser, connected, execConfig, history, messages, record, recorded, send, tid, until,
  waitState, withConsole,
} from "./harness.mjs";

after(closeBrowser);

/** Each value of `list` that appears more than once. */
const duplicates = (list) => [...new Set(list.filter((v, i) => list.indexOf(v) !== i))];

/** Asserts the page shows the session's transcript `stored`, each message and tool call once. */
async function assertShowsHistory(page, stored) {
  const shown = await messages(page);
  const ids = shown.map((m) => m.id).filter(Boolean);
  assert.deepEqual(duplicates(ids), [], "no message is shown twice");
  assert.equal(shown.filter((m) => m.streaming === "true").length, 0, "nothing is left streaming");
  for (const m of stored) {
    if (m.role === "tool") {
      const card = tid(page, "tool-card", `[data-tool-call-id="${m.toolCallId}"]`);
      assert.equal(await card.count(), 1, `the tool call ${m.toolCallId} is shown once`);
      assert.notEqual(await card.getAttribute("data-state"), "running");
      assert.ok((await card.locator('[data-testid="tool-output"]').textContent()).includes(m.content), "the card shows the stored result");
    } else {
      assert.equal(ids.filter((id) => id === m.id).length, 1, `${m.role} message ${JSON.stringify(m.content)} is shown once`);
    }
  }
}

test("restart mid-run: the console reconnects, the run resumes and the history shows once", { timeout: 90_000 }, async (t) => {
  await withConsole(t, { config: execConfig("on") }, async (env) => {
    const { page } = env;
    await connected(page);
    const key = await activeKey(page);
    await record(page, "conn", '[data-testid="conn-status"]', "data-state");

    await send(page, '/tool exec {"command": "sleep 2; echo done"}');
    await waitState(page, "tool-card", "running");
    await env.restart("SIGTERM");
    await connected(page, { timeout: 30_000 });
    const states = await recorded(page, "conn");
    const down = states.indexOf("reconnecting");
    assert.ok(down > 0 && states.slice(down).includes("connected"), `conn-status went reconnecting, then connected: ${states.join(" → ")}`);

    // The resumed run ends with its answer (the tool call that was under way when the gateway
    // stopped gets an "interrupted" result: it is not run twice).
    await until("the resumed run's final answer", async () => (await messages(page)).some((m) => m.role === "assistant" && m.text.startsWith("Tool exec") && m.id), { timeout: 30_000 });
    await waitState(page, "run-state", "idle", { timeout: 10_000 });
    const stored = await history(env.gw, key);
    assert.deepEqual(stored.map((m) => m.role), ["user", "assistant", "tool", "assistant"]);
    await assertShowsHistory(page, stored);
    const shown = await messages(page);
    assert.equal(shown.filter((m) => m.role === "user").length, 1, "the user message once");
    assert.equal(shown.filter((m) => m.text.startsWith("Tool exec")).length, 1, "the final answer once");

    // And the same after loading the page again.
    await env.goto("/");
    await connected(page);
    await until("the history after a reload", async () => (await messages(page)).filter((m) => m.id).length >= 3);
    await assertShowsHistory(page, stored);
  });
});

test("a message typed while the gateway is down is sent once it is back", { timeout: 90_000 }, async (t) => {
  await withConsole(t, {}, async (env) => {
    const { page } = env;
    await connected(page);
    const key = await activeKey(page);
    await env.restart("SIGKILL", {
      whileDown: async () => {
        await waitState(page, "conn-status", ["reconnecting", "connecting"]);
        await send(page, "typed while down");
        await until("the outbox holds it", async () => (await tid(page, "outbox").getAttribute("data-count")) === "1");
        // Let a reconnect attempt or two fail while it waits.
        await new Promise((r) => setTimeout(r, 1_000));
        assert.equal(await tid(page, "outbox").getAttribute("data-count"), "1");
      },
    });
    await connected(page, { timeout: 30_000 });
    await until("the outbox emptied", async () => (await tid(page, "outbox").getAttribute("data-count")) === "0", { timeout: 15_000 });
    await until("its answer", async () => (await messages(page)).some((m) => m.role === "assistant" && m.text === "Echo: typed while down" && m.id), { timeout: 15_000 });
    // Give a duplicate send time to show itself.
    await new Promise((r) => setTimeout(r, 1_000));
    const stored = await history(env.gw, key);
    assert.equal(stored.filter((m) => m.role === "user" && m.content === "typed while down").length, 1, "chat.history has it once");
    assert.equal(stored.filter((m) => m.role === "assistant").length, 1, "one run answered it");
    assert.equal((await messages(page)).filter((m) => m.role === "user" && m.text === "typed while down").length, 1, "the page shows it once");
  });
});
