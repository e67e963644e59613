// The approval and run helpers against a live gateway whose exec tool asks a person first.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Client, ClawgateError, chatPayload, isKnownChatPayload, isTerminalPayload } from "../dist/index.js";
import { startGateway, first } from "./helpers.mjs";

const ASK = '[agents.main.tools]\nexec = "ask"\n';
const TOOL = '/tool exec {"command": "echo hi"}';
const here = dirname(fileURLToPath(import.meta.url));

let gw;
let n = 0;
const key = () => `ts-appr-${process.pid}-${++n}`;

before(async () => {
  gw = await startGateway({ config: ASK });
});
after(async () => {
  await gw?.stop();
});

/** Every payload of a chat.stream, typed, until it ends. */
async function payloadsOf(stream) {
  const out = [];
  for await (const env of stream) out.push(chatPayload(env));
  return out;
}

/** Bounds a promise. */
function within(promise, ms = 10_000) {
  return Promise.race([promise, new Promise((_, rej) => setTimeout(() => rej(new Error(`not settled within ${ms} ms`)), ms))]);
}

test("an approval request arrives through the iterator; approve runs the tool", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  const requests = client.approvalRequests({ sessionKey });
  try {
    const collecting = payloadsOf(client.chat.stream({ message: TOOL, sessionKey }));
    const req = await first(requests, () => true);
    assert.equal(req.state, "pending");
    assert.equal(req.name, "exec");
    assert.equal(req.sessionKey, sessionKey);
    assert.deepEqual(req.input, { command: "echo hi" });
    assert.deepEqual((await client.pendingApprovals(sessionKey)).map((a) => a.approvalId), [req.approvalId]);

    const resolved = await client.approve(req.approvalId);
    assert.equal(resolved.state, "allowed");
    assert.equal(resolved.decision, "allow");
    assert.equal(resolved.by, "local");
    await assert.rejects(client.approve(req.approvalId), (err) => err instanceof ClawgateError && err.code === -32023);

    const payloads = await within(collecting);
    const states = payloads.map((p) => p.state);
    const at = (s) => states.indexOf(s);
    assert.ok(at("approval_requested") < at("approval_resolved"));
    assert.ok(at("approval_resolved") < at("tool_start") && at("tool_start") < at("tool_end"));
    assert.equal(states.at(-1), "final");
    const asked = payloads.find((p) => p.state === "approval_requested");
    assert.equal(asked.approvalId, req.approvalId);
    assert.equal(asked.toolCallId, req.toolCallId);
    assert.equal(asked.expiresAt, req.expiresAt);
    assert.equal(asked.turn, 0);
    const answer = payloads.find((p) => p.state === "approval_resolved");
    assert.deepEqual([answer.approvalId, answer.decision, answer.by], [req.approvalId, "allow", "local"]);
    const end = payloads.find((p) => p.state === "tool_end");
    assert.equal(end.isError, false);
    assert.match(end.output, /\bhi\b/);
    assert.deepEqual(await client.pendingApprovals(sessionKey), []);
  } finally {
    await requests.return();
    client.close();
  }
});

test("deny with a reason: the tool result is an error and the run goes on", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  const requests = client.approvalRequests({ sessionKey });
  try {
    const sent = await client.send(TOOL, { sessionKey });
    const req = await first(requests, () => true);
    assert.equal(req.runId, sent.runId);
    const denied = await client.deny(req.approvalId, "not on my machine");
    assert.equal(denied.state, "denied");
    assert.equal(denied.reason, "not on my machine");

    const result = await within(client.waitForRun(sent.runId));
    assert.equal(result.outcome, "final");
    const history = await client.chat.history({ sessionKey });
    const toolMessage = history.messages.find((m) => m.role === "tool");
    assert.equal(toolMessage.isError, true);
    assert.match(toolMessage.content, /not on my machine/);
    // The same run rejoined now: its terminal payload alone.
    const again = [];
    for await (const p of client.rejoinRun(sent.runId)) again.push(p);
    assert.deepEqual(again.map((p) => p.state), ["final"]);
  } finally {
    await requests.return();
    client.close();
  }
});

test("deny: the tool_end payload has isError", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  const requests = client.approvalRequests({ sessionKey });
  try {
    const collecting = payloadsOf(client.chat.stream({ message: TOOL, sessionKey }));
    const req = await first(requests, () => true);
    await client.deny(req.approvalId, "no thanks");
    const payloads = await within(collecting);
    const end = payloads.find((p) => p.state === "tool_end");
    assert.equal(end.isError, true);
    assert.match(end.output, /no thanks/);
    const answer = payloads.find((p) => p.state === "approval_resolved");
    assert.equal(answer.decision, "deny");
    assert.equal(payloads.at(-1).state, "final");
  } finally {
    await requests.return();
    client.close();
  }
});

test("rejoinRun of a finished run yields just its terminal payload; waitForRun returns it", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  try {
    const live = await payloadsOf(client.chat.stream({ message: "hello rejoin", sessionKey }));
    const final = live.at(-1);
    assert.equal(final.state, "final");

    const rejoined = [];
    for await (const p of client.rejoinRun(final.runId)) rejoined.push(p);
    assert.equal(rejoined.length, 1);
    assert.equal(rejoined[0].state, "final");
    assert.equal(rejoined[0].runId, final.runId);
    assert.equal(rejoined[0].message.content, "Echo: hello rejoin");
    assert.ok(isTerminalPayload(rejoined[0]));

    const result = await within(client.waitForRun(final.runId));
    assert.equal(result.outcome, "final");
    assert.equal(result.sessionKey, sessionKey);
    assert.equal(result.payload.message.content, "Echo: hello rejoin");
    const entry = await client.run(final.runId);
    assert.deepEqual([entry.state, entry.outcome], ["done", "final"]);

    await assert.rejects(client.run("no-such-run"), (err) => err.code === -32022);
    const unknown = client.rejoinRun("no-such-run");
    await assert.rejects(unknown.next(), (err) => err instanceof ClawgateError && err.kind === "not_found");
  } finally {
    client.close();
  }
});

