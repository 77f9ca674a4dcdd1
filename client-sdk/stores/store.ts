/**
 * Where a client keeps its state: its identity and prekeys, sessions, the device lists
 * it verified, trust decisions, the outbox and the inbox. An application may bring its
 * own store; it implements this interface:
 *
 *   - `get` and `list` read committed values (`list` in key order, by UTF-16 code unit);
 *   - `commit` applies a set of writes **atomically and durably**: after it resolves, all
 *     of them survive a crash; if it rejects or the process dies first, none of them
 *     may be visible after a restart. Writes within one set apply in order.
 *
 * The client runs one transaction at a time, so a store needs no isolation of its own;
 * but only one client may use a store at a time. Transactions that end while a commit is
 * under way are committed together in one later `commit` call (a group commit: one disk
 * flush for many of them); each transaction's caller hears of its result only once that
 * commit resolved. Values are opaque bytes; namespaces and keys are short printable strings.
 */
import { decodeBase64url } from '../../protocol/base64url.js';
import { SdkError } from '../errors.js';

export type StoreWrite =
  | { readonly ns: string; readonly key: string; readonly value: Uint8Array }
  | { readonly ns: string; readonly key: string; readonly delete: true };

export interface Store {
  get(ns: string, key: string): Promise<Uint8Array | undefined>;
  list(ns: string, prefix?: string): Promise<Array<[string, Uint8Array]>>;
  commit(writes: readonly StoreWrite[]): Promise<void>;
  close(): Promise<void>;
}

/** The namespaces the client uses. */
export const NS = {
  meta: 'meta',
  prekeys: 'prekeys',
  sessions: 'sessions',
  devices: 'devices',
  trust: 'trust',
  outbox: 'outbox',
  inbox: 'inbox',
  seen: 'seen',
  groups: 'groups',
  senderKeys: 'sender-keys',
  /** Per-conversation message numbers (ours) and what we saw of others' (anomalies.ts). */
  conversations: 'conversations',
  /** Receipts (receipts.ts), one namespace per use, so that listing one never reads the
   * others: awaited by the sender, kept once verified, pending signature, queued for the log. */
  receipts: 'receipts',
  receiptsKept: 'receipts-kept',
  receiptsPending: 'receipts-pending',
  receiptsLog: 'receipts-log',
  /** Signed events: hash chains and idempotency keys (events.ts). */
  events: 'events',
  /** Topics (topics.ts): our topic key generations, those we hold of others, publishes. */
  topics: 'topics',
} as const;

/**
 * One transaction: reads see the transaction's own writes; `commit` hands the write set
 * to the store in one call.
 */
type StoreReader = Pick<Store, 'get' | 'list'>;

function slotOf(ns: string, key: string): string {
  return `${ns}\u0000${key}`;
}

/** Adds a write to a write set, keeping the last write of each key in write order. */
function addWrite(set: Map<string, StoreWrite>, w: StoreWrite): void {
  const slot = slotOf(w.ns, w.key);
  set.delete(slot);
  set.set(slot, w);
}

