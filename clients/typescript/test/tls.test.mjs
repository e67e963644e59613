// wss:// to a gateway with a self-signed certificate: pinned by its fingerprint, trusted
// through a CA file, and a wrong pin refused before any byte of the upgrade request (the
// token) reaches the server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { X509Certificate, createHash } from "node:crypto";
import { join } from "node:path";
import tls from "node:tls";
import { Client, TlsFingerprintError } from "../dist/index.js";
import { startGateway } from "./helpers.mjs";

let gw;
let fingerprint;
before(async () => {
  gw = await startGateway({ config: "[gateway.tls]\nself_signed = true\n" });
  const pem = readFileSync(join(gw.dataDir, "tls", "cert.pem"));
  fingerprint = createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");
});
after(async () => {
  await gw?.stop();
});

test("the gateway announces wss://", () => {
  assert.match(gw.url, /^wss:\/\//);
});

test("a pinned fingerprint connects, and gateway.status names it", async () => {
  const client = await Client.connect(gw.url, { tlsFingerprint: fingerprint, reconnect: false });
  try {
    const status = await client.gateway.status();
    assert.equal(status.tls?.fingerprintSha256, fingerprint);
  } finally {
    await client.close();
  }
  // Upper case with colons is the same pin.
  const colons = fingerprint.toUpperCase().match(/../g).join(":");
  const again = await Client.connect(gw.url, { tlsFingerprint: colons, reconnect: false });
  await again.close();
});

test("a CA file connects with normal verification", async () => {
  const ca = join(gw.dataDir, "tls", "cert.pem");
  const client = await Client.connect(gw.url, { tlsCaFile: ca, reconnect: false });
  try {
    const health = await client.gateway.health();
    assert.equal(health.ok, true);
  } finally {
    await client.close();
  }
});

test("without a pin or a CA the self-signed certificate is refused", async () => {
  await assert.rejects(Client.connect(gw.url, { reconnect: false }));
});

test("a wrong pin is refused before any byte of the request is sent", async () => {
  // A TLS server of our own, with the gateway's certificate, counting the bytes it receives.
  const key = readFileSync(join(gw.dataDir, "tls", "key.pem"));
  const cert = readFileSync(join(gw.dataDir, "tls", "cert.pem"));
  let received = 0;
  const server = tls.createServer({ key, cert }, (socket) => {
    socket.on("data", (chunk) => { received += chunk.length; });
    socket.on("error", () => {});
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const wrong = fingerprint.startsWith("00") ? "11" + fingerprint.slice(2) : "00" + fingerprint.slice(2);
  try {
    await assert.rejects(
      Client.connect(`wss://127.0.0.1:${port}/`, { tlsFingerprint: wrong, token: "a-secret-token-never-sent", reconnect: false }),
      (err) => {
        assert.ok(err instanceof TlsFingerprintError, String(err));
        assert.equal(err.expected, wrong);
        assert.equal(err.presented, fingerprint);
        return true;
      },
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(received, 0, "request bytes reached the server");
  } finally {
    server.close();
  }
});
