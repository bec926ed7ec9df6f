// LiveSync's browser (and Node) client: one module, no dependencies.
//
// It keeps the protocol's guarantees for the application, across flaky networks:
// - every room's events reach `onEvent` once each, in seq order, none missing: repeats are
//   dropped by seq, a gap in pushed seqs is filled with `sync` (page after page, while `more`),
//   and live pushes that arrive while a backlog is paged in are held until it is done;
// - the connection comes back by itself (exponential backoff with jitter), rejoins every room
//   with `since` = the last seq seen, and sends again every request still unanswered, writes
//   with the same `id`, so nothing is applied twice;
// - a ping keeps the connection inside API Gateway's 10-minute idle timeout;
// - where no WebSocket can be opened (a proxy that blocks them), it falls back to HTTP: rooms
//   are read with Server-Sent Events (or long polling) and publishes are POSTed, with the same
//   guarantees (the reads always resume after the last seq delivered, and writes keep their id).
//
// Helpers for shared state: `doc` (read-modify-write that rebases on a conflict), `text`
// (operational transformation, ot.js's client), `stock`, `presence`.

import { TextClient, TextOperation, diff } from './ot.js';

export { TextOperation, TextClient, diff };

// A refusal from the server: `code` is the protocol's error code (`conflict`, `forbidden`...).
export class LiveSyncError extends Error {
  constructor(frame) {
    super(frame.message ?? frame.code);
    this.name = 'LiveSyncError';
    this.code = frame.code;
    this.current = frame.current;
    this.level = frame.level;
    this.retryAfterMs = frame.retry_after_ms;
    this.oldest = frame.oldest;
  }
}

let counter = 0;
// An id for a write: unique per client, kept across its retries.
export function newId(prefix = 'w') {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  counter += 1;
  return `${prefix}-${random}-${counter}`;
}

const DEFAULTS = {
  token: undefined,
  initialBackoffMs: 250,
  maxBackoffMs: 10_000,
  // API Gateway closes a connection after 10 minutes without a message.
  pingIntervalMs: 5 * 60_000,
  // A connection attempt that neither opens nor fails in this time is given up and retried
  // (a server going down can leave an attempt hanging).
  connectTimeoutMs: 5_000,
  // A request sent on an open connection and not answered in this time is refused with code
  // `timeout` (a frame the server could not even parse is answered without its `ref`).
  requestTimeoutMs: 30_000,
  WebSocket: undefined,
  // 'auto': a WebSocket, or HTTP when `fallbackAfter` attempts in a row fail before one has
  // ever opened. 'websocket': never HTTP. 'http': HTTP from the start.
  transport: 'auto',
  fallbackAfter: 2,
  // The HTTP API's address (a deployed stack's HttpApiUrl); default: the WebSocket URL with
  // http(s), which is right for the local runner.
  httpUrl: undefined,
  // How rooms are read over HTTP: 'sse' (an EventSource; the local runner serves it) or 'poll'
  // (long polling; what a deployed stack serves). Default: 'sse' where there is an EventSource.
  httpReader: undefined,
  EventSource: undefined,
  fetch: undefined,
};

// A long poll's wait, in seconds (the server's most).
const POLL_WAIT_S = 25;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A signal that aborts after `ms`. AbortSignal.timeout throws on a delay that is not a whole
// non-negative number, and older browsers (Safari before 16) lack it: a request that could not
// be sent at all would be retried for ever.
function timeoutSignal(ms) {
  const delay = Number.isFinite(ms) ? Math.max(1, Math.round(ms)) : 2_147_483_647;
  if (typeof AbortSignal.timeout === 'function') return AbortSignal.timeout(delay);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new DOMException('the request timed out', 'TimeoutError')), delay);
  return controller.signal;
}

