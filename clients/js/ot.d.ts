// Type declarations for ot.js: ot.js-compatible text operations and client.

export type Component = number | string;

export class TextOperation {
  ops: Component[];
  baseLength: number;
  targetLength: number;
  retain(n: number): this;
  insert(s: string): this;
  delete(n: number | string): this;
  isNoop(): boolean;
  apply(text: string): string;
  compose(other: TextOperation): TextOperation;
  toJSON(): Component[];
  static fromJSON(ops: Component[]): TextOperation;
  static transform(a: TextOperation, b: TextOperation): [TextOperation, TextOperation];
}

/** The operation turning `before` into `after` (one change, whole characters). */
export function diff(before: string, after: string): TextOperation;

export class TextClient {
  constructor(rev: number, send: (rev: number, op: TextOperation) => void);
  rev: number;
  inflight: TextOperation | null;
  buffer: TextOperation | null;
  applyLocal(op: TextOperation): void;
  serverAck(): void;
  applyServer(op: TextOperation): TextOperation;
  resend(): void;
}
