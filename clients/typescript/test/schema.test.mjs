// schema/openrpc.json is a valid OpenRPC document, complete enough to generate SDKs from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import Ajv from "ajv";
import metaSchemaModule from "@open-rpc/meta-schema";
import jsonSchemaToolsMeta from "@json-schema-tools/meta-schema";
import { repo } from "./helpers.mjs";

const doc = JSON.parse(readFileSync(join(repo, "schema", "openrpc.json"), "utf8"));

test("validates against the OpenRPC meta-schema", () => {
  const meta = structuredClone(metaSchemaModule.default ?? metaSchemaModule);
  delete meta.$schema; // a custom meta-meta-schema URL; the content is draft-07
  const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  // The OpenRPC meta-schema refers to this JSON Schema meta-schema by its URL.
  for (const url of ["https://meta.json-schema.tools", "https://meta.json-schema.tools/"]) {
    const jsonMeta = structuredClone(jsonSchemaToolsMeta.default ?? jsonSchemaToolsMeta);
    delete jsonMeta.$schema;
    delete jsonMeta.$id;
    ajv.addSchema(jsonMeta, url);
  }
  const validate = ajv.compile(meta);
  const ok = validate(doc);
  assert.ok(ok, JSON.stringify(validate.errors?.slice(0, 5), null, 2));
  assert.equal(doc.openrpc, "1.3.2");
});

test("every method is documented, scoped and exemplified", () => {
  for (const m of doc.methods) {
    assert.ok(m.summary, `${m.name} has a summary`);
    assert.ok(["read", "write", "admin"].includes(m["x-scope"]), `${m.name} has x-scope`);
    assert.ok(m.examples.length >= 1, `${m.name} has an example`);
    assert.ok(Array.isArray(m.errors) && m.errors.length >= 1, `${m.name} lists its errors`);
  }
  const subs = doc.methods.filter((m) => m["x-subscription"]);
  assert.deepEqual(subs.map((m) => m.name).sort(), ["chat.stream", "events.subscribe", "logs.tail"]);
  for (const s of subs) {
    assert.ok(s["x-subscription"].notification && s["x-subscription"].unsubscribe && s["x-subscription"].item);
  }
  const events = doc["x-events"].map((e) => e.name);
  for (const e of ["tick", "gap", "shutdown", "presence", "health", "sessions.changed", "chat"]) {
    assert.ok(events.includes(e), `x-events lists ${e}`);
  }
});

test("every component schema that becomes a type has a title", () => {
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    assert.ok(schema.title, `components.schemas.${name} has a title`);
  }
});

test("every generated enum type is open: its known values | (string & {})", () => {
  const generated = readFileSync(join(repo, "clients", "typescript", "src", "generated.ts"), "utf8");
  // A string-literal union, e.g. `export type ApprovalState = "pending" | "allowed" | "denied"`.
  // Prettier may break a long one after the `=`.
  const unions = [...generated.matchAll(/^export type (\w+) =\s+(\|?\s*"[^;]*);$/gm)].map(([all, name, type]) => [
    all,
    name,
    type.replace(/\s+/g, " "),
  ]);
  const names = new Set(unions.map((m) => m[1].replace(/\d+$/, "")));
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    const variants = schema.oneOf ?? schema.anyOf ?? [];
    if (variants.length > 0 && variants.every((v) => typeof v.const === "string")) {
      assert.ok(names.has(name), `${name} is generated as a string-literal union`);
    }
  }
  assert.ok(unions.length > 0);
  for (const [, name, type] of unions) {
    assert.ok(type.endsWith(" | (string & {})"), `${name} is open: ${type}`);
  }
});

test("open enums type-check: unknown values pass, known ones narrow (type check)", async () => {
  const tsc = join(repo, "clients", "typescript", "node_modules", "typescript", "bin", "tsc");
  const fixture = join(repo, "clients", "typescript", "test", "fixtures", "open-enums.ts");
  await promisify(execFile)(process.execPath, [tsc, "--noEmit", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--skipLibCheck", fixture]);
});