export class LiveSync extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.url = url;
    this.WebSocketImpl = this.options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocketImpl && this.options.transport !== 'http') throw new Error('no WebSocket implementation: pass options.WebSocket');
    this.EventSourceImpl = this.options.EventSource ?? globalThis.EventSource;
    this.fetchImpl = this.options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.httpUrl = (this.options.httpUrl ?? url.replace(/^ws/, 'http')).replace(/\/$/, '');
    // 'websocket' | 'http': what carries the frames now.
    this.transport = 'websocket';
    // Attempts in a row that failed before a socket opened, and whether one ever did.
    this.failedOpens = 0;
    this.everOpened = false;
    // Over HTTP: each room's reader (an EventSource or a long-poll loop).
    this.readers = new Map();
    // 'connecting' | 'open' | 'reconnecting' | 'closed'
    this.state = 'closed';
    this.rooms = new Map();
    this.pending = new Map();
    this.nextRef = 0;
    this.attempt = 0;
    this.socket = null;
    this.closing = false;
    this.timer = null;
    this.pinger = null;
  }

  // Opens the connection; resolves once it is open the first time.
  connect() {
    this.closing = false;
    const opened = new Promise((resolve) => {
      const onState = () => {
        if (this.state === 'open') { this.removeEventListener('state', onState); resolve(); }
      };
      this.addEventListener('state', onState);
    });
    this.#open();
    return opened;
  }

  // Closes for good: no reconnect; requests still unanswered are refused.
  close() {
    this.closing = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.socket?.close(1000);
    for (const room of [...this.readers.keys()]) this.#unfollow(room);
    for (const request of this.pending.values()) {
      clearTimeout(request.timer);
      request.reject(new LiveSyncError({ code: 'closed', message: 'the client was closed' }));
    }
    this.pending.clear();
    this.#setState('closed');
  }

  // Cuts the socket as a network failure would (the client reconnects by itself).
  drop() {
    this.socket?.close(4000, 'dropped');
    // Over HTTP, every reader is cut and starts again after the room's last seq.
    for (const name of [...this.readers.keys()]) {
      const room = this.rooms.get(name);
      if (room) this.#follow(name, room.lastSeq ?? 0);
    }
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  #open() {
    if (this.options.transport === 'http') return this.#openHttp();
    this.#setState(this.attempt === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting');
    const url = this.options.token ? `${this.url}${this.url.includes('?') ? '&' : '?'}token=${encodeURIComponent(this.options.token)}` : this.url;
    let socket;
    try {
      socket = new this.WebSocketImpl(url);
    } catch (error) {
      this.#failedToOpen();
      return;
    }
    this.socket = socket;
    const giveUp = setTimeout(() => {
      if (socket.readyState === 0) { socket.close(); this.#lost(socket); }
    }, this.options.connectTimeoutMs);
    socket.onopen = () => {
      clearTimeout(giveUp);
      this.attempt = 0;
      this.failedOpens = 0;
      this.everOpened = true;
      this.#setState('open');
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.request({ action: 'ping' }).catch(() => {}), this.options.pingIntervalMs);
      // Rooms first (their backlog pages in), then every request still unanswered.
      for (const room of this.rooms.values()) room._rejoin();
      for (const request of this.pending.values()) if (!request.sent) this.#transmit(request);
    };
    socket.onmessage = (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch { return; }
      this.#receive(frame);
    };
    socket.onclose = () => { clearTimeout(giveUp); this.#lost(socket); };
    // Browsers follow a failed attempt's `error` with `close`; Node 20's WebSocket does not.
    socket.onerror = () => {
      if (socket.readyState !== 1) { clearTimeout(giveUp); this.#lost(socket); }
    };
  }

  // The socket is gone (closed, failed, or given up): once per socket.
  #lost(socket) {
    if (this.socket !== socket) return;
    const opened = this.state === 'open';
    this.socket = null;
    clearInterval(this.pinger);
    for (const request of this.pending.values()) request.sent = false;
    for (const room of this.rooms.values()) room._disconnected();
    if (this.closing) return;
    if (opened) this.#scheduleReconnect();
    else this.#failedToOpen();
  }

  // An attempt failed before its socket opened: try again, or, when WebSockets seem blocked
  // (never once opened), go on over HTTP.
  #failedToOpen() {
    this.failedOpens += 1;
    if (this.options.transport === 'auto' && !this.everOpened && this.failedOpens >= this.options.fallbackAfter) {
      this.#openHttp();
      return;
    }
    this.#scheduleReconnect();
  }

  // HTTP from now on: rooms rejoin (a read, then a reader each), unanswered requests go again.
  #openHttp() {
    if (!this.fetchImpl) throw new Error('no fetch implementation: pass options.fetch');
    this.transport = 'http';
    this.socket = null;
    this.attempt = 0;
    this.dispatchEvent(new CustomEvent('transport', { detail: 'http' }));
    this.#setState('open');
    for (const room of this.rooms.values()) room._rejoin();
    for (const request of this.pending.values()) if (!request.sent) this.#transmit(request);
  }

  // One request over HTTP; resolves with the reply frame the WebSocket would have sent (an
  // `error` frame included), rejects only when the server could not be reached.
  async #overHttp(frame) {
    const room = encodeURIComponent(frame.room ?? '');
    switch (frame.action) {
      case 'ping':
        return { type: 'pong' };
      case 'publish': {
        const reply = await this.#fetch('POST', `/rooms/${room}/events`, frame.id === undefined ? { data: frame.data } : { id: frame.id, data: frame.data });
        return reply.type === 'error' ? reply : { type: 'ack', ...reply };
      }
      case 'join':
      case 'sync': {
        const reply = await this.#fetch('GET', `/rooms/${room}/events?since=${frame.since ?? 0}`);
        if (reply.type === 'error') return reply;
        if (frame.action === 'sync') return { type: 'events', room: reply.room, events: reply.events, more: reply.more };
        // A silent join (presence needs a WebSocket), read from where the reply leaves off:
        // what the reader repeats is dropped by seq.
        const fresh = frame.since === undefined;
        // Left or closed while the read was on its way: no reader.
        if (this.closing || !this.rooms.has(frame.room)) return { type: 'joined', room: reply.room, seq: reply.seq, events: [], more: false };
        this.#follow(frame.room, fresh ? reply.seq : frame.since);
        return { type: 'joined', room: reply.room, seq: reply.seq, events: fresh ? [] : reply.events, more: fresh ? false : reply.more };
      }
      case 'leave':
        this.#unfollow(frame.room);
        return { type: 'left', room: frame.room };
      default:
        return { type: 'error', code: 'unavailable', message: `${frame.action} needs a WebSocket: over HTTP this client can publish and read rooms only` };
    }
  }

  // `waitS`: how long the server may hold the request (a long poll's wait).
  async #fetch(method, path, body, waitS = 0) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    // A request the network swallows (a proxy that never answers) is given up, and tried again.
    const signal = timeoutSignal(this.options.requestTimeoutMs + waitS * 1000);
    const response = await this.fetchImpl(`${this.httpUrl}${path}`, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    // The server answers a success with its JSON and a refusal with an error frame. Anything
    // else (a proxy's page, API Gateway's own `{"message": ...}` for a timeout or a throttle)
    // did not reach LiveSync, and is tried again.
    const reply = await response.json();
    if (response.ok ? typeof reply !== 'object' || reply === null : reply?.type !== 'error') {
      throw new Error(`HTTP ${response.status} from something other than the LiveSync API`);
    }
    return reply;
  }

  // Reads `room` after `since` for as long as it is joined: an EventSource (which resumes
  // with Last-Event-ID by itself) or a long-poll loop.
  #follow(room, since) {
    this.#unfollow(room);
    const reader = { stopped: false, source: null };
    this.readers.set(room, reader);
    const path = `/rooms/${encodeURIComponent(room)}`;
    // Streams are the local runner's: against a deployed stack's `httpUrl`, long polling.
    const kind = this.options.httpReader ?? (this.EventSourceImpl && this.options.httpUrl === undefined ? 'sse' : 'poll');
    // The events after `since` are gone: the room rejoins, and handles `expired` as it does.
    const expired = () => { if (this.readers.get(room) === reader) this.rooms.get(room)?._rejoin(); };
    if (kind === 'sse') {
      const params = new URLSearchParams({ since: String(since) });
      if (this.options.token) params.set('token', this.options.token);
      const source = new this.EventSourceImpl(`${this.httpUrl}${path}/stream?${params}`);
      reader.source = source;
      source.addEventListener('event', (e) => {
        try { this.#receive(JSON.parse(e.data)); } catch { /* not a frame: ignored, as on a socket */ }
      });
      // The server's own `error` event carries a frame; the EventSource's (a cut) has none,
      // and it reconnects by itself.
      source.addEventListener('error', (e) => {
        // A cut: the EventSource reconnects by itself. A refusal (401, 404, a proxy's page)
        // closes it for good: the room goes on with long polling from its last seq.
        if (!e.data && source.readyState === 2 && this.readers.get(room) === reader) {
          const at = this.rooms.get(room)?.lastSeq ?? since;
          this.options = { ...this.options, httpReader: 'poll' };
          this.#follow(room, at);
          return;
        }
        if (!e.data) return;
        source.close();
        let frame;
        try { frame = JSON.parse(e.data); } catch { return; }
        if (frame.code === 'expired') expired();
        else this.rooms.get(room)?.dispatchEvent(new CustomEvent('error', { detail: new LiveSyncError(frame) }));
      });
      return;
    }
    (async () => {
      let after = since;
      let failures = 0;
      while (!reader.stopped) {
        let page;
        try {
          page = await this.#fetch('GET', `${path}/events?since=${after}&wait=${POLL_WAIT_S}`, undefined, POLL_WAIT_S);
        } catch {
          failures += 1;
          await sleep(Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** failures));
          continue;
        }
        if (reader.stopped) return;
        if (page.type === 'error') {
          if (page.code === 'expired') return expired();
          this.rooms.get(room)?.dispatchEvent(new CustomEvent('error', { detail: new LiveSyncError(page) }));
          if (page.code === 'forbidden' || page.code === 'unauthorized') return;
          await sleep(this.options.maxBackoffMs);
          continue;
        }
        failures = 0;
        const events = Array.isArray(page.events) ? page.events : [];
        if (events.length > 0) {
          this.#receive({ type: 'events', room, events });
          after = events[events.length - 1].seq;
        }
      }
    })();
  }

  #unfollow(room) {
    const reader = this.readers.get(room);
    if (!reader) return;
    reader.stopped = true;
    reader.source?.close();
    this.readers.delete(room);
  }

  #scheduleReconnect() {
    this.#setState('reconnecting');
    const ceiling = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.attempt);
    // Full jitter: clients cut off together do not all come back at the same instant.
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#open(), wait);
  }

  #transmit(request) {
    if (this.transport === 'http') {
      const ref = request.frame.ref;
      request.sent = true;
      this.#overHttp(request.frame).then(
        (reply) => { if (this.pending.get(ref) === request) this.#receive({ ...reply, ref }); },
        // The server could not be reached: the same request again later (a write keeps its id).
        () => {
          request.sent = false;
          const wait = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** Math.min(request.tries = (request.tries ?? 0) + 1, 10));
          setTimeout(() => { if (this.pending.get(ref) === request && !this.closing) this.#transmit(request); }, wait);
        },
      );
      return;
    }
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(JSON.stringify(request.frame));
      request.sent = true;
      clearTimeout(request.timer);
      request.timer = setTimeout(() => {
        if (this.pending.get(request.frame.ref) !== request || !request.sent) return;
        this.pending.delete(request.frame.ref);
        request.reject(new LiveSyncError({ code: 'timeout', message: `no reply to ${request.frame.action} in ${this.options.requestTimeoutMs} ms` }));
      }, this.options.requestTimeoutMs);
    }
  }

  // Sends a frame and resolves with its reply (rejects with a LiveSyncError on an `error`).
  // Unanswered requests are sent again after a reconnect: give writes an `id`.
  request(frame) {
    this.nextRef += 1;
    const ref = `r${this.nextRef}`;
    return new Promise((resolve, reject) => {
      const request = { frame: { ...frame, ref }, resolve, reject, sent: false };
      this.pending.set(ref, request);
      this.#transmit(request);
    });
  }

  #receive(frame) {
    if (frame.ref !== undefined && this.pending.has(frame.ref)) {
      const request = this.pending.get(frame.ref);
      this.pending.delete(frame.ref);
      clearTimeout(request.timer);
      if (frame.type === 'error') {
        // The server failed (`internal`): the write may or may not be applied; an id makes
        // trying again safe.
        if (frame.code === 'internal' && request.frame.id !== undefined) {
          setTimeout(() => { this.pending.set(frame.ref, request); this.#transmit(request); }, 200);
          return;
        }
        request.reject(new LiveSyncError(frame));
      } else {
        request.resolve(frame);
      }
      return;
    }
    if (frame.type === 'event') this.rooms.get(frame.room)?._pushed([frame]);
    else if (frame.type === 'events') this.rooms.get(frame.room)?._pushed(frame.events);
  }

  // A room: its events come to `onEvent(event)` once each, in order. `since`: the last seq the
  // application already has (omitted: only new events). `user`: join as a member (presence).
  room(name, { since, user, onEvent } = {}) {
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(this, name, since ?? null, user);
      this.rooms.set(name, room);
      if (this.state === 'open') room._rejoin();
    }
    if (onEvent) room.addEventListener('event', (e) => onEvent(e.detail));
    return room;
  }

  publish(room, data, { id } = {}) {
    return this.request({ action: 'publish', room, data, id: id ?? newId('m') });
  }

  doc(room, name) { return new Doc(this.room(room), name); }
  text(room, name) { return new Text(this.room(room), name); }
  stock(room) { return new Stock(this.room(room)); }
  presence(room) { return new Presence(this.room(room)); }
}

