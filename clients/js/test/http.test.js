// The client library where no WebSocket can be opened: it falls back to HTTP (POST to publish,
// long polling to read, as against a deployed stack), with the same guarantees: every event
// once, in order, across a restart of the runner; a write retried keeps its id.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runnerForTests, until } from '../testing/runner.js';
import { LiveSync } from '../livesync.js';

const runner = runnerForTests({ before, after });
const client = (options) => runner.client(options);

// A WebSocket that a proxy refuses: every attempt fails before it opens.
class BlockedWebSocket extends EventTarget {
  constructor() {
    super();
    this.readyState = 0;
    setTimeout(() => { this.readyState = 3; this.onerror?.(new Event('error')); this.onclose?.({ code: 1006 }); }, 5);
  }
  close() {}
  send() { throw new Error('not open'); }
}

const seqs = (events) => events.map((e) => e.seq);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('where WebSockets are blocked the client goes on over HTTP and sees one order with socket clients', async () => {
  const blocked = client({ WebSocket: BlockedWebSocket, httpReader: 'poll' });
  const transports = [];
  blocked.addEventListener('transport', (e) => transports.push(e.detail));
  await blocked.connect();
  assert.deepEqual(transports, ['http']);
  assert.equal(blocked.transport, 'http');
  const seenOverHttp = [];
  await blocked.room('fallback', { since: 0, onEvent: (e) => seenOverHttp.push(e) }).joined;

  const socket = client();
  await socket.connect();
  const seenOverSocket = [];
  await socket.room('fallback', { since: 0, onEvent: (e) => seenOverSocket.push(e) }).joined;

  // Both write at once, each its own way.
  const writes = [];
  for (let n = 1; n <= 10; n++) {
    writes.push(blocked.publish('fallback', { from: 'http', n }));
    writes.push(socket.publish('fallback', { from: 'socket', n }));
  }
  const acks = await Promise.all(writes);
  assert.deepEqual(acks.map((a) => a.seq).sort((a, b) => a - b), range(1, 20));
  await until(() => seenOverHttp.length === 20 && seenOverSocket.length === 20, 'all 20 events on both clients');
  assert.deepEqual(seqs(seenOverHttp), range(1, 20));
  const what = (events) => events.map(({ seq, id, from, data }) => ({ seq, id, from, data }));
  assert.deepEqual(what(seenOverHttp), what(seenOverSocket), 'the same events, in the same order');

  // A write the server refuses is refused the same way over HTTP.
  await assert.rejects(blocked.publish('fallback', { too: 'x'.repeat(200 * 1024) }), (e) => e.code === 'too_large');
  // What needs a WebSocket says so.
  await assert.rejects(blocked.request({ action: 'presence', room: 'fallback' }), (e) => e.code === 'unavailable');
});

test('over HTTP a room misses nothing and repeats nothing across a restart of the runner', async () => {
  const reader = client({ transport: 'http', httpReader: 'poll' });
  await reader.connect();
  const seen = [];
  await reader.room('http-restart', { since: 0, onEvent: (e) => seen.push(e) }).joined;
  const writer = client({ transport: 'http' });
  await writer.connect();
  for (let n = 1; n <= 3; n++) await writer.publish('http-restart', { n });
  await until(() => seen.length === 3, 'the first three events');

  await runner.stop();
  // Published while the runner is down: the writer keeps trying with the same id.
  const pending = writer.publish('http-restart', { n: 4 }, { id: 'fourth' });
  await new Promise((resolve) => setTimeout(resolve, 200));
  await runner.start();
  assert.equal((await pending).seq, 4);
  for (let n = 5; n <= 8; n++) await writer.publish('http-restart', { n });
  // The same id again is the same write.
  assert.equal((await writer.publish('http-restart', { n: 4 }, { id: 'fourth' })).seq, 4);

  await until(() => seen.length === 8, 'all eight events');
  assert.deepEqual(seqs(seen), range(1, 8));
  assert.deepEqual(seen.map((e) => e.data.n), range(1, 8));
});

test('an answer that is not the LiveSync API\'s (a gateway\'s 503) is tried again, never taken as an ack', async () => {
  let refused = 0;
  // API Gateway answers a throttled or timed-out request itself, with JSON of its own.
  const flaky = async (url, init) => {
    if (init.method === 'POST' && refused < 2) {
      refused += 1;
      return new Response(JSON.stringify({ message: 'Service Unavailable' }), { status: 503, headers: { 'content-type': 'application/json' } });
    }
    return fetch(url, init);
  };
  const writer = client({ transport: 'http', fetch: flaky });
  await writer.connect();
  const ack = await writer.publish('gateway', { n: 1 }, { id: 'through-a-gateway' });
  assert.equal(refused, 2);
  assert.equal(ack.type, 'ack');
  assert.equal(ack.seq, 1);
  const page = await (await fetch(`${runner.url.replace('ws://', 'http://')}/rooms/gateway/events?since=0`)).json();
  assert.deepEqual(page.events.map((e) => e.id), ['through-a-gateway'], 'stored once');
});

test('a POST the network swallows is given up after the request timeout and sent again with its id', { timeout: 10_000 }, async () => {
  // GIVEN a network whose first POST never gets an answer (a proxy that holds it),
  const posts = [];
  const fetch = (url, init) => {
    posts.push(JSON.parse(init.body));
    if (posts.length === 1) {
      return new Promise((_, reject) => init.signal?.addEventListener('abort', () => reject(init.signal.reason)));
    }
    const ack = { room: 'r', seq: 1, id: posts.at(-1).id };
    return Promise.resolve(new Response(JSON.stringify(ack), { status: 200, headers: { 'content-type': 'application/json' } }));
  };
  // (a timeout that is not a whole number of milliseconds, which AbortSignal.timeout refuses)
  const swallowed = new LiveSync('ws://unused.invalid', { transport: 'http', fetch, requestTimeoutMs: 200.5, initialBackoffMs: 10 });
  await swallowed.connect();
  // WHEN a client publishes,
  const ack = await swallowed.publish('r', { n: 1 }, { id: 'only-once' });
  // THEN the held request is abandoned, the publish is sent again with the same id, and acked.
  assert.equal(ack.seq, 1);
  assert.deepEqual(posts.map((p) => p.id), ['only-once', 'only-once']);
  swallowed.close();
});
