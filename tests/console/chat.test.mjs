// Chatting in the console: a message streams its answer; a run is aborted by the button and by Esc.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  activeKey, closeBrowser, connected, execConfig, history, messages, record, recorded, rpc, send, tid, until,
  waitState, withConsole,
} from "./harness.mjs";

after(closeBrowser);

test("send a message and see its answer stream", { timeout: 60_000 }, async (t) => {
  await withConsole(t, {}, async ({ gw, page }) => {
    await connected(page);
    const key = await activeKey(page);
    await record(page, "streaming", '[data-testid="message"][data-role="assistant"]', "data-streaming");
    await record(page, "run", '[data-testid="run-state"]', "data-state");
    assert.equal(await tid(page, "run-state").getAttribute("data-state"), "idle");

    await send(page, "hello");
    const answer = await until("the answer 'Echo: hello', streamed and then written", async () => {
      const done = (await messages(page)).filter((m) => m.role === "assistant" && m.text === "Echo: hello" && m.streaming !== "true" && m.id);
      return done.length === 1 && done[0];
    });
    await waitState(page, "run-state", "idle");

    assert.ok((await recorded(page, "streaming")).includes("true"), "the answer carried data-streaming=\"true\" while its deltas arrived");
    assert.ok((await recorded(page, "run")).includes("running"), "run-state was running during the run");
    assert.equal(await tid(page, "message", '[data-streaming="true"]').count(), 0, "nothing streams any more");
    assert.equal(await tid(page, "composer").inputValue(), "", "the composer was emptied");

    const shown = await messages(page);
    assert.deepEqual(shown.filter((m) => m.role === "user").map((m) => m.text), ["hello"]);
    const stored = await history(gw, key);
    assert.deepEqual(stored.map((m) => [m.role, m.content]), [["user", "hello"], ["assistant", "Echo: hello"]]);
    assert.equal(answer.id, stored[1].id, "the streamed message took its transcript id");
    assert.equal(shown.find((m) => m.role === "user").id, stored[0].id);
  });
});

for (const how of ["button", "Esc"]) {
  test(`abort a run with the ${how}`, { timeout: 60_000 }, async (t) => {
    await withConsole(t, { config: execConfig("on") }, async ({ gw, page, goto }) => {
      await connected(page);
      const key = await activeKey(page);
      assert.equal(await tid(page, "abort").isEnabled(), false, "abort is disabled while no run is active");

      await send(page, '/tool exec {"command": "sleep 30"}');
      await waitState(page, "run-state", "running");
      await waitState(page, "tool-card", "running");
      const callId = await tid(page, "tool-card").first().getAttribute("data-tool-call-id");
      const { runs } = await rpc(gw, "runs.list", { sessionKey: key });
      assert.equal(runs.length, 1);

      if (how === "button") {
        await until("abort enabled", () => tid(page, "abort").isEnabled());
        await tid(page, "abort").click();
      } else {
        await tid(page, "composer").focus();
        await page.keyboard.press("Escape");
      }
      await waitState(page, "run-state", "idle", { timeout: 5_000 });
      await waitState(page, "tool-card", "error", { timeout: 5_000 });
      assert.equal(await tid(page, "abort").isEnabled(), false, "abort is disabled again");
      assert.equal((await rpc(gw, "runs.get", { runId: runs[0].runId })).outcome, "aborted");
      const result = (await history(gw, key)).find((m) => m.role === "tool" && m.toolCallId === callId);
      assert.ok(result?.aborted, "the transcript marks the cut-short call aborted");

      // The history, read again from scratch, shows the run aborted too.
      await goto("/");
      await connected(page);
      const card = tid(page, "tool-card", `[data-tool-call-id="${callId}"]`);
      await until("the tool card from the history", async () => (await card.count()) === 1);
      assert.equal(await card.getAttribute("data-state"), "error");
      assert.match(await card.locator('[data-testid="tool-output"]').textContent(), /aborted/);
      assert.equal(await tid(page, "run-state").getAttribute("data-state"), "idle");
    });
  });
}