export class Room extends EventTarget {
  constructor(client, name, since, user) {
    super();
    this.client = client;
    this.name = name;
    // The last seq delivered; null until the first join tells the head.
    this.lastSeq = since;
    this.user = user;
    // While joining or paging in a backlog, pushes wait here.
    this.catchingUp = true;
    this.held = [];
    this.joined = new Promise((resolve) => { this.resolveJoined = resolve; });
  }

  _disconnected() {
    this.catchingUp = true;
    this.held = [];
  }

  async _rejoin() {
    this.catchingUp = true;
    const frame = { action: 'join', room: this.name };
    if (this.user !== undefined) frame.user = this.user;
    if (this.lastSeq !== null) frame.since = this.lastSeq;
    let reply;
    try {
      reply = await this.client.request(frame);
    } catch (error) {
      if (error.code === 'expired' && this.#expired(error)) return this._rejoin();
      this.dispatchEvent(new CustomEvent('error', { detail: error }));
      return;
    }
    if (this.lastSeq === null) this.lastSeq = reply.seq;
    this.#deliverAll(reply.events);
    if (reply.more) await this.#page();
    this.#release();
    this.resolveJoined(reply);
  }

  // Pages in everything after lastSeq.
  async #page() {
    for (;;) {
      let reply;
      try {
        reply = await this.client.request({ action: 'sync', room: this.name, since: this.lastSeq });
      } catch (error) {
        if (error.code !== 'expired' || !this.#expired(error)) throw error;
        continue;
      }
      this.#deliverAll(reply.events);
      if (!reply.more) return;
    }
  }

  // The events after lastSeq have expired on the server (kept for its retention period): an
  // `expired` event tells the application to reload the room's state; the room goes on from
  // the oldest event still held.
  // Returns false for an `expired` error without a usable `oldest` (following it would ask for
  // the same events forever).
  #expired(error) {
    if (!Number.isInteger(error.oldest) || error.oldest <= (this.lastSeq ?? 0)) return false;
    this.dispatchEvent(new CustomEvent('expired', { detail: { after: this.lastSeq, oldest: error.oldest } }));
    this.lastSeq = error.oldest - 1;
    return true;
  }

