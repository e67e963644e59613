// node --test console/test/*.test.mjs: the JSON → TOML renderer of config.get's configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toToml, tomlString, tomlKey } from '../toml.js';

test('plain keys first, then tables, then arrays of tables', () => {
  const text = toToml({
    gateway: { port: 18789, bind: '127.0.0.1', auth: { mode: 'token', tokens: [{ name: 'a', token: '<redacted>', scopes: ['admin'] }] } },
    plugins: [],
    agents: { main: { provider: 'echo', tools: { exec: 'ask', deny: ['rm*'] } } },
    debug: false,
    ratio: 0.8,
  });
  assert.equal(
    text,
    [
      'plugins = []',
      'debug = false',
      'ratio = 0.8',
      '',
      '[gateway]',
      'port = 18789',
      'bind = "127.0.0.1"',
      '',
      '[gateway.auth]',
      'mode = "token"',
      '',
      '[[gateway.auth.tokens]]',
      'name = "a"',
      'token = "<redacted>"',
      'scopes = ["admin"]',
      '',
      '[agents.main]',
      'provider = "echo"',
      '',
      '[agents.main.tools]',
      'exec = "ask"',
      'deny = ["rm*"]',
      '',
    ].join('\n'),
  );
});

test('strings and keys are escaped', () => {
  assert.equal(tomlString('a "q" \\ \n\t\u0001\u007f é'), '"a \\"q\\" \\\\ \\n\\t\\u0001\\u007F é"');
  assert.equal(tomlKey('plain_key-1'), 'plain_key-1');
  assert.equal(tomlKey('has.dot'), '"has.dot"');
  assert.equal(tomlKey(''), '""');
  assert.equal(toToml({ 'mcp servers': { 'x.y': { url: 'http://h' } } }), '[\"mcp servers\".\"x.y\"]\nurl = "http://h"\n');
});

test('null is a comment, mixed arrays are inline, empty tables keep their header', () => {
  assert.equal(toToml({ a: null, b: { c: null } }), '# a is not set\n\n[b]\n# c is not set\n');
  assert.equal(toToml({ m: [1, 'two', { three: 3 }, [4], null] }), 'm = [1, "two", { three = 3 }, [4]]\n');
  assert.equal(toToml({ env: {} }), '[env]\n');
  assert.equal(toToml({ n: Infinity, o: -Infinity, p: NaN }), 'n = inf\no = -inf\np = nan\n');
  assert.equal(toToml({}), '');
  assert.equal(toToml(5), 'value = 5\n');
});

test('arrays of tables nest their sub-tables under the last entry', () => {
  assert.equal(
    toToml({ plugins: [{ name: 'p1', env: { A: '1' } }, { name: 'p2' }] }),
    '[[plugins]]\nname = "p1"\n\n[plugins.env]\nA = "1"\n\n[[plugins]]\nname = "p2"\n',
  );
});
