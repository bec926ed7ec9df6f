// Type declarations for livesync.js (LiveSync's client) and ot.js.

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Event<T = unknown> {
  room: string;
  seq: number;
  id: string;
  from: string;
  /** Absent for a publish; set by the server for state changes. */
  kind?: 'doc' | 'text' | 'stock' | 'presence' | 'report';
  data: T;
  /** Acceptance time, milliseconds since the Unix epoch. */
  ts: number;
}

export interface Options {
  /** A JWT, sent as `?token=` on connect. */
  token?: string;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Under API Gateway's 10-minute idle timeout. */
  pingIntervalMs?: number;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** A WebSocket class, where there is no global one. */
  WebSocket?: typeof WebSocket;
  /**
   * `auto` (default): a WebSocket, or HTTP when `fallbackAfter` attempts in a row fail before
   * one has ever opened. `websocket`: never HTTP. `http`: HTTP from the start.
   * Over HTTP, rooms are read (Server-Sent Events or long polling) and published to; other
   * actions are refused with code `unavailable`.
   */
  transport?: 'auto' | 'websocket' | 'http';
  fallbackAfter?: number;
  /** The HTTP API's base URL; default: the WebSocket URL with http(s) (the local runner). */
  httpUrl?: string;
  /** `sse` (the local runner) or `poll` (a deployed stack); default `sse` where EventSource exists. */
  httpReader?: 'sse' | 'poll';
  EventSource?: typeof EventSource;
  fetch?: typeof fetch;
}

/** A refusal from the server. */
export class LiveSyncError extends Error {
  code: string;
  current?: { version: number; value: unknown; deleted?: boolean };
  level?: number;
  retryAfterMs?: number;
  /** With `expired`: the oldest seq of the room still held. */
  oldest?: number;
}

export function newId(prefix?: string): string;

export class LiveSync extends EventTarget {
  constructor(url: string, options?: Options);
  readonly state: ConnectionState;
  /** What carries the frames now; a `transport` event says when it becomes `http`. */
  readonly transport: 'websocket' | 'http';
  readonly rooms: Map<string, Room>;
  /** Resolves once the connection is open the first time. */
  connect(): Promise<void>;
  close(): void;
  /** Cuts the socket as a network failure would; the client reconnects by itself. */
  drop(): void;
  /** Any client frame; resolves with its reply, rejects with a LiveSyncError. */
  request<R = any>(frame: Record<string, unknown>): Promise<R>;
  room(name: string, options?: { since?: number; user?: string; onEvent?: (event: Event) => void }): Room;
  publish(room: string, data: unknown, options?: { id?: string }): Promise<{ type: 'ack'; room: string; seq: number; id: string }>;
  doc<T = any>(room: string, name: string): Doc<T>;
  text(room: string, name: string): Text;
  stock(room: string): Stock;
  presence(room: string): Presence;
  addEventListener(type: 'state', listener: (event: CustomEvent<ConnectionState>) => void): void;
  addEventListener(type: 'transport', listener: (event: CustomEvent<'http'>) => void): void;
}

export class Room extends EventTarget {
  readonly name: string;
  /** The last seq delivered (null before the first join). */
  readonly lastSeq: number | null;
  /** Resolves with the `joined` reply once the room is joined and its backlog paged in. */
  readonly joined: Promise<{ seq: number }>;
  publish(data: unknown, options?: { id?: string }): Promise<{ seq: number; id: string }>;
  leave(): Promise<unknown>;
  addEventListener(type: 'event', listener: (event: CustomEvent<Event>) => void): void;
  /** Events after `after` expired on the server: reload the room's state; the room goes on from `oldest`. */
  addEventListener(type: 'expired', listener: (event: CustomEvent<{ after: number; oldest: number }>) => void): void;
}

export class Doc<T = any> extends EventTarget {
  readonly version: number;
  readonly value: T | null;
  get(): Promise<{ version: number; value: T | null }>;
  /** Applies `change` to the latest value; on a conflict, again to the value that won. */
  update(change: (value: T | null) => T, options?: { strategy?: 'reject' | 'lww' | 'merge'; attempts?: number }): Promise<unknown>;
  addEventListener(type: 'change', listener: (event: CustomEvent<{ version: number; value: T | null }>) => void): void;
  addEventListener(type: 'conflict', listener: (event: CustomEvent<{ version: number; value: T }>) => void): void;
}

export class Text extends EventTarget {
  readonly value: string;
  load(): Promise<string>;
  /** The user's new value; the change from the current one is sent. */
  edit(newValue: string): void;
  addEventListener(type: 'change', listener: (event: CustomEvent<string>) => void): void;
  addEventListener(type: 'error', listener: (event: CustomEvent<LiveSyncError>) => void): void;
}

export interface StockLevel { sku: string; level: number; version: number; delta?: number }

export class Stock extends EventTarget {
  readonly levels: Map<string, StockLevel>;
  load(): Promise<Map<string, StockLevel>>;
  set(sku: string, level: number): Promise<StockLevel>;
  adjust(sku: string, delta: number, options?: { id?: string }): Promise<StockLevel>;
  addEventListener(type: 'change', listener: (event: CustomEvent<StockLevel>) => void): void;
}

export class Presence extends EventTarget {
  load(): Promise<{ session: string; user: string }[]>;
  list(): { session: string; user: string }[];
  addEventListener(type: 'change', listener: (event: CustomEvent<{ session: string; user: string }[]>) => void): void;
}

export { TextOperation, TextClient, diff } from './ot.js';