  // Delivers the held pushes, in seq order, after a join or a gap fill.
  #release() {
    const held = this.held.sort((a, b) => a.seq - b.seq);
    this.held = [];
    this.catchingUp = false;
    this._pushed(held);
  }

  _pushed(events) {
    if (this.catchingUp) {
      this.held.push(...events);
      return;
    }
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (event.seq <= this.lastSeq) continue;
      if (event.seq === this.lastSeq + 1) {
        this.#deliver(event);
        continue;
      }
      // A gap: hold this and what follows, fill the gap, then carry on.
      this.catchingUp = true;
      this.held.push(...events.slice(i));
      this.#page().then(() => this.#release(), () => { this.catchingUp = false; });
      return;
    }
  }

  #deliverAll(events) {
    for (const event of events ?? []) if (event.seq > this.lastSeq) this.#deliver(event);
  }

  #deliver(event) {
    this.lastSeq = event.seq;
    this.dispatchEvent(new CustomEvent('event', { detail: event }));
  }

  publish(data, options) { return this.client.publish(this.name, data, options); }
  leave() {
    this.client.rooms.delete(this.name);
    return this.client.request({ action: 'leave', room: this.name });
  }
}

// A versioned JSON document. `update(change)` applies `change(value)` to the latest version and
// writes it; when another write came first (`conflict`), it applies `change` again to that one.
export class Doc extends EventTarget {
  constructor(room, name) {
    super();
    this.room = room;
    this.name = name;
    this.version = 0;
    this.value = null;
    room.addEventListener('event', (e) => {
      const event = e.detail;
      if (event.kind === 'doc' && event.data.doc === this.name && event.data.version > this.version) this.#set(event.data);
    });
    // Changes this client missed have expired on the server: read the document as it stands.
    room.addEventListener('expired', () => this.get().catch(() => {}));
  }

