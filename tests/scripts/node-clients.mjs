// node-redis (npm `redis`, 5 or later) and ioredis against two running dice nodes, A and B
// (B a peer of A), each with its default options (node-redis 6 and ioredis 6 open with
// HELLO 3, so RESP3; their 5.x speak RESP2) and again with RESP2 asked for.
//
// The same scenario for each: basics (set/get/mget/del/exists), TTLs, a pipeline, a
// transaction, WATCH aborted by another connection's write, a value written on A read on
// B, WAIT, pub/sub across nodes, keyspace notifications for a write on the other node,
// counters incremented on both nodes, and error replies. Then node-redis's client-side cache (RESP3): a read on A is
// served from the cache until a write or a delete on B invalidates it. Exits non-zero on
// the first failure.
//
// Usage: node node-clients.mjs DEPS_DIR HOST_A PORT_A HOST_B PORT_B PASSWORD
//   DEPS_DIR holds node_modules with `redis` and `ioredis` (see node-clients.sh, which
//   installs them and starts the nodes).

import { createRequire } from 'node:module';
import path from 'node:path';
import assert from 'node:assert/strict';

const [deps, hostA, portA, hostB, portB, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: node node-clients.mjs DEPS_DIR HOST_A PORT_A HOST_B PORT_B PASSWORD');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(deps), 'package.json'));
const nodeRedis = require('redis');
const Redis = require('ioredis');
const versions = {
  'node-redis': require('redis/package.json').version,
  ioredis: require('ioredis/package.json').version,
};

function ok(what) {
  console.log(`ok   ${what}`);
}
function check(what, expected, got) {
  assert.deepEqual(got, expected, what);
  ok(what);
}
async function expectError(what, promise, text) {
  try {
    const got = await promise;
    assert.fail(`${what}: expected an error containing ${JSON.stringify(text)}, got ${JSON.stringify(got)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(String(e.message).includes(text), `${what}: error ${e.message} lacks ${JSON.stringify(text)}`);
    ok(what);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function eventually(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return ok(what);
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

// What the scenario needs of a client, written once per library.
const adapters = {
  'node-redis': (RESP) => ({
    async connect(host, port) {
      const opts = { socket: { host, port: Number(port) }, password };
      if (RESP) opts.RESP = RESP;
      const c = nodeRedis.createClient(opts);
      c.on('error', (e) => console.error(`node-redis client error: ${e.message}`));
      await c.connect();
      return c;
    },
    raw: (c, ...args) => c.sendCommand(args.map(String)),
    set: (c, k, v, opts) => c.set(k, v, opts?.ex ? { EX: opts.ex } : opts?.px ? { PX: opts.px } : undefined),
    get: (c, k) => c.get(k),
    mget: (c, ...ks) => c.mGet(ks),
    del: (c, ...ks) => c.del(ks),
    exists: (c, ...ks) => c.exists(ks),
    ttl: (c, k) => c.ttl(k),
    pipeline: (c, build) => {
      const p = c.multi();
      build({ set: (k, v) => p.set(k, v), get: (k) => p.get(k), exists: (...ks) => p.exists(ks) });
      return p.execAsPipeline();
    },
    transaction: (c, build) => {
      const m = c.multi();
      build({ set: (k, v) => m.set(k, v), get: (k) => m.get(k), append: (k, v) => m.append(k, v) });
      return m.exec();
    },
    // Resolves to 'aborted' when EXEC is aborted by WATCH.
    async watched(c, key, conflict) {
      const iso = await c.duplicate().connect();
      try {
        await iso.watch(key);
        const current = await iso.get(key);
        await conflict();
        try {
          await iso.multi().set(key, current + '-mine').exec();
          return 'ran';
        } catch (e) {
          if (e instanceof nodeRedis.WatchError || e?.name === 'WatchError') return 'aborted';
          throw e;
        }
      } finally {
        iso.destroy();
      }
    },
    wait: (c, n, ms) => c.wait(n, ms),
    close: (c) => c.quit(),
    // A subscriber connection: `received` fills with {channel, message}.
    async subscriber(host, port) {
      const opts = { socket: { host, port: Number(port) }, password };
      if (RESP) opts.RESP = RESP;
      const c = nodeRedis.createClient(opts);
      c.on('error', (e) => console.error(`node-redis subscriber error: ${e.message}`));
      await c.connect();
      const received = [];
      return {
        received,
        subscribe: (ch) => c.subscribe(ch, (message, channel) => received.push({ channel, message })),
        close: () => c.quit(),
      };
    },
  }),
  ioredis: (protocol) => ({
    async connect(host, port) {
      const opts = { host, port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 1 };
      if (protocol) opts.protocol = protocol;
      const c = new Redis(opts);
      c.on('error', (e) => console.error(`ioredis client error: ${e.message}`));
      await c.connect();
      return c;
    },
    raw: (c, ...args) => c.call(...args.map(String)),
    set: (c, k, v, opts) => (opts?.ex ? c.set(k, v, 'EX', opts.ex) : opts?.px ? c.set(k, v, 'PX', opts.px) : c.set(k, v)),
    get: (c, k) => c.get(k),
    mget: (c, ...ks) => c.mget(...ks),
    del: (c, ...ks) => c.del(...ks),
    exists: (c, ...ks) => c.exists(...ks),
    ttl: (c, k) => c.ttl(k),
    async pipeline(c, build) {
      const p = c.pipeline();
      build({ set: (k, v) => p.set(k, v), get: (k) => p.get(k), exists: (...ks) => p.exists(...ks) });
      const res = await p.exec();
      for (const [err] of res) if (err) throw err;
      return res.map(([, v]) => v);
    },
    async transaction(c, build) {
      const m = c.multi();
      build({ set: (k, v) => m.set(k, v), get: (k) => m.get(k), append: (k, v) => m.append(k, v) });
      const res = await m.exec();
      return res.map(([, v]) => v);
    },
    async watched(c, key, conflict) {
      const iso = c.duplicate();
      try {
        await iso.watch(key);
        const current = await iso.get(key);
        await conflict();
        const res = await iso.multi().set(key, current + '-mine').exec();
        return res === null ? 'aborted' : 'ran';
      } finally {
        iso.disconnect();
      }
    },
    wait: (c, n, ms) => c.wait(n, ms),
    close: (c) => c.quit(),
    async subscriber(host, port) {
      const opts = { host, port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 1 };
      if (protocol) opts.protocol = protocol;
      const c = new Redis(opts);
      c.on('error', (e) => console.error(`ioredis subscriber error: ${e.message}`));
      await c.connect();
      const received = [];
      c.on('message', (channel, message) => received.push({ channel: String(channel), message: String(message) }));
      return { received, subscribe: (ch) => c.subscribe(ch), close: () => c.quit() };
    },
  }),
};

async function scenario(name, label, api) {
  const t = (s) => `[${name} ${versions[name]}, ${label}] ${s}`;
  console.log(`-- ${name} ${versions[name]}, ${label}`);
  const a = await api.connect(hostA, portA);
  const other = await api.connect(hostA, portA);
  const b = await api.connect(hostB, portB);
  const p = `${name}:${label}:`;

  // The protocol the connection speaks.
  const hello = await api.raw(a, 'HELLO');
  const proto = Array.isArray(hello)
    ? hello[hello.findIndex((x) => String(x) === 'proto') + 1]
    : (hello.proto ?? hello.get?.('proto'));
  check(t('the connection speaks'), label.includes('RESP2') ? 2 : 3, Number(proto));

  // Basics.
  check(t('set'), 'OK', await api.set(a, `${p}a`, '1'));
  check(t('get'), '1', await api.get(a, `${p}a`));
  check(t('get of a missing key'), null, await api.get(a, `${p}missing`));
  await api.set(a, `${p}b`, '2');
  check(t('mget with a miss'), ['1', null, '2'], await api.mget(a, `${p}a`, `${p}nope`, `${p}b`));
  check(t('exists'), 2, await api.exists(a, `${p}a`, `${p}b`, `${p}nope`));
  check(t('del'), 1, await api.del(a, `${p}b`, `${p}nope`));
  check(t('exists after del'), 0, await api.exists(a, `${p}b`));

  // TTLs.
  await api.set(a, `${p}session`, 'alice', { ex: 100 });
  const ttl = await api.ttl(a, `${p}session`);
  assert.ok(ttl > 0 && ttl <= 100, `ttl ${ttl}`);
  ok(t('ttl in (0, 100]'));
  check(t('ttl without expiry'), -1, await api.ttl(a, `${p}a`));
  check(t('ttl of a missing key'), -2, await api.ttl(a, `${p}missing`));
  await api.set(a, `${p}short`, 'v', { px: 150 });
  await eventually(t('a key with PX 150 expires'), async () => (await api.get(a, `${p}short`)) === null);

  // A pipeline (no MULTI): replies in order.
  const piped = await api.pipeline(a, (q) => {
    for (let i = 0; i < 50; i++) q.set(`${p}k${i}`, `v${i}`);
    q.get(`${p}k7`);
    q.exists(`${p}k1`, `${p}k2`, `${p}nope`);
  });
  check(t('pipeline writes'), Array(50).fill('OK'), piped.slice(0, 50));
  check(t('pipeline reads'), ['v7', 2], piped.slice(50));

  // A transaction.
  check(
    t('transaction'),
    ['OK', 3, '123', null],
    await api.transaction(a, (m) => {
      m.set(`${p}tx`, '1');
      m.append(`${p}tx`, '23');
      m.get(`${p}tx`);
      m.get(`${p}tx-missing`);
    }),
  );
  // WATCH, then another connection writes the key: EXEC aborts.
  check(
    t('WATCH: a conflicting write aborts EXEC'),
    'aborted',
    await api.watched(a, `${p}tx`, () => api.set(other, `${p}tx`, 'theirs')),
  );
  check(t('the other connection\'s write stands'), 'theirs', await api.get(a, `${p}tx`));
  check(t('WATCH without a conflict: EXEC runs'), 'ran', await api.watched(a, `${p}tx`, async () => {}));
  check(t('its write'), 'theirs-mine', await api.get(a, `${p}tx`));

  // Written on A, read on B; WAIT says when B acknowledged it.
  await api.set(a, `${p}across`, 'from A');
  check(t('WAIT 1 5000 after a write: B acknowledged it'), 1, await api.wait(a, 1, 5000));
  check(t('read on B right after WAIT'), 'from A', await api.get(b, `${p}across`));
  await eventually(t('B has the pipeline\'s writes'), async () => (await api.get(b, `${p}k49`)) === 'v49');
  await api.set(b, `${p}back`, 'from B');
  await eventually(t('written on B, read on A'), async () => (await api.get(a, `${p}back`)) === 'from B');

  // Pub/sub across nodes: subscribed on B, published on A (again until the subscription
  // has reached A's gossip mesh).
  const sub = await api.subscriber(hostB, portB);
  await sub.subscribe(`${p}news`);
  await eventually(t('a message published on A reaches a subscriber on B'), async () => {
    await api.raw(a, 'PUBLISH', `${p}news`, 'hello');
    return sub.received.some((m) => m.channel === `${p}news` && m.message === 'hello');
  });
  // Keyspace notifications on B for a write made on A.
  check(t('CONFIG SET notify-keyspace-events on B'), 'OK', String(await api.raw(b, 'CONFIG', 'SET', 'notify-keyspace-events', 'KEA')));
  await sub.subscribe(`__keyspace@0__:${p}watched`);
  await eventually(t('a write on A fires a keyspace notification on B'), async () => {
    await api.set(a, `${p}watched`, 'x');
    return sub.received.some((m) => m.channel === `__keyspace@0__:${p}watched` && m.message === 'set');
  });
  await sub.close();

  // Error replies; the connection goes on.
  await expectError(t('unknown command'), api.raw(a, 'NOSUCHCMD', 'x'), "unknown command 'NOSUCHCMD'");
  await expectError(t('wrong arity'), api.raw(a, 'GET'), 'wrong number of arguments');
  await expectError(t('syntax error'), api.raw(a, 'SET', 'k', 'v', 'EX'), 'syntax error');
  await expectError(t('not an integer'), api.raw(a, 'EXPIRE', `${p}a`, 'soon'), 'not an integer');
  // Counters: an increment on each node, both count everywhere.
  check(t('INCR'), 1, Number(await api.raw(a, 'INCR', `${p}n`)));
  await api.raw(b, 'INCRBY', `${p}n`, '5');
  await eventually(t('increments on A and B both count, on A'), async () => (await api.get(a, `${p}n`)) === '6');
  await eventually(t('increments on A and B both count, on B'), async () => (await api.get(b, `${p}n`)) === '6');
  await api.raw(a, 'SET', `${p}word`, 'abc');
  await expectError(t('INCR of a value that is not a number'), api.raw(a, 'INCR', `${p}word`), 'not an integer');
  await expectError(t('WAITAOF'), api.raw(a, 'WAITAOF', '1', '0', '0'), 'appendonly');
  check(t('the connection works after errors'), '1', await api.get(a, `${p}a`));

  for (const c of [a, other, b]) await api.close(c);
}

// The number of commands node A has answered (INFO stats), read on a plain connection.
async function commandsProcessed(c) {
  const info = await c.info('stats');
  return Number(/total_commands_processed:(\d+)/.exec(info)[1]);
}

// node-redis's client-side cache (RESP3 only) against two nodes: a read on A is cached,
// repeated reads are served from the cache, and a write or a delete on B invalidates it
// on A once replicated (CLIENT TRACKING ON, invalidation pushes).
async function clientSideCache() {
  const t = (what) => `[node-redis, client-side cache] ${what}`;
  const connect = async (host, port, extra) => {
    const c = nodeRedis.createClient({ socket: { host, port: Number(port) }, password, RESP: 3, ...extra });
    c.on('error', (e) => console.error(`node-redis client error: ${e.message}`));
    await c.connect();
    return c;
  };
  const cached = await connect(hostA, portA, { clientSideCache: { ttl: 0, maxEntries: 0 } });
  const plain = await connect(hostA, portA, {});
  const b = await connect(hostB, portB, {});
  const key = 'csc:node-redis';
  await b.set(key, 'v1');
  await eventually(t('A has the value written on B'), async () => (await cached.get(key)) === 'v1');
  // The count is the node's, of every client: a stray command from elsewhere is not the
  // cache's, while a cache that does not serve the reads sends all five every time. Best of 3.
  const reached = [];
  for (let n = 0; n < 3; n++) {
    const before = await commandsProcessed(plain);
    for (let i = 0; i < 5; i++) check(t(`cached read ${i + 1}`), 'v1', await cached.get(key));
    reached.push((await commandsProcessed(plain)) - before);
    if (reached[n] === 1) break;
  }
  check(t(`repeated reads are served from the cache (no command reached A; tries: ${reached})`),
    1, Math.min(...reached));
  await b.set(key, 'v2');
  await eventually(t('a write on B invalidates the cached read on A'), async () => (await cached.get(key)) === 'v2');
  await b.del(key);
  await eventually(t('a delete on B invalidates it too'), async () => (await cached.get(key)) === null);
  for (const c of [cached, plain, b]) await c.quit();
}

const major = Number(versions['node-redis'].split('.')[0]);
if (major < 5) {
  console.error(`node-redis ${versions['node-redis']} is too old: this checks node-redis 5 or later`);
  process.exit(1);
}
try {
  // node-redis 6 defaults to RESP3 (HELLO 3), 5 to RESP2.
  const dflt = major >= 6 ? 'RESP3' : 'RESP2';
  await scenario('node-redis', `default options (${dflt})`, adapters['node-redis'](undefined));
  await scenario('node-redis', 'RESP2', adapters['node-redis'](2));
  // ioredis 6 defaults to RESP3 (HELLO 3), 5 to RESP2.
  const ioDefault = Number(versions.ioredis.split('.')[0]) >= 6 ? 'RESP3' : 'RESP2';
  await scenario('ioredis', `default options (${ioDefault})`, adapters.ioredis(undefined));
  if (ioDefault === 'RESP3') await scenario('ioredis', 'RESP2', adapters.ioredis(2));
  await clientSideCache();
} catch (e) {
  console.error(`FAIL ${e.message}`);
  if (!(e instanceof assert.AssertionError)) console.error(e);
  process.exit(1);
}
console.log('node clients: all checks passed');
