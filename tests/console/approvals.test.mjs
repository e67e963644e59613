// Approvals in the console: with exec = "ask", a tool call waits for a click; allow runs it, deny
// makes its result an error; either way the run goes on to its answer.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  activeKey, closeBrowser, connected, execConfig, messages, rpc, send, tid, until, waitState, withConsole,
} from "./harness.mjs";

after(closeBrowser);

/** Sends the echo tool call and waits for its approval card; answers {approvalId, card}. */
async function askForExec(gw, page) {
  await connected(page);
  const key = await activeKey(page);
  await send(page, '/tool exec {"command": "echo hi"}');
  await waitState(page, "approval", "pending");
  await waitState(page, "run-state", "waiting_approval");
  const card = tid(page, "approval").first();
  const approvalId = await card.getAttribute("data-approval-id");
  const { approvals } = await rpc(gw, "approvals.list", { sessionKey: key });
  assert.deepEqual(approvals.map((a) => a.approvalId), [approvalId], "the card is the pending approval");
  await until("the card showing the time left", async () => (await card.locator('[data-testid="approval-timer"]').textContent()).trim());
  return { approvalId, card };
}

/** Waits for the one final answer starting with `prefix`; answers its text. */
async function answer(page, prefix) {
  return until(`an answer starting "${prefix}"`, async () => {
    const done = (await messages(page)).filter((m) => m.role === "assistant" && m.text.startsWith(prefix) && m.id && m.streaming !== "true");
    return done.length === 1 && done[0].text;
  });
}

test("approve a tool call: it runs and its output shows", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { config: execConfig("ask") }, async ({ gw, page }) => {
    const { approvalId, card } = await askForExec(gw, page);
    await card.locator('[data-testid="approval-allow"]').click();
    await waitState(page, "approval", "allowed");
    await waitState(page, "tool-card", "done");
    const tool = tid(page, "tool-card").first();
    assert.equal(await tool.getAttribute("data-name"), "exec");
    assert.match(await tool.locator('[data-testid="tool-output"]').textContent(), /hi/);
    assert.match(await tool.locator('[data-testid="tool-input"]').textContent(), /echo hi/);
    assert.match(await answer(page, "Tool exec returned"), /hi/);
    await waitState(page, "run-state", "idle");
    const resolved = await rpc(gw, "approvals.get", { approvalId });
    assert.equal(resolved.state, "allowed");
  });
});

test("deny a tool call: its result is an error and the run goes on", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { config: execConfig("ask") }, async ({ gw, page }) => {
    const { approvalId, card } = await askForExec(gw, page);
    await card.locator('[data-testid="approval-deny"]').click();
    await waitState(page, "approval", "denied");
    await waitState(page, "tool-card", "error");
    await answer(page, "Tool exec failed");
    await waitState(page, "run-state", "idle");
    const resolved = await rpc(gw, "approvals.get", { approvalId });
    assert.equal(resolved.state, "denied");
    assert.equal(resolved.decision, "deny");
  });
});