  #set(state) {
    this.version = state.version;
    this.value = state.deleted ? null : state.value;
    this.dispatchEvent(new CustomEvent('change', { detail: { version: this.version, value: this.value } }));
  }

  async get() {
    try {
      const doc = await this.room.client.request({ action: 'doc.get', room: this.room.name, doc: this.name });
      if (doc.version >= this.version) this.#set(doc);
    } catch (error) {
      if (error.code !== 'not_found') throw error;
    }
    return { version: this.version, value: this.value };
  }

  async update(change, { strategy, attempts = 20 } = {}) {
    let base = { version: this.version, value: this.value };
    for (let attempt = 0; attempt < attempts; attempt++) {
      const frame = { action: 'doc.put', room: this.room.name, doc: this.name, base: base.version, value: change(base.value), id: newId('d') };
      if (strategy && base.version === 0) frame.strategy = strategy;
      try {
        const doc = await this.room.client.request(frame);
        if (doc.version >= this.version) this.#set(doc);
        return doc;
      } catch (error) {
        if (error.code !== 'conflict' || !error.current) throw error;
        // Rebase: the change, on what is there now.
        this.dispatchEvent(new CustomEvent('conflict', { detail: error.current }));
        base = { version: error.current.version, value: error.current.deleted ? null : error.current.value };
      }
    }
    throw new Error(`doc ${this.name}: still conflicting after ${attempts} attempts`);
  }
}