/** Rows of `ns` under `prefix` from `base`, with each write set applied over them in turn. */
async function listThrough(base: StoreReader, ns: string, prefix: string, layers: ReadonlyArray<Map<string, StoreWrite> | undefined>): Promise<Array<[string, Uint8Array]>> {
  const rows = new Map(await base.list(ns, prefix));
  for (const layer of layers) {
    if (layer === undefined) continue;
    for (const w of layer.values()) {
      if (w.ns !== ns || !w.key.startsWith(prefix)) continue;
      if ('value' in w) rows.set(w.key, w.value);
      else rows.delete(w.key);
    }
  }
  return [...rows.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

export class StoreTx {
  readonly #store: StoreReader;
  readonly #writes = new Map<string, StoreWrite>();

  constructor(store: StoreReader) {
    this.#store = store;
  }

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    const w = this.#writes.get(slotOf(ns, key));
    if (w) return 'value' in w ? w.value : undefined;
    return this.#store.get(ns, key);
  }

  list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    return listThrough(this.#store, ns, prefix, [this.#writes]);
  }

  put(ns: string, key: string, value: Uint8Array): void {
    addWrite(this.#writes, { ns, key, value });
  }

  delete(ns: string, key: string): void {
    addWrite(this.#writes, { ns, key, delete: true });
  }

  get size(): number {
    return this.#writes.size;
  }

  writes(): StoreWrite[] {
    return [...this.#writes.values()];
  }
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Runs transactions one at a time against a store, with group commit: a transaction's
 * writes join the next batch as soon as it returns, and the next transaction starts at
 * once, reading through the batches not yet committed. One batch is committed at a time,
 * in order, atomically (one `commit` call); `run` resolves once the batch holding the
 * transaction's writes (or, for a transaction without writes, every batch it could have
 * read from) is committed. So nothing a transaction returns is seen by its caller before
 * what it read and wrote is durable, exactly as with one commit per transaction.
 *
 * If a commit fails, its transactions and every later one that ran over its writes
 * reject with the store's error, and what they wrote is forgotten.
 */
export class Transactor {
  #tail: Promise<unknown> = Promise.resolve();
  /** The batch being committed. */
  #committing: Map<string, StoreWrite> | undefined;
  /** The batch that commits next, and who waits for it. */
  #next = new Map<string, StoreWrite>();
  #nextWaiters: Waiter[] = [];
  /** Bumped by a failed commit: a transaction that began before it rejects. */
  #epoch = 0;
  #failure: unknown;
  readonly #view: StoreReader;

  constructor(readonly store: Store) {
    const layers = (): Array<Map<string, StoreWrite> | undefined> => [this.#committing, this.#next];
    this.#view = {
      get: async (ns, key) => {
        const slot = slotOf(ns, key);
        const w = this.#next.get(slot) ?? this.#committing?.get(slot);
        if (w) return 'value' in w ? w.value.slice() : undefined;
        return this.store.get(ns, key);
      },
      list: async (ns, prefix = '') => (await listThrough(this.store, ns, prefix, layers())).map(([k, v]) => [k, v.slice()]),
    };
  }

  /** Runs `fn` with a transaction; resolves with its value once its writes are committed. */
  run<T>(fn: (tx: StoreTx) => Promise<T> | T): Promise<T> {
    const ran = this.#tail.then(async () => {
      const epoch = this.#epoch;
      const tx = new StoreTx(this.#view);
      const value = await fn(tx);
      if (epoch !== this.#epoch) throw this.#failure;
      return { value, durable: this.#enqueue(tx.writes()) };
    });
    this.#tail = ran.catch(() => undefined);
    return ran.then(async ({ value, durable }) => {
      await durable;
      return value;
    });
  }

  #enqueue(writes: readonly StoreWrite[]): Promise<void> {
    if (writes.length === 0 && this.#committing === undefined && this.#next.size === 0) return Promise.resolve();
    for (const w of writes) addWrite(this.#next, w);
    const durable = new Promise<void>((resolve, reject) => this.#nextWaiters.push({ resolve, reject }));
    this.#commitNext();
    return durable;
  }

  #commitNext(): void {
    if (this.#committing !== undefined || this.#nextWaiters.length === 0) return;
    const batch = this.#next;
    const waiters = this.#nextWaiters;
    this.#next = new Map();
    this.#nextWaiters = [];
    this.#committing = batch;
    let done: Promise<void>;
    try {
      done = batch.size > 0 ? this.store.commit([...batch.values()]) : Promise.resolve();
    } catch (err) {
      // A store that throws instead of rejecting (e.g. closed): the same as a failed commit.
      done = Promise.reject(err);
    }
    done.then(
      () => {
        this.#committing = undefined;
        for (const w of waiters) w.resolve();
        this.#commitNext();
      },
      (err: unknown) => {
        // Everything queued after the batch was computed over its writes: all of it fails.
        const all = [...waiters, ...this.#nextWaiters];
        this.#committing = undefined;
        this.#next = new Map();
        this.#nextWaiters = [];
        this.#epoch++;
        this.#failure = err;
        for (const w of all) w.reject(err);
      },
    );
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/*
 * Structured records (plain objects, arrays, strings, numbers, booleans, null and bytes)
 * in a compact binary form: a record is written and read several times per message, and
 * the bytes it holds (session states, ciphertexts, bodies) are copied as they are, not
 * text-encoded. Layout: the byte 0x00 (never the first byte of JSON text), the format
 * version 0x01, then one value:
 *
 *   0 null | 1 false | 2 true | 3 float64 (LE) | 4 unsigned integer (LEB128, up to 2^53)
 *   5 string (LEB128 length, UTF-8) | 6 bytes (LEB128 length, bytes)
 *   7 array (LEB128 count, values) | 8 object (LEB128 count, then key string, value)
 *
 * An object property that is `undefined` is left out and an `undefined` array item is
 * null, as JSON does. Records written by earlier versions as JSON (bytes as
 * `{"$b": "<base64url>"}`) are still read.
 */
const BINARY_MARK = 0x00;
const BINARY_V1 = 0x01;
const T_NULL = 0;
const T_FALSE = 1;
const T_TRUE = 2;
const T_FLOAT = 3;
const T_UINT = 4;
const T_STRING = 5;
const T_BYTES = 6;
const T_ARRAY = 7;
const T_OBJECT = 8;
/** Nesting deeper than this is refused (the client's records are a few levels deep). */
const MAX_RECORD_DEPTH = 32;
/** Strings longer than this (in UTF-16 code units) are refused: their length field has at most 4 bytes. */
const MAX_RECORD_STRING = 2 ** 26;

class RecordWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(buf: Uint8Array) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }

  uint(v: number): void {
    this.reserve(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  string(s: string): void {
    if (s.length > MAX_RECORD_STRING) throw new Error('a store record string is too long');
    // At most 3 bytes per UTF-16 code unit; the length is written once it is known.
    this.reserve(8 + s.length * 3);
    const start = this.pos;
    const lengthBytes = s.length * 3 < 0x80 ? 1 : s.length * 3 < 0x4000 ? 2 : s.length * 3 < 0x20_0000 ? 3 : 4;
    const { written } = encoder.encodeInto(s, this.buf.subarray(start + lengthBytes));
    let v = written;
    for (let i = 0; i < lengthBytes; i++) {
      this.buf[start + i] = (v % 0x80) | (i < lengthBytes - 1 ? 0x80 : 0);
      v = Math.floor(v / 0x80);
    }
    this.pos = start + lengthBytes + written;
  }

  value(v: unknown, depth: number): void {
    if (depth > MAX_RECORD_DEPTH) throw new Error('store record nested too deeply');
    if (v === null || v === undefined) return this.u8(T_NULL);
    switch (typeof v) {
      case 'boolean':
        return this.u8(v ? T_TRUE : T_FALSE);
      case 'number':
        if (Number.isSafeInteger(v) && v >= 0 && !Object.is(v, -0)) {
          this.u8(T_UINT);
          return this.uint(v);
        }
        this.u8(T_FLOAT);
        this.reserve(8);
        this.view.setFloat64(this.pos, v, true);
        this.pos += 8;
        return;
      case 'string':
        this.u8(T_STRING);
        return this.string(v);
      case 'object':
        break;
      default:
        throw new Error(`a store record cannot hold a ${typeof v}`);
    }
    if (v instanceof Uint8Array) {
      this.u8(T_BYTES);
      this.uint(v.length);
      this.reserve(v.length);
      this.buf.set(v, this.pos);
      this.pos += v.length;
      return;
    }
    if (Array.isArray(v)) {
      this.u8(T_ARRAY);
      this.uint(v.length);
      for (const item of v) this.value(item, depth + 1);
      return;
    }
    if (Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== null) throw new Error('a store record holds plain objects only');
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    this.u8(T_OBJECT);
    this.uint(entries.length);
    for (const [k, x] of entries) {
      this.string(k);
      this.value(x, depth + 1);
    }
  }
}

class RecordReader {
  pos = 2;
  readonly view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  #need(n: number): void {
    if (n > this.buf.length - this.pos) throw new SdkError('STORE_CORRUPT', 'a store record is cut short');
  }

  uint(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      this.#need(1);
      const b = this.buf[this.pos++] as number;
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 0x80;
    }
    throw new SdkError('STORE_CORRUPT', 'a store record holds an overlong number');
  }

  string(): string {
    const n = this.uint();
    this.#need(n);
    const s = decoder.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }

  value(depth: number): unknown {
    if (depth > MAX_RECORD_DEPTH) throw new SdkError('STORE_CORRUPT', 'a store record nested too deeply');
    this.#need(1);
    const tag = this.buf[this.pos++];
    switch (tag) {
      case T_NULL:
        return null;
      case T_FALSE:
        return false;
      case T_TRUE:
        return true;
      case T_UINT:
        return this.uint();
      case T_FLOAT: {
        this.#need(8);
        const v = this.view.getFloat64(this.pos, true);
        this.pos += 8;
        return v;
      }
      case T_STRING:
        return this.string();
      case T_BYTES: {
        const n = this.uint();
        this.#need(n);
        // A copy: the caller may keep it after the store reuses its buffer.
        const b = this.buf.slice(this.pos, this.pos + n);
        this.pos += n;
        return b;
      }
      case T_ARRAY: {
        const n = this.uint();
        // Every item takes at least one byte: a count beyond what is left is corrupt.
        this.#need(n);
        const out: unknown[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
        return out;
      }
      case T_OBJECT: {
        const n = this.uint();
        this.#need(2 * n);
        const out: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) {
          const k = this.string();
          if (k === '__proto__') throw new SdkError('STORE_CORRUPT', 'a store record holds a forbidden key');
          out[k] = this.value(depth + 1);
        }
        return out;
      }
      default:
        throw new SdkError('STORE_CORRUPT', `a store record holds an unknown tag ${String(tag)}`);
    }
  }
}

/** Records are encoded into this buffer, kept between calls (grown as needed, up to
 * MAX_KEPT_SCRATCH bytes), and copied out: no buffer growth per record. */
let scratch: Uint8Array = new Uint8Array(4096);
const MAX_KEPT_SCRATCH = 1 << 20;

export function encodeRecord(value: unknown): Uint8Array {
  const w = new RecordWriter(scratch);
  try {
    w.u8(BINARY_MARK);
    w.u8(BINARY_V1);
    w.value(value, 0);
    const out = w.buf.slice(0, w.pos);
    if (w.buf !== scratch && w.buf.length <= MAX_KEPT_SCRATCH) scratch = w.buf;
    return out;
  } finally {
    // What a record held (session states, bodies) is not left behind in the buffer.
    w.buf.fill(0, 0, w.pos);
  }
}

/** Reads a record written by encodeRecord; anything else is STORE_CORRUPT. */
export function decodeRecord<T>(bytes: Uint8Array): T {
  try {
    return parseRecord<T>(bytes);
  } catch (cause) {
    if (cause instanceof SdkError) throw cause;
    throw new SdkError('STORE_CORRUPT', 'a stored record does not decode', { cause });
  }
}

function parseRecord<T>(bytes: Uint8Array): T {
  if (bytes.length >= 2 && bytes[0] === BINARY_MARK) {
    if (bytes[1] !== BINARY_V1) throw new SdkError('STORE_CORRUPT', `a store record of unknown format ${String(bytes[1])}`);
    const r = new RecordReader(bytes);
    const v = r.value(0);
    if (r.pos !== bytes.length) throw new SdkError('STORE_CORRUPT', 'a store record has trailing bytes');
    return v as T;
  }
  return decodeJsonRecord<T>(bytes);
}

/** A record an earlier version wrote: UTF-8 JSON, bytes as `{"$b": "<base64url>"}`. */
function decodeJsonRecord<T>(bytes: Uint8Array): T {
  return JSON.parse(decoder.decode(bytes), (_k, v: unknown) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $b?: unknown }).$b === 'string') {
      const b = decodeBase64url((v as { $b: string }).$b);
      if (b === undefined) throw new SdkError('STORE_CORRUPT', 'store record holds bytes that are not base64url');
      return b;
    }
    return v;
  }) as T;
}
