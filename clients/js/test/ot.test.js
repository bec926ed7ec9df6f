// TextOperation and the OT client, by their properties over random edits (emoji included).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TextOperation, TextClient, diff } from '../ot.js';

// A deterministic random source, so a failure can be replayed.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const ALPHABET = ['a', 'b', 'c', ' ', '😀', 'é', '\n'];

function randomString(rand, max) {
  let s = '';
  const n = Math.floor(rand() * max);
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)];
  return s;
}

// A random operation over `text`, never splitting a surrogate pair.
function randomOperation(rand, text) {
  const op = new TextOperation();
  let i = 0;
  while (i < text.length) {
    const width = text.codePointAt(i) > 0xffff ? 2 : 1;
    const r = rand();
    if (r < 0.2) op.insert(randomString(rand, 3)).retain(width);
    else if (r < 0.4) op.delete(width);
    else op.retain(width);
    i += width;
  }
  if (rand() < 0.3) op.insert(randomString(rand, 3));
  return op;
}

test('apply, toJSON and fromJSON agree with the documented JSON form', () => {
  const op = TextOperation.fromJSON([2, 'X', -1, 1]);
  assert.equal(op.apply('abcd'), 'abXd');
  assert.deepEqual(op.toJSON(), [2, 'X', -1, 1]);
  assert.equal(TextOperation.fromJSON(['😀']).apply(''), '😀');
  assert.equal(TextOperation.fromJSON(['😀']).targetLength, 2, 'lengths are UTF-16 code units');
  assert.throws(() => op.apply('abc'), /applies to a text of 4/);
});

test('compose has the effect of both operations in turn', () => {
  const rand = random(7);
  for (let n = 0; n < 500; n++) {
    const text = randomString(rand, 12);
    const a = randomOperation(rand, text);
    const afterA = a.apply(text);
    const b = randomOperation(rand, afterA);
    assert.equal(a.compose(b).apply(text), b.apply(afterA));
  }
});

test('transform makes concurrent edits converge, in either order', () => {
  const rand = random(11);
  for (let n = 0; n < 500; n++) {
    const text = randomString(rand, 12);
    const a = randomOperation(rand, text);
    const b = randomOperation(rand, text);
    const [a1, b1] = TextOperation.transform(a, b);
    assert.equal(b1.apply(a.apply(text)), a1.apply(b.apply(text)), JSON.stringify({ text, a, b }));
  }
});

test('diff finds the one change between two values, whole characters only', () => {
  assert.deepEqual(diff('hello world', 'hello brave world').toJSON(), [6, 'brave ', 5]);
  assert.deepEqual(diff('a😀b', 'a😃b').apply('a😀b'), 'a😃b');
  const rand = random(3);
  for (let n = 0; n < 300; n++) {
    const before = randomString(rand, 10);
    const after = randomOperation(rand, before).apply(before);
    assert.equal(diff(before, after).apply(before), after);
  }
});

test('clients that edit at once converge through a server that transforms as LiveSync does', () => {
  const rand = random(5);
  for (let round = 0; round < 50; round++) {
    // The server: the text, its revision, and the edits accepted (for transforming late ones).
    const server = { text: '', history: [] };
    const inbox = [[], []];
    const texts = ['', ''];
    const clients = [0, 1].map((me) => new TextClient(0, (rev, op) => inbox[me].push({ rev, op })));
    const deliver = (me) => {
      // The server takes client `me`'s next edit: transformed past what was accepted since rev.
      const { rev, op } = inbox[me].shift();
      let edit = op;
      for (const accepted of server.history.slice(rev)) edit = TextOperation.transform(edit, accepted.op)[0];
      server.text = edit.apply(server.text);
      server.history.push({ op: edit, from: me });
      for (const other of [0, 1]) {
        if (other === me) clients[me].serverAck();
        else texts[other] = clients[other].applyServer(edit).apply(texts[other]);
      }
    };
    for (let step = 0; step < 30; step++) {
      const who = rand() < 0.5 ? 0 : 1;
      if (rand() < 0.6) {
        const op = randomOperation(rand, texts[who]);
        texts[who] = op.apply(texts[who]);
        clients[who].applyLocal(op);
      } else if (inbox[who].length > 0) {
        deliver(who);
      }
    }
    while (inbox[0].length || inbox[1].length) deliver(inbox[0].length ? 0 : 1);
    assert.equal(texts[0], server.text);
    assert.equal(texts[1], server.text);
  }
});