// A collaborative text. `edit(newValue)` sends the change from the current value; remote edits
// arrive on 'change' with the new value. Every client converges on the server's text.
export class Text extends EventTarget {
  constructor(room, name) {
    super();
    this.room = room;
    this.name = name;
    this.value = '';
    this.client = null;
    this.inflightId = null;
    this.early = [];
    room.addEventListener('event', (e) => {
      const event = e.detail;
      if (event.kind === 'text' && event.data.doc === this.name) this.#remote(event);
    });
    // Edits this client missed have expired on the server: transforming later ones past a text
    // it no longer knows would corrupt it, so it starts again from the server's text.
    room.addEventListener('expired', () => this.load().catch(() => {}));
  }

  async load() {
    let state = { rev: 0, text: '' };
    try {
      state = await this.room.client.request({ action: 'text.get', room: this.room.name, doc: this.name });
    } catch (error) {
      if (error.code !== 'not_found') throw error;
    }
    this.value = state.text;
    this.client = new TextClient(state.rev, (rev, op) => this.#send(rev, op));
    const early = this.early;
    this.early = [];
    for (const event of early) this.#remote(event);
    this.dispatchEvent(new CustomEvent('change', { detail: this.value }));
    return this.value;
  }

  #send(rev, op) {
    this.inflightId = newId('t');
    this.room.client
      .request({ action: 'text.edit', room: this.room.name, doc: this.name, rev, ops: op.toJSON(), id: this.inflightId })
      .catch((error) => {
        // A refused edit (too far behind, or not fitting the text) cannot be kept: start again
        // from the server's text, dropping the local edits not yet accepted.
        this.dispatchEvent(new CustomEvent('error', { detail: error }));
        if (this.room.client.state !== 'closed') this.load().catch(() => {});
      });
  }

