// Starts a real clawgate binary for the tests and stops it afterwards.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, "..", "..", "..");
export const BIN = process.env.CLAWGATE_BIN ?? join(repo, "target", "debug", "clawgate");

/**
 * Starts a gateway; resolves with {url, port, dataDir, stop()}. `config` (TOML text) is written
 * to `<dataDir>/clawgate.toml`, the config file the gateway reads by default.
 */
export function startGateway({ env = {}, dataDir, port = 0, config } = {}) {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "clawgate-ts-"));
  if (config !== undefined) writeFileSync(join(dir, "clawgate.toml"), config);
  const childEnv = { ...process.env, RUST_LOG: "warn", ...env };
  if (!("CLAWGATE_TOKEN" in env)) delete childEnv.CLAWGATE_TOKEN;
  const child = spawn(BIN, ["--data-dir", dir, "--port", String(port)], { env: childEnv, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the gateway did not start within 10 s")), 10_000);
    child.on("error", reject);
    const lines = createInterface({ input: child.stdout });
    lines.once("line", (line) => {
      clearTimeout(timer);
      const url = line.replace(/^listening on /, "").trim();
      const port = Number(new URL(url).port);
      const exited = new Promise((r) => child.once("exit", r));
      resolve({
        url,
        port,
        dataDir: dir,
        async stop(signal = "SIGTERM") {
          if (child.exitCode === null) child.kill(signal);
          await exited;
        },
      });
    });
  });
}

/** The first item of an async iterator matching `pred`, within `ms`. */
export async function first(iter, pred, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = await Promise.race([iter.next(), new Promise((_, rej) => setTimeout(() => rej(new Error("timed out waiting for an item")), deadline - Date.now()))]);
    if (r.done) throw new Error("the iterator ended");
    if (pred(r.value)) return r.value;
  }
  throw new Error("timed out waiting for an item");
}