test("a run waiting for approval is active: runs(), run(), steer, then waitForRun", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  const requests = client.approvalRequests({ sessionKey });
  try {
    const collecting = payloadsOf(client.chat.stream({ message: TOOL, sessionKey }));
    const req = await first(requests, () => true);
    const waiting = await client.runs(sessionKey);
    assert.deepEqual(waiting.map((r) => [r.runId, r.state]), [[req.runId, "waiting_approval"]]);
    assert.equal((await client.run(req.runId)).state, "waiting_approval");

    const steered = await client.send("steer me", { sessionKey, mode: "steer" });
    assert.equal(steered.status, "steered");
    assert.equal(steered.runId, req.runId);

    const done = client.waitForRun(req.runId);
    await client.approve(req.approvalId);
    const result = await within(done);
    assert.equal(result.outcome, "final");
    assert.equal(result.payload.message.content, "Echo: steer me");

    const payloads = await within(collecting);
    const steer = payloads.find((p) => p.state === "steered");
    assert.equal(steer.userMessage.content, "steer me");
    assert.ok(payloads.indexOf(steer) > payloads.findIndex((p) => p.state === "tool_end"));
    assert.deepEqual(await client.runs(sessionKey), []);
  } finally {
    await requests.return();
    client.close();
  }
});

test("approvalRequests yields requests already waiting, and return() stops it at once", async () => {
  const client = await Client.connect(gw.url);
  const sessionKey = key();
  try {
    const sent = await client.send(TOOL, { sessionKey });
    // Wait until it is asked, without the iterator.
    const deadline = Date.now() + 10_000;
    while ((await client.pendingApprovals(sessionKey)).length === 0) {
      assert.ok(Date.now() < deadline, "no approval request");
      await new Promise((r) => setTimeout(r, 20));
    }
    const requests = client.approvalRequests({ sessionKey });
    const req = await first(requests, () => true);
    assert.equal(req.runId, sent.runId);
    const pending = requests.next(); // nothing more comes
    await within(requests.return(), 2000);
    assert.deepEqual(await within(pending, 2000), { value: undefined, done: true });
    await client.approve(req.approvalId, { remember: "session" });
    assert.equal((await within(client.waitForRun(sent.runId))).outcome, "final");

    // Remembered for the session: the next exec call is not asked.
    const next = await payloadsOf(client.chat.stream({ message: TOOL, sessionKey }));
    assert.ok(!next.some((p) => p.state === "approval_requested"));
    assert.equal(next.find((p) => p.state === "tool_end").isError, false);
  } finally {
    client.close();
  }
});

test("waitForRun and approvalRequests survive a gateway restart that suspends the run", async () => {
  const first_ = await startGateway({ config: ASK });
  const client = await Client.connect(first_.url, { maxBackoffMs: 200 });
  const sessionKey = key();
  const requests = client.approvalRequests({ sessionKey });
  let second;
  try {
    const sent = await client.send(TOOL, { sessionKey });
    const req = await first(requests, () => true);
    const done = client.waitForRun(sent.runId);
    await first_.stop();
    second = await startGateway({ dataDir: first_.dataDir, port: first_.port });
    // Asked again after the restart: the same approval, a fresh expiry.
    const again = await first(requests, () => true, 15_000);
    assert.equal(again.approvalId, req.approvalId);
    assert.equal(again.runId, sent.runId);
    await client.approve(again.approvalId);
    const result = await within(done, 15_000);
    assert.equal(result.outcome, "final");
    assert.equal(result.runId, sent.runId);
    const tool = (await client.chat.history({ sessionKey })).messages.find((m) => m.role === "tool");
    assert.equal(tool.isError, false);
    assert.match(tool.content, /\bhi\b/);
  } finally {
    await requests.return();
    client.close();
    await second?.stop();
    await first_.stop();
  }
});

test("chatPayload accepts states it does not know", () => {
  const p = chatPayload({ state: "brand_new", sessionKey: "k", runId: "r", runSeq: 3, extra: { a: 1 } });
  assert.equal(p.state, "brand_new");
  assert.deepEqual(p.extra, { a: 1 });
  assert.equal(isKnownChatPayload(p), false);
  assert.equal(isTerminalPayload(p), false);
  const env = { epoch: "e", seq: 1, ts: 1, event: "chat", sessionKey: "k", payload: { state: "steered", sessionKey: "k" } };
  assert.equal(chatPayload(env).state, "steered");
  assert.throws(() => chatPayload({ ...env, event: "presence" }), TypeError);
});

test("the payload union narrows on state (type check)", async () => {
  const tsc = join(here, "..", "node_modules", "typescript", "bin", "tsc");
  const fixture = join(here, "fixtures", "narrowing.ts");
  await promisify(execFile)(process.execPath, [tsc, "--noEmit", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--skipLibCheck", fixture]);
});
