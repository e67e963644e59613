// usage.summary and Session.usage, typed, against a gateway pricing the echo model.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../dist/index.js";
import { startGateway } from "./helpers.mjs";

// One USD per token: a call's cost is its token count.
const PRICED = "[prices.echo]\ninput_per_mtok = 1000000\noutput_per_mtok = 1000000\n";

let gw;
before(async () => {
  gw = await startGateway({ config: PRICED });
});
after(async () => {
  await gw?.stop();
});

test("usage.summary and Session.usage count a run's model call", async () => {
  const since = Date.now();
  const client = await Client.connect(gw.url);
  try {
    for await (const env of client.chat.stream({ message: "one two three", sessionKey: "ts-usage" })) {
      assert.equal(env.event, "chat");
    }
    const { usage } = await client.sessions.get({ key: "ts-usage" });
    assert.equal(usage.inputTokens, 3);
    assert.ok(usage.outputTokens > 0);
    assert.equal(usage.costUsd, usage.inputTokens + usage.outputTokens);
    assert.equal(usage.unpricedTokens, 0);

    const summary = await client.usage.summary({ since, agent: "main" });
    assert.deepEqual(summary.total, usage);
    assert.deepEqual(summary.byAgent.main, usage);
    assert.deepEqual(summary.byModel.echo, usage);
    assert.equal(summary.byDay.length, 1);
    assert.match(summary.byDay[0].day, /^\d{4}-\d{2}-\d{2}$/);
    assert.deepEqual(summary.byDay[0].usage, usage);

    const empty = await client.usage.summary({ agent: "other" });
    assert.equal(empty.total.inputTokens, 0);
    assert.deepEqual(empty.byDay, []);

    await assert.rejects(client.usage.summary({ since: 10, until: 5 }), (err) => {
      assert.equal(err.code, -32602);
      assert.match(err.message, /until/);
      return true;
    });
  } finally {
    client.close();
  }
});
