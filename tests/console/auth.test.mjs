// Token login with auth on: the login form shows, a wrong token is refused, the right one
// connects, and the token is kept in sessionStorage, never in the page's URL.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { closeBrowser, connected, messages, send, tid, until, waitState, withConsole } from "./harness.mjs";

after(closeBrowser);

const TOKEN = "console-test-token-0123456789";
const AUTH = `[gateway.auth]
mode = "token"
[[gateway.auth.tokens]]
name = "me"
token = "${TOKEN}"
scopes = ["admin"]
`;

test("token login: the form, a wrong token, the right one", { timeout: 60_000 }, async (t) => {
  await withConsole(t, { config: AUTH }, async ({ page, goto }) => {
    await waitState(page, "conn-status", "login");
    await tid(page, "login").waitFor({ state: "visible" });

    await tid(page, "token-input").fill("not-the-right-token");
    await tid(page, "login-submit").click();
    await until("login-error saying something", async () => (await tid(page, "login-error").isVisible()) && (await tid(page, "login-error").textContent()).trim());
    assert.equal(await tid(page, "conn-status").getAttribute("data-state"), "login");

    await tid(page, "token-input").fill(TOKEN);
    await tid(page, "login-submit").click();
    await connected(page);
    await tid(page, "login").waitFor({ state: "hidden" });
    assert.ok(!page.url().includes(TOKEN), `the token is not in the page URL (${page.url()})`);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("clawgate.token")), TOKEN);

    // Calls work with it.
    await send(page, "hello");
    await until("the answer", async () => (await messages(page)).some((m) => m.role === "assistant" && m.text === "Echo: hello" && m.id));

    // A reload in the same tab logs in from sessionStorage, without the form.
    await goto("/");
    await connected(page);
    assert.equal(await tid(page, "login").isVisible(), false);
    assert.ok(!page.url().includes(TOKEN));
  });
});
