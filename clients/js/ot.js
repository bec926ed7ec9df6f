// Operational transformation of plain text, in ot.js's JSON form: a list where a positive
// number retains that many characters, a string inserts itself and a negative number deletes
// that many characters. Lengths are UTF-16 code units (JavaScript string lengths), as the
// server counts them, so emoji and other astral characters transform the same on both sides.
//
// TextOperation is the same algorithm as ot.js's (and as the server's shared/src/text.rs):
// apply, compose, transform. TextClient is ot.js's client state machine: one edit in flight,
// the user's further edits composed into a buffer, others' edits transformed past both.

export class TextOperation {
  constructor() {
    this.ops = [];
    this.baseLength = 0;
    this.targetLength = 0;
  }

  static isRetain(op) { return typeof op === 'number' && op > 0; }
  static isInsert(op) { return typeof op === 'string'; }
  static isDelete(op) { return typeof op === 'number' && op < 0; }

  retain(n) {
    if (!Number.isInteger(n) || n < 0) throw new Error(`retain expects a non-negative integer, not ${n}`);
    if (n === 0) return this;
    this.baseLength += n;
    this.targetLength += n;
    const last = this.ops.length - 1;
    if (TextOperation.isRetain(this.ops[last])) this.ops[last] += n;
    else this.ops.push(n);
    return this;
  }

  insert(s) {
    if (typeof s !== 'string') throw new Error('insert expects a string');
    if (s === '') return this;
    this.targetLength += s.length;
    const ops = this.ops;
    const last = ops.length - 1;
    if (TextOperation.isInsert(ops[last])) {
      ops[last] += s;
    } else if (TextOperation.isDelete(ops[last])) {
      // Canonical form: an insert goes before a delete at the same place.
      if (TextOperation.isInsert(ops[last - 1])) ops[last - 1] += s;
      else { ops[last + 1] = ops[last]; ops[last] = s; }
    } else {
      ops.push(s);
    }
    return this;
  }

  delete(n) {
    if (typeof n === 'string') n = n.length;
    if (!Number.isInteger(n) || n < 0) throw new Error(`delete expects a non-negative integer, not ${n}`);
    if (n === 0) return this;
    this.baseLength += n;
    const last = this.ops.length - 1;
    if (TextOperation.isDelete(this.ops[last])) this.ops[last] -= n;
    else this.ops.push(-n);
    return this;
  }

  isNoop() {
    return this.ops.length === 0 || (this.ops.length === 1 && TextOperation.isRetain(this.ops[0]));
  }

  toJSON() { return this.ops; }

  static fromJSON(ops) {
    const op = new TextOperation();
    for (const part of ops) {
      if (TextOperation.isRetain(part)) op.retain(part);
      else if (TextOperation.isInsert(part)) op.insert(part);
      else if (TextOperation.isDelete(part)) op.delete(-part);
      else throw new Error(`unknown component ${JSON.stringify(part)}`);
    }
    return op;
  }

  apply(text) {
    if (text.length !== this.baseLength) {
      throw new Error(`the operation applies to a text of ${this.baseLength} code units, not ${text.length}`);
    }
    const out = [];
    let index = 0;
    for (const op of this.ops) {
      if (TextOperation.isRetain(op)) { out.push(text.slice(index, index + op)); index += op; }
      else if (TextOperation.isInsert(op)) out.push(op);
      else index -= op;
    }
    return out.join('');
  }

  // The operation that has the effect of this one, then `other`.
  compose(other) {
    if (this.targetLength !== other.baseLength) {
      throw new Error('compose: the second operation does not start where the first ends');
    }
    const result = new TextOperation();
    const a = this.ops, b = other.ops;
    let i = 0, j = 0, x = a[i++], y = b[j++];
    for (;;) {
      if (x === undefined && y === undefined) break;
      if (TextOperation.isDelete(x)) { result.delete(-x); x = a[i++]; continue; }
      if (TextOperation.isInsert(y)) { result.insert(y); y = b[j++]; continue; }
      if (x === undefined || y === undefined) throw new Error('compose: operations of different lengths');
      if (TextOperation.isRetain(x) && TextOperation.isRetain(y)) {
        const n = Math.min(x, y);
        result.retain(n);
        if (x > n) { x -= n; } else { x = a[i++]; }
        if (y > n) { y -= n; } else { y = b[j++]; }
      } else if (TextOperation.isInsert(x) && TextOperation.isDelete(y)) {
        const n = Math.min(x.length, -y);
        if (x.length > n) { x = x.slice(n); } else { x = a[i++]; }
        if (-y > n) { y += n; } else { y = b[j++]; }
      } else if (TextOperation.isInsert(x) && TextOperation.isRetain(y)) {
        const n = Math.min(x.length, y);
        result.insert(x.slice(0, n));
        if (x.length > n) { x = x.slice(n); } else { x = a[i++]; }
        if (y > n) { y -= n; } else { y = b[j++]; }
      } else if (TextOperation.isRetain(x) && TextOperation.isDelete(y)) {
        const n = Math.min(x, -y);
        result.delete(n);
        if (x > n) { x -= n; } else { x = a[i++]; }
        if (-y > n) { y += n; } else { y = b[j++]; }
      } else {
        throw new Error('compose: unexpected components');
      }
    }
    return result;
  }

