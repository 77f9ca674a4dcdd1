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
 * The client runs one transaction at a time (reads, then one commit), so a store needs no
 * isolation of its own beyond that; but only one client may use a store at a time.
 * Values are opaque bytes; namespaces and keys are short printable strings.
 */
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
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
} as const;

/**
 * One transaction: reads see the transaction's own writes; `commit` hands the write set
 * to the store in one call.
 */
export class StoreTx {
  readonly #store: Store;
  readonly #writes = new Map<string, StoreWrite>();

  constructor(store: Store) {
    this.#store = store;
  }

  static #slot(ns: string, key: string): string {
    return `${ns}\u0000${key}`;
  }

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    const w = this.#writes.get(StoreTx.#slot(ns, key));
    if (w) return 'value' in w ? w.value : undefined;
    return this.#store.get(ns, key);
  }

  async list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    const rows = new Map(await this.#store.list(ns, prefix));
    for (const w of this.#writes.values()) {
      if (w.ns !== ns || !w.key.startsWith(prefix)) continue;
      if ('value' in w) rows.set(w.key, w.value);
      else rows.delete(w.key);
    }
    return [...rows.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  put(ns: string, key: string, value: Uint8Array): void {
    const slot = StoreTx.#slot(ns, key);
    this.#writes.delete(slot); // keep the last write of a key in write order
    this.#writes.set(slot, { ns, key, value });
  }

  delete(ns: string, key: string): void {
    const slot = StoreTx.#slot(ns, key);
    this.#writes.delete(slot);
    this.#writes.set(slot, { ns, key, delete: true });
  }

  get size(): number {
    return this.#writes.size;
  }

  writes(): StoreWrite[] {
    return [...this.#writes.values()];
  }
}

/** Runs transactions one at a time against a store. */
export class Transactor {
  #tail: Promise<unknown> = Promise.resolve();

  constructor(readonly store: Store) {}

  /** Runs `fn` with a transaction and commits its writes when it returns. */
  run<T>(fn: (tx: StoreTx) => Promise<T> | T): Promise<T> {
    const result = this.#tail.then(async () => {
      const tx = new StoreTx(this.store);
      const value = await fn(tx);
      if (tx.size > 0) await this.store.commit(tx.writes());
      return value;
    });
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Structured records as UTF-8 JSON, bytes as `{"$b": "<base64url>"}`: readable when
 * debugging a store, and versioned by the record's own fields.
 */
export function encodeRecord(value: unknown): Uint8Array {
  return encoder.encode(
    JSON.stringify(value, function (this: unknown, _k, v: unknown) {
      return v instanceof Uint8Array ? { $b: toB64(v) } : v;
    }),
  );
}

/** Reads a record written by encodeRecord; anything else is STORE_CORRUPT. */
export function decodeRecord<T>(bytes: Uint8Array): T {
  try {
    return parseRecord<T>(bytes);
  } catch (cause) {
    throw new SdkError('STORE_CORRUPT', 'a stored record does not decode', { cause });
  }
}

function parseRecord<T>(bytes: Uint8Array): T {
  return JSON.parse(decoder.decode(bytes), (_k, v: unknown) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $b?: unknown }).$b === 'string') {
      return fromB64((v as { $b: string }).$b);
    }
    return v;
  }) as T;
}


function toB64(b: Uint8Array): string {
  return encodeBase64url(b);
}

function fromB64(s: string): Uint8Array {
  const b = decodeBase64url(s);
  if (b === undefined) throw new Error('store record holds bytes that are not base64url');
  return b;
}
