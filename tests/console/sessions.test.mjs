// The sessions sidebar: create (with the agent picker), switch, search, rename, delete with confirm.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  activeKey, closeBrowser, connected, messages, rpc, send, tid, until, withConsole,
} from "./harness.mjs";

after(closeBrowser);

const TWO_AGENTS = '[agents.helper]\nprovider = "echo"\n';

/** Writes one assistant message into each of `keys` (creating them) before the page opens. */
async function seed(gw, keys) {
  for (const key of keys) await rpc(gw, "chat.inject", { sessionKey: key, role: "assistant", content: `${key} says hi` });
}

/** The session-item locator of `key`. */
const item = (page, key) => tid(page, "session-item", `[data-key="${key}"]`);

/** The keys of the session items a person can see, in order. */
async function visibleKeys(page) {
  return page.locator('[data-testid="session-item"]:visible').evaluateAll((els) => els.map((el) => el.getAttribute("data-key")));
}

/** Clicks the session `key` and waits until it is the selected one with its history shown. */
async function select(page, key) {
  await item(page, key).click();
  await until(`${key} selected`, async () => (await item(page, key).getAttribute("data-active")) === "true");
  await until(`the history of ${key}`, async () => (await messages(page)).some((m) => m.text === `${key} says hi`));
}

test("sessions: create one for the agent picked", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { config: TWO_AGENTS }, async ({ gw, page }) => {
    await connected(page);
    await until("the main session listed", async () => (await item(page, "main").count()) === 1);
    const agents = await tid(page, "agent-picker").locator("option").evaluateAll((os) => os.map((o) => o.value));
    assert.deepEqual([...agents].sort(), ["helper", "main"]);
    const before = await tid(page, "session-item").count();

    await tid(page, "agent-picker").selectOption("helper");
    await tid(page, "session-new").click();
    await until("a new session selected", async () => (await tid(page, "session-item").count()) === before + 1);
    const key = await activeKey(page);
    assert.notEqual(key, "main");
    assert.equal(await item(page, key).getAttribute("data-agent"), "helper");

    await send(page, "hello helper");
    await until("the answer in the new session", async () => (await messages(page)).some((m) => m.role === "assistant" && m.text === "Echo: hello helper" && m.id));
    const session = await rpc(gw, "sessions.get", { key });
    assert.equal(session.agentId, "helper");
    const main = await rpc(gw, "chat.history", { sessionKey: "main" });
    assert.equal(main.messages.length, 0, "nothing went to main");
  });
});

test("sessions: switch between two and see each one's history", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { navigate: false }, async ({ gw, page, goto }) => {
    await seed(gw, ["s-alpha", "s-beta"]);
    await goto("/");
    await connected(page);
    await select(page, "s-beta");
    assert.equal(await tid(page, "session-item", '[data-active="true"]').count(), 1, "one session is selected");
    assert.ok(!(await messages(page)).some((m) => m.text === "s-alpha says hi"));
    await select(page, "s-alpha");
    assert.equal(await item(page, "s-beta").getAttribute("data-active") === "true", false);
    assert.ok(!(await messages(page)).some((m) => m.text === "s-beta says hi"));
  });
});

test("sessions: search filters the list", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { navigate: false }, async ({ gw, page, goto }) => {
    await seed(gw, ["fruit-apple", "fruit-banana", "veg-carrot"]);
    await rpc(gw, "sessions.patch", { key: "veg-carrot", label: "Orange roots" });
    await goto("/");
    await connected(page);
    await until("all four listed", async () => (await visibleKeys(page)).length === 4);
    const search = tid(page, "session-search");
    await search.fill("fruit");
    await until("only the fruit", async () => [...(await visibleKeys(page))].sort().join() === "fruit-apple,fruit-banana");
    await search.fill("ORANGE");
    await until("the label matches too, in any case", async () => (await visibleKeys(page)).join() === "veg-carrot");
    await search.fill("");
    await until("all four again", async () => (await visibleKeys(page)).length === 4);
  });
});

test("sessions: rename the selected one", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { navigate: false }, async ({ gw, page, goto }) => {
    await seed(gw, ["s-one"]);
    await goto("/");
    await connected(page);
    await select(page, "s-one");
    await tid(page, "session-rename").click();
    const input = tid(page, "rename-input");
    await input.fill("Renamed one");
    await tid(page, "rename-ok").click();
    await until("the label stored", async () => (await rpc(gw, "sessions.get", { key: "s-one" })).label === "Renamed one");
    await until("the label shown", async () => (await item(page, "s-one").textContent()).includes("Renamed one"));
  });
});

test("sessions: delete asks first; cancel keeps it, confirm removes it", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { navigate: false }, async ({ gw, page, goto }) => {
    await seed(gw, ["s-doomed", "s-kept"]);
    await goto("/");
    await connected(page);
    await select(page, "s-doomed");

    await tid(page, "session-delete").click();
    await tid(page, "confirm").waitFor({ state: "visible" });
    await tid(page, "confirm-cancel").click();
    await tid(page, "confirm").waitFor({ state: "hidden" });
    assert.equal(await item(page, "s-doomed").count(), 1);
    assert.equal((await rpc(gw, "sessions.get", { key: "s-doomed" })).key, "s-doomed");

    await tid(page, "session-delete").click();
    await tid(page, "confirm").waitFor({ state: "visible" });
    await tid(page, "confirm-ok").click();
    await until("the item gone", async () => (await item(page, "s-doomed").count()) === 0);
    await assert.rejects(rpc(gw, "sessions.get", { key: "s-doomed" }), (err) => err.code === -32022);
    assert.equal(await item(page, "s-kept").count(), 1, "the other session stays");
  });
});
