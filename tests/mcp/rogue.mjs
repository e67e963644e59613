#!/usr/bin/env node
// A small MCP server over stdio (plain node, one JSON-RPC message per line) for the tests of
// src/mcp: it pages its tools/list, can grow its tool list, and misbehaves on demand (crash
// mid-call, hang, garbage on stdout). It records what the tests want to see (each start, each
// `notifications/cancelled`) as lines in the file named by ROGUE_LOG, when set.
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";

const log = (line) => {
  if (process.env.ROGUE_LOG) appendFileSync(process.env.ROGUE_LOG, `${line}\n`);
};
const send = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);
const text = (t) => ({ content: [{ type: "text", text: t }] });

const object = (properties = {}) => ({ type: "object", properties });
const tools = [
  { name: "echo", description: "Echoes `text`.", inputSchema: object({ text: { type: "string" } }) },
  { name: "crash", description: "Exits in the middle of the call.", inputSchema: object() },
  { name: "hang", description: "Never answers.", inputSchema: object() },
  { name: "garbage", description: "Writes a line that is not JSON.", inputSchema: object() },
  { name: "slow", description: "Answers after `ms` milliseconds.", inputSchema: object({ ms: { type: "number" } }) },
  { name: "env", description: "Answers its environment as JSON.", inputSchema: object() },
  { name: "ask", description: "Sends the request `method` to the client and answers what came back.", inputSchema: object({ method: { type: "string" } }) },
  { name: "grow", description: "Adds a tool `extra-<n>` and announces the change.", inputSchema: object() },
  { name: "mixed", description: "Answers an image, a resource and structured content, no text.", inputSchema: object() },
  { name: "fail", description: "Answers isError: true.", inputSchema: object() },
  // Names that the gateway has to map: characters outside a-zA-Z0-9_- and a long one.
  { name: "dotted.name", description: "Answers `dotted`.", inputSchema: object() },
  { name: "x".repeat(70), description: "Answers `long`.", inputSchema: object() },
];
const PAGE = 3;
let extras = 0;
let nextRequest = 1;
const waiting = new Map(); // id of a request we sent -> the id of the tools/call it serves
const slow = new Map(); // id of a slow call -> its timer

log(`start ${process.pid}`);

function call(id, name, args) {
  switch (name) {
    case "echo":
      return send({ jsonrpc: "2.0", id, result: text(String(args.text ?? "")) });
    case "crash":
      log("crash");
      return process.exit(3);
    case "hang":
      return;
    case "garbage":
      return process.stdout.write("this is not JSON at all\n");
    case "slow": {
      const timer = setTimeout(() => {
        slow.delete(id);
        send({ jsonrpc: "2.0", id, result: text("slept") });
      }, Number(args.ms ?? 1000));
      return slow.set(id, timer);
    }
    case "env":
      return send({ jsonrpc: "2.0", id, result: text(JSON.stringify(process.env)) });
    case "ask": {
      const mine = `ask-${nextRequest++}`;
      waiting.set(mine, id);
      return send({ jsonrpc: "2.0", id: mine, method: String(args.method), params: {} });
    }
    case "grow":
      extras += 1;
      tools.push({ name: `extra-${extras}`, description: "Added by grow.", inputSchema: object() });
      send({ jsonrpc: "2.0", id, result: text(`grew to ${tools.length}`) });
      return send({ jsonrpc: "2.0", method: "notifications/tools/list_changed" });
    case "mixed":
      return send({
        jsonrpc: "2.0",
        id,
        result: {
          content: [
            { type: "image", data: "AAAAAAAA", mimeType: "image/png" },
            { type: "resource", resource: { uri: "file:///r.txt", mimeType: "text/plain", text: "hello" } },
          ],
          structuredContent: { answer: 42 },
        },
      });
    case "fail":
      return send({ jsonrpc: "2.0", id, result: { ...text("it went wrong"), isError: true } });
    case "dotted.name":
      return send({ jsonrpc: "2.0", id, result: text("dotted") });
    default:
      if (name === "x".repeat(70)) return send({ jsonrpc: "2.0", id, result: text("long") });
      if (name.startsWith("extra-")) return send({ jsonrpc: "2.0", id, result: text(name) });
      return send({ jsonrpc: "2.0", id, error: { code: -32602, message: `unknown tool ${name}` } });
  }
}

createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const msg = JSON.parse(line);
  if (msg.method === undefined) {
    // An answer to one of our requests (`ask`): hand it back as the tool's result.
    const callId = waiting.get(msg.id);
    if (callId !== undefined) {
      waiting.delete(msg.id);
      send({ jsonrpc: "2.0", id: callId, result: text(JSON.stringify(msg.error ?? msg.result)) });
    }
    return;
  }
  switch (msg.method) {
    case "initialize":
      return send({
        jsonrpc: "2.0",
        id: msg.id,
        result: {
          protocolVersion: msg.params.protocolVersion,
          capabilities: { tools: { listChanged: true } },
          serverInfo: { name: "rogue", version: "1.0.0" },
        },
      });
    case "notifications/initialized":
      return log("initialized");
    case "notifications/cancelled": {
      const id = msg.params?.requestId;
      log(`cancelled ${id} ${msg.params?.reason ?? ""}`);
      clearTimeout(slow.get(id));
      return slow.delete(id);
    }
    case "ping":
      return send({ jsonrpc: "2.0", id: msg.id, result: {} });
    case "tools/list": {
      const start = Number(msg.params?.cursor ?? 0);
      const page = tools.slice(start, start + PAGE);
      const result = { tools: page };
      if (start + PAGE < tools.length) result.nextCursor = String(start + PAGE);
      log(`list ${start}`);
      return send({ jsonrpc: "2.0", id: msg.id, result });
    }
    case "tools/call":
      return call(msg.id, msg.params.name, msg.params.arguments ?? {});
    default:
      if (msg.id !== undefined) {
        send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "method not found" } });
      }
  }
});