  // [a', b'] such that a.compose(b') equals b.compose(a'). Where both insert at one place, a's
  // insert comes first (as the server does with an incoming edit against accepted ones).
  static transform(a, b) {
    if (a.baseLength !== b.baseLength) throw new Error('transform: both operations must apply to the same text');
    const a1 = new TextOperation(), b1 = new TextOperation();
    const ops1 = a.ops, ops2 = b.ops;
    let i = 0, j = 0, x = ops1[i++], y = ops2[j++];
    for (;;) {
      if (x === undefined && y === undefined) break;
      if (TextOperation.isInsert(x)) { a1.insert(x); b1.retain(x.length); x = ops1[i++]; continue; }
      if (TextOperation.isInsert(y)) { a1.retain(y.length); b1.insert(y); y = ops2[j++]; continue; }
      if (x === undefined || y === undefined) throw new Error('transform: operations of different lengths');
      let n;
      if (TextOperation.isRetain(x) && TextOperation.isRetain(y)) {
        n = Math.min(x, y);
        a1.retain(n); b1.retain(n);
        if (x > n) { x -= n; } else { x = ops1[i++]; }
        if (y > n) { y -= n; } else { y = ops2[j++]; }
      } else if (TextOperation.isDelete(x) && TextOperation.isDelete(y)) {
        n = Math.min(-x, -y);
        if (-x > n) { x += n; } else { x = ops1[i++]; }
        if (-y > n) { y += n; } else { y = ops2[j++]; }
      } else if (TextOperation.isDelete(x) && TextOperation.isRetain(y)) {
        n = Math.min(-x, y);
        a1.delete(n);
        if (-x > n) { x += n; } else { x = ops1[i++]; }
        if (y > n) { y -= n; } else { y = ops2[j++]; }
      } else if (TextOperation.isRetain(x) && TextOperation.isDelete(y)) {
        n = Math.min(x, -y);
        b1.delete(n);
        if (x > n) { x -= n; } else { x = ops1[i++]; }
        if (-y > n) { y += n; } else { y = ops2[j++]; }
      } else {
        throw new Error('transform: unexpected components');
      }
    }
    return [a1, b1];
  }
}

// The operation turning `before` into `after`: one change in the middle (what a text area's
// input event amounts to), found by their common prefix and suffix.
export function diff(before, after) {
  let start = 0;
  const max = Math.min(before.length, after.length);
  while (start < max && before.charCodeAt(start) === after.charCodeAt(start)) start++;
  let end = 0;
  while (end < max - start && before.charCodeAt(before.length - 1 - end) === after.charCodeAt(after.length - 1 - end)) end++;
  // Never split a surrogate pair: widen the change to whole characters.
  if (start > 0 && isHighSurrogate(before.charCodeAt(start - 1))) start--;
  if (end > 0 && isLowSurrogate(before.charCodeAt(before.length - end))) end--;
  return new TextOperation()
    .retain(start)
    .delete(before.length - start - end)
    .insert(after.slice(start, after.length - end))
    .retain(end);
}

function isHighSurrogate(code) { return code >= 0xd800 && code <= 0xdbff; }
function isLowSurrogate(code) { return code >= 0xdc00 && code <= 0xdfff; }

// ot.js's client: `send(rev, op)` sends an edit; `applyLocal(op)` for the user's edits;
// `serverAck()` when the edit in flight is acknowledged; `applyServer(op)` for others' edits
// (returns the op to apply to the local text).
export class TextClient {
  constructor(rev, send) {
    this.rev = rev;
    this.send = send;
    this.inflight = null;
    this.buffer = null;
  }

  applyLocal(op) {
    if (this.inflight === null) {
      this.inflight = op;
      this.send(this.rev, op);
    } else if (this.buffer === null) {
      this.buffer = op;
    } else {
      this.buffer = this.buffer.compose(op);
    }
  }

  serverAck() {
    this.rev++;
    this.inflight = this.buffer;
    this.buffer = null;
    if (this.inflight !== null) this.send(this.rev, this.inflight);
  }

  applyServer(op) {
    this.rev++;
    if (this.inflight === null) return op;
    const [inflight, op1] = TextOperation.transform(this.inflight, op);
    this.inflight = inflight;
    if (this.buffer === null) return op1;
    const [buffer, op2] = TextOperation.transform(this.buffer, op1);
    this.buffer = buffer;
    return op2;
  }

  // After a reconnect: the edit in flight is sent again (with the same id, so the server
  // applies it once).
  resend() {
    if (this.inflight !== null) this.send(this.rev, this.inflight);
  }
}
