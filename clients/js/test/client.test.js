// The client library against the real local runner: it keeps order, fills gaps, drops repeats,
// survives a restart of the runner, retries writes without duplicates, rebases documents on a
// conflict and converges texts edited at once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { newId } from '../livesync.js';
import { runnerForTests, until } from '../testing/runner.js';

const runner = runnerForTests({ before, after });
const client = (options) => runner.client(options);

// A WebSocket on a network that loses or repeats what the server pushes: `lose(frame)` and
// `repeat(frame)` choose. Requests and their replies are never touched.
function lossyWebSocket({ lose = () => false, repeat = () => false }) {
  return class extends WebSocket {
    set onmessage(handler) {
      super.onmessage = (message) => {
        const frame = JSON.parse(message.data);
        const pushed = frame.ref === undefined && (frame.type === 'event' || frame.type === 'events');
        if (pushed && lose(frame)) return;
        handler(message);
        if (pushed && repeat(frame)) handler(message);
      };
    }
  };
}

function seqs(events) { return events.map((e) => e.seq); }
function range(from, to) { return Array.from({ length: to - from + 1 }, (_, i) => from + i); }

test('a room sees every event once, in order, across a restart of the runner', async () => {
  const reader = client();
  const seen = [];
  await reader.connect();
  const room = reader.room('restart', { since: 0, onEvent: (e) => seen.push(e) });
  await room.joined;
  const writer = client();
  await writer.connect();
  for (let n = 1; n <= 3; n++) await writer.publish('restart', { n });
  await until(() => seen.length === 3, 'the first three events');

  const states = [];
  reader.addEventListener('state', (e) => states.push(e.detail));
  await runner.stop();
  await until(() => reader.state === 'reconnecting', 'the reader to notice');
  await runner.start();
  // Meanwhile another writer publishes; the reader must get these from its rejoin.
  const late = client();
  await late.connect();
  for (let n = 4; n <= 8; n++) await late.publish('restart', { n });
  await until(() => seen.length >= 8, 'the events published while it was away');
  assert.deepEqual(seqs(seen), range(1, 8));
  assert.deepEqual(seen.map((e) => e.data.n), range(1, 8));
  assert.ok(states.includes('open'), `states: ${states}`);
});

test('a backlog is paged in and live pushes that arrive meanwhile wait for it', async () => {
  const writer = client();
  await writer.connect();
  for (let n = 1; n <= 250; n++) writer.publish('backlog', { n });
  await until(async () => (await writer.publish('backlog', 'marker')).seq === 251, 'the backlog to be written');
  const reader = client();
  const seen = [];
  await reader.connect();
  const room = reader.room('backlog', { since: 0, onEvent: (e) => seen.push(e.seq) });
  // Live publishes while the reader pages through 251 events (3 pages).
  const live = Promise.all(range(1, 30).map((n) => writer.publish('backlog', { live: n })));
  await room.joined;
  await live;
  await until(() => seen.length >= 281, 'every event');
  assert.deepEqual(seen, range(1, 281));
});

test('a lost push is noticed at the next one and the gap is filled with sync', async () => {
  // Whatever frame carries seq 2 or 3 is lost: the fanout may batch events into one frame.
  let lost = 0;
  const carries = (f) => (f.type === 'event' ? [f.seq] : f.events.map((e) => e.seq)).some((seq) => seq === 2 || seq === 3);
  const reader = client({ WebSocket: lossyWebSocket({ lose: (f) => carries(f) && (lost += 1) > 0 }) });
  const seen = [];
  await reader.connect();
  await reader.room('gaps', { since: 0, onEvent: (e) => seen.push(e.seq) }).joined;
  const writer = client();
  await writer.connect();
  for (let n = 1; n <= 5; n++) await writer.publish('gaps', n);
  await until(() => lost >= 1, 'the network to lose a push');
  // The next push, after the loss, shows the gap.
  await writer.publish('gaps', 6);
  await until(() => seen.length >= 6, 'every event');
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
});

test('a repeated push is delivered once', async () => {
  const reader = client({ WebSocket: lossyWebSocket({ repeat: () => true }) });
  const seen = [];
  await reader.connect();
  await reader.room('repeats', { since: 0, onEvent: (e) => seen.push(e.seq) }).joined;
  const writer = client();
  await writer.connect();
  for (let n = 1; n <= 5; n++) await writer.publish('repeats', n);
  await until(() => seen.length >= 5, 'every event');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
});

test('a write cut off before its ack is sent again after the reconnect and stored once', async () => {
  // The socket closes right after the publish leaves: the server may or may not have it.
  let cut = false;
  const Cutting = class extends WebSocket {
    send(data) {
      super.send(data);
      if (!cut && JSON.parse(data).action === 'publish') { cut = true; this.close(4000, 'network'); }
    }
  };
  const writer = client({ WebSocket: Cutting });
  await writer.connect();
  const id = newId('order');
  const ack = await writer.publish('retries', { order: 1 }, { id });
  assert.ok(cut, 'the connection was cut');
  assert.equal(ack.id, id);
  const checker = client();
  await checker.connect();
  const all = await checker.request({ action: 'sync', room: 'retries', since: 0 });
  assert.equal(all.events.filter((e) => e.id === id).length, 1, JSON.stringify(all.events));
  assert.equal(all.events.length, 1);
});

test('documents rebase on a conflict: 2 clients x 10 increments make 20', async () => {
  const [a, b] = [client(), client()];
  await Promise.all([a.connect(), b.connect()]);
  const [docA, docB] = [a.doc('docs', 'counter'), b.doc('docs', 'counter')];
  await a.room('docs').joined;
  await b.room('docs').joined;
  let conflicts = 0;
  for (const d of [docA, docB]) d.addEventListener('conflict', () => { conflicts += 1; });
  const bump = (d) => d.update((v) => ({ n: (v?.n ?? 0) + 1 }));
  await Promise.all(range(1, 10).flatMap(() => [bump(docA), bump(docB)]));
  const final = await a.request({ action: 'doc.get', room: 'docs', doc: 'counter' });
  assert.equal(final.value.n, 20);
  assert.ok(conflicts > 0, 'the clients did collide');
  await until(() => docA.value?.n === 20 && docB.value?.n === 20, 'both to see the final version');
});

test('two clients typing at once converge on the same text as the server', async () => {
  const [a, b] = [client(), client()];
  await Promise.all([a.connect(), b.connect()]);
  const [textA, textB] = [a.text('notes', 'pad'), b.text('notes', 'pad')];
  await Promise.all([a.room('notes').joined, b.room('notes').joined]);
  await Promise.all([textA.load(), textB.load()]);
  for (let i = 0; i < 40; i++) {
    const [t, who] = i % 2 ? [textA, 'A'] : [textB, 'b😀'];
    // The middle, on a character boundary (an application never splits an emoji).
    const chars = [...t.value];
    const at = chars.slice(0, Math.floor(chars.length / 2)).join('').length;
    // Insert in the middle, now and then delete a little: every edit races the other's.
    const next = i % 7 === 6
      ? chars.slice(0, Math.max(0, chars.length / 2 - 1)).join('') + t.value.slice(at)
      : t.value.slice(0, at) + who + t.value.slice(at);
    t.edit(next);
    if (i % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await until(
    async () => {
      if (textA.client.inflight || textB.client.inflight) return false;
      const server = await a.request({ action: 'text.get', room: 'notes', doc: 'pad' });
      return textA.value === server.text && textB.value === server.text;
    },
    'both texts to settle on the server text',
  );
  assert.ok(textA.value.length > 20, textA.value);
});
