// The client against a live gateway binary.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, ClawgateError } from "../dist/index.js";
import { startGateway, first } from "./helpers.mjs";

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.stop();
});

test("typed calls: hello, health, sessions", async () => {
  const client = await Client.connect(gw.url);
  try {
    const hello = await client.gateway.hello({ client: { name: "ts-test", version: "1" } });
    assert.equal(hello.protocol, 2);
    assert.ok(hello.methods.includes("chat.send"));
    const health = await client.gateway.health();
    assert.equal(health.ok, true);
    const created = await client.sessions.create({ key: "ts-1", label: "From TS" });
    assert.equal(created.key, "ts-1");
    const list = await client.sessions.list({ search: "ts-" });
    assert.equal(list.total, 1);
    assert.equal(list.sessions[0].label, "From TS");
  } finally {
    client.close();
  }
});

test("errors carry code and data.kind", async () => {
  const client = await Client.connect(gw.url);
  try {
    await assert.rejects(client.sessions.get({ key: "missing" }), (err) => {
      assert.ok(err instanceof ClawgateError);
      assert.equal(err.code, -32022);
      assert.equal(err.kind, "not_found");
      return true;
    });
    await assert.rejects(client.call("sessions.get", { key: "a/b" }), (err) => {
      assert.equal(err.code, -32602);
      assert.equal(err.data.path, "key");
      return true;
    });
  } finally {
    client.close();
  }
});

test("chat.stream is an async iterator that ends with the run", async () => {
  const client = await Client.connect(gw.url);
  try {
    const payloads = [];
    for await (const env of client.chat.stream({ message: "hello from ts", sessionKey: "ts-chat" })) {
      assert.equal(env.event, "chat");
      payloads.push(env.payload);
    }
    const states = payloads.map((p) => p.state);
    assert.equal(states[0], "started");
    assert.equal(states.at(-1), "final");
    const text = payloads.filter((p) => p.state === "delta").map((p) => p.text).join("");
    assert.equal(text, payloads.at(-1).message.content);
    assert.equal(text, "Echo: hello from ts");
  } finally {
    client.close();
  }
});

test("events.subscribe delivers sessions.changed", async () => {
  const client = await Client.connect(gw.url);
  try {
    const events = client.events.subscribe({ events: ["sessions.*"] });
    await client.sessions.create({ key: "ts-ev" });
    const env = await first(events, (e) => e.event === "sessions.changed" && e.sessionKey === "ts-ev");
    assert.equal(env.payload.reason, "created");
    await events.return();
  } finally {
    client.close();
  }
});

test("token auth", async () => {
  const secured = await startGateway({ env: { CLAWGATE_TOKEN: "ts-secret-token" } });
  try {
    await assert.rejects(Client.connect(secured.url, { reconnect: false }));
    const client = await Client.connect(secured.url, { token: "ts-secret-token" });
    assert.equal((await client.gateway.health()).ok, true);
    client.close();
  } finally {
    await secured.stop();
  }
});

test("reconnect resumes events and surfaces the restart gap", async () => {
  const first_ = await startGateway();
  const client = await Client.connect(first_.url, { maxBackoffMs: 200 });
  let second;
  try {
    const events = client.events.subscribe({ events: ["sessions.*"] });
    await client.sessions.create({ key: "before-restart" });
    await first(events, (e) => e.sessionKey === "before-restart");
    await first_.stop();
    await first(events, (e) => e.event === "shutdown");
    second = await startGateway({ dataDir: first_.dataDir, port: first_.port });
    const gap = await first(events, (e) => e.event === "gap", 15_000);
    assert.equal(gap.payload.reason, "restart");
    // Calls work again and the subscription keeps delivering.
    await client.sessions.create({ key: "after-restart" });
    const env = await first(events, (e) => e.sessionKey === "after-restart");
    assert.equal(env.payload.reason, "created");
    await events.return();
  } finally {
    client.close();
    await second?.stop();
    await first_.stop();
  }
});
