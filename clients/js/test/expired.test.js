// The client's handling of `expired`: what a server answers when the events after a client's
// `since` are past its retention. Producing that on a real runner takes days of waiting (or a
// data directory written under a clock 8 days back, as the Rust `tail` test does), so these
// tests put the client in front of a scripted server instead: a fake WebSocket that answers as
// the protocol says a server does which still keeps only seqs `oldest..head` of room `r`.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveSync } from '../livesync.js';
import { until } from '../testing/runner.js';

// A server keeping events `oldest..head` of room `r` (the ones before expired), and document
// `d` of that room at version 7. Every frame a client sends is recorded in `received`.
// `server.oldest` may move while a client reads, as a retention sweep moves it.
function keptServer({ oldest, head, pageSize = 100, oldestInErrors }) {
  const event = (seq) => ({ type: 'event', room: 'r', seq, id: `e${seq}`, from: 'w', data: { n: seq }, ts: 0 });
  const server = { received: [], sockets: [], oldest, afterJoin: () => {} };
  const answer = (frame) => {
    const since = frame.since ?? head;
    if ((frame.action === 'join' || frame.action === 'sync') && since < server.oldest - 1) {
      const named = oldestInErrors ?? server.oldest;
      return { type: 'error', code: 'expired', message: `events after seq ${since} have expired`, oldest: named };
    }
    const page = [];
    for (let seq = since + 1; seq <= head && page.length < pageSize; seq++) {
      const { type, ...rest } = event(seq);
      page.push(rest);
    }
    const more = page.length > 0 && page[page.length - 1].seq < head;
    switch (frame.action) {
      case 'join': server.afterJoin(); return { type: 'joined', room: 'r', seq: head, events: page, more };
      case 'sync': return { type: 'events', room: 'r', events: page, more };
      case 'doc.get': return { type: 'doc', room: 'r', doc: 'd', version: 7, value: { title: 'as it stands' }, strategy: 'reject' };
      case 'ping': return { type: 'pong' };
      default: return { type: 'error', code: 'unknown_action', message: frame.action };
    }
  };
  server.WebSocket = class {
    constructor() {
      this.readyState = 0;
      server.sockets.push(this);
      setTimeout(() => { this.readyState = 1; this.onopen?.(); });
    }
    send(text) {
      const frame = JSON.parse(text);
      server.received.push(frame);
      const reply = { ...answer(frame), ref: frame.ref };
      setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }));
    }
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.());
    }
  };
  return server;
}

const clients = [];
after(() => { for (const client of clients) client.close(); });

function clientOf(server) {
  const client = new LiveSync('ws://kept.invalid', { WebSocket: server.WebSocket, transport: 'websocket', pingIntervalMs: 60_000 });
  clients.push(client);
  client.connect();
  return client;
}

test('a join whose since has expired tells the application, then goes on from the oldest event held', async () => {
  // GIVEN a server that kept seqs 4 to 6 of room r (1 to 3 expired),
  const server = keptServer({ oldest: 4, head: 6 });
  const client = clientOf(server);
  // WHEN a client joins r with since 0,
  const seen = [];
  const expiries = [];
  const room = client.room('r', { since: 0, onEvent: (event) => seen.push(event.seq) });
  room.addEventListener('expired', (e) => expiries.push(e.detail));
  await until(() => seen.length === 3, 'the held events');
  // THEN the room says once what expired, and delivers what is held, in order, once;
  assert.deepEqual(expiries, [{ after: 0, oldest: 4 }]);
  assert.deepEqual(seen, [4, 5, 6]);
  // its second join asked from the event before the oldest.
  const joins = server.received.filter((f) => f.action === 'join').map((f) => f.since);
  assert.deepEqual(joins, [0, 3]);
  // AND live pushes go on after them.
  server.sockets.at(-1).onmessage({ data: JSON.stringify({ type: 'event', room: 'r', seq: 7, id: 'e7', from: 'w', data: {}, ts: 0 }) });
  await until(() => seen.length === 4, 'the live push');
  assert.deepEqual(seen, [4, 5, 6, 7]);
});

test('a backlog that expires while it is paged in goes on from the oldest event held', async () => {
  // GIVEN a server keeping seqs 3 to 8 that pages 2 events at a time, and whose retention sweep
  // takes seqs 3 to 6 just after it answers the join,
  const server = keptServer({ oldest: 3, head: 8, pageSize: 2 });
  server.afterJoin = () => { server.oldest = 7; };
  const client = clientOf(server);
  const seen = [];
  const expiries = [];
  const room = client.room('r', { since: 2, onEvent: (event) => seen.push(event.seq) });
  room.addEventListener('expired', (e) => expiries.push(e.detail));
  // WHEN the client joins from 2 and pages in the rest,
  await until(() => seen.length === 4, 'the held events');
  // THEN it has 3 and 4 from the join, is told that what followed them expired, and pages in
  // 7 and 8: each once, in order.
  assert.deepEqual(seen, [3, 4, 7, 8]);
  assert.deepEqual(expiries, [{ after: 4, oldest: 7 }]);
  const syncs = server.received.filter((f) => f.action === 'sync').map((f) => f.since);
  assert.deepEqual(syncs, [4, 6]);
});

test('a document reloads itself when the changes it missed have expired', async () => {
  const server = keptServer({ oldest: 4, head: 6 });
  const client = clientOf(server);
  // GIVEN a document of room r, which the client last read at seq 1, before what expired,
  client.room('r', { since: 1 });
  const doc = client.doc('r', 'd');
  // WHEN the room learns its missed events are gone,
  const changes = [];
  doc.addEventListener('change', (e) => changes.push(e.detail));
  await until(() => changes.length === 1, 'the reload');
  // THEN the document is read as it stands.
  assert.deepEqual(changes, [{ version: 7, value: { title: 'as it stands' } }]);
  assert.ok(server.received.some((f) => f.action === 'doc.get' && f.doc === 'd'));
});

test('an expired answer without a usable oldest is an error, not a loop', async () => {
  // GIVEN a server that answers expired but names no seq past the client's (a broken server),
  const server = keptServer({ oldest: 4, head: 6, oldestInErrors: 0 });
  const client = clientOf(server);
  const errors = [];
  const expiries = [];
  const room = client.room('r', { since: 0 });
  room.addEventListener('error', (e) => errors.push(e.detail.code));
  room.addEventListener('expired', (e) => expiries.push(e.detail));
  // WHEN the client joins,
  await until(() => errors.length === 1, 'the error');
  // THEN the room reports the error once and asks no more.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(errors, ['expired']);
  assert.deepEqual(expiries, []);
  assert.equal(server.received.filter((f) => f.action === 'join').length, 1);
});