  // Events are the one order: our own edit's event acknowledges it; others' are transformed
  // past what we have not had acknowledged yet.
  #remote(event) {
    if (this.client === null) { this.early.push(event); return; }
    if (event.data.rev <= this.client.rev) return;
    if (event.id === this.inflightId) {
      this.inflightId = null;
      this.client.serverAck();
      return;
    }
    const op = this.client.applyServer(TextOperation.fromJSON(event.data.ops));
    this.value = op.apply(this.value);
    this.dispatchEvent(new CustomEvent('change', { detail: this.value }));
  }

  edit(newValue) {
    if (this.client === null) throw new Error('load() the text first');
    const op = diff(this.value, newValue);
    if (op.isNoop()) return;
    this.value = newValue;
    this.client.applyLocal(op);
  }
}

// Stock levels of a room's SKUs, live.
export class Stock extends EventTarget {
  constructor(room) {
    super();
    this.room = room;
    this.levels = new Map();
    room.addEventListener('event', (e) => {
      const event = e.detail;
      if (event.kind === 'stock') this.#set(event.data);
    });
    room.addEventListener('expired', () => this.load().catch(() => {}));
  }

  #set(level) {
    const known = this.levels.get(level.sku);
    if (known && known.version >= level.version) return;
    this.levels.set(level.sku, level);
    this.dispatchEvent(new CustomEvent('change', { detail: level }));
  }

  async load() {
    let after;
    for (;;) {
      const page = await this.room.client.request({ action: 'stock.get', room: this.room.name, ...(after ? { after } : {}) });
      for (const item of page.items) this.#set(item);
      if (!page.more || page.items.length === 0) return this.levels;
      after = page.items[page.items.length - 1].sku;
    }
  }

  set(sku, level) {
    return this.room.client.request({ action: 'stock.set', room: this.room.name, sku, level, id: newId('s') });
  }

  // A sale (negative delta) or a delivery. Give an order number as `id` to sell once however
  // often it is retried.
  adjust(sku, delta, { id } = {}) {
    return this.room.client.request({ action: 'stock.adjust', room: this.room.name, sku, delta, id: id ?? newId('s') });
  }
}

// Who is in a room (members that joined with a `user`), live.
export class Presence extends EventTarget {
  constructor(room) {
    super();
    this.room = room;
    this.members = new Map();
    room.addEventListener('event', (e) => {
      const event = e.detail;
      if (event.kind !== 'presence') return;
      if (event.data.joined) this.members.set(event.data.joined.session, event.data.joined.user);
      if (event.data.left) this.members.delete(event.data.left.session);
      this.dispatchEvent(new CustomEvent('change', { detail: this.list() }));
    });
    room.addEventListener('expired', () => this.load().catch(() => {}));
  }

  async load() {
    const reply = await this.room.client.request({ action: 'presence', room: this.room.name });
    this.members = new Map(reply.members.map((m) => [m.session, m.user]));
    this.dispatchEvent(new CustomEvent('change', { detail: this.list() }));
    return this.list();
  }

  list() {
    return [...this.members.entries()].map(([session, user]) => ({ session, user }));
  }
}
