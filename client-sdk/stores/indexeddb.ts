/**
 * A store in the browser's IndexedDB: one database per store name, one object store of
 * records keyed by [namespace, key]. A commit is one readwrite transaction, complete
 * (durable, with relaxed durability off) before it resolves; reads are readonly
 * transactions. IndexedDB is shared by every tab of an origin: run one client per store.
 */
import { SdkError } from '../errors.js';
import type { Store, StoreWrite } from './store.js';

const OBJECT_STORE = 'records';
const VERSION = 1;

type IdbFactory = {
  open(name: string, version?: number): IdbOpenRequest;
};
type IdbRequest<T> = { result: T; error: unknown; onsuccess: (() => void) | null; onerror: (() => void) | null };
type IdbOpenRequest = IdbRequest<IdbDatabase> & { onupgradeneeded: (() => void) | null; onblocked: (() => void) | null };
type IdbDatabase = {
  objectStoreNames: { contains(n: string): boolean };
  createObjectStore(n: string): unknown;
  transaction(stores: string, mode: 'readonly' | 'readwrite', opts?: { durability?: 'strict' | 'relaxed' | 'default' }): IdbTransaction;
  close(): void;
};
type IdbTransaction = {
  objectStore(n: string): IdbObjectStore;
  oncomplete: (() => void) | null;
  onabort: (() => void) | null;
  error: unknown;
  abort(): void;
};
type IdbObjectStore = {
  get(key: unknown): IdbRequest<unknown>;
  put(value: unknown, key: unknown): IdbRequest<unknown>;
  delete(key: unknown): IdbRequest<unknown>;
  getAll(range: unknown): IdbRequest<unknown[]>;
  getAllKeys(range: unknown): IdbRequest<unknown[]>;
};
type IdbKeyRangeStatic = { bound(lower: unknown, upper: unknown, lowerOpen?: boolean, upperOpen?: boolean): unknown };

function request<T>(r: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/**
 * The exclusive upper bound of the keys [ns, k] with k starting with `prefix`: [ns, the
 * prefix with its last UTF-16 code unit raised by one], trailing U+FFFF units dropped
 * first. With no such string (an empty prefix, or one of U+FFFF units only) every string
 * of the namespace qualifies, and [ns, []] is above them all (arrays sort after strings).
 */
function prefixEnd(ns: string, prefix: string): [string, string | []] {
  let end = prefix;
  while (end.length > 0 && end.charCodeAt(end.length - 1) === 0xffff) end = end.slice(0, -1);
  if (end.length === 0) return [ns, []];
  return [ns, end.slice(0, -1) + String.fromCharCode(end.charCodeAt(end.length - 1) + 1)];
}

function bytesOf(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new SdkError('STORE_CORRUPT', 'an IndexedDB record is not bytes');
}

export class IndexedDbStore implements Store {
  readonly #db: IdbDatabase;
  readonly #range: IdbKeyRangeStatic;

  private constructor(db: IdbDatabase, range: IdbKeyRangeStatic) {
    this.#db = db;
    this.#range = range;
  }

  /** Opens (creating) the store called `name` in this origin's IndexedDB. */
  static async open(name: string, factory?: IdbFactory, keyRange?: IdbKeyRangeStatic): Promise<IndexedDbStore> {
    const g = globalThis as { indexedDB?: IdbFactory; IDBKeyRange?: IdbKeyRangeStatic };
    const idb = factory ?? g.indexedDB;
    const range = keyRange ?? g.IDBKeyRange;
    if (!idb || !range) throw new SdkError('INVALID_ARGUMENT', 'IndexedDB is not available in this runtime');
    const req = idb.open(`hermetic:${name}`, VERSION);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(OBJECT_STORE)) req.result.createObjectStore(OBJECT_STORE);
    };
    return new IndexedDbStore(await request(req), range);
  }

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    const tx = this.#db.transaction(OBJECT_STORE, 'readonly');
    const v = await request(tx.objectStore(OBJECT_STORE).get([ns, key]));
    return v === undefined ? undefined : bytesOf(v).slice();
  }

  async list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    const tx = this.#db.transaction(OBJECT_STORE, 'readonly');
    const os = tx.objectStore(OBJECT_STORE);
    const range = this.#range.bound([ns, prefix], prefixEnd(ns, prefix), false, true);
    const [keys, values] = await Promise.all([request(os.getAllKeys(range)), request(os.getAll(range))]);
    return keys.map((k, i) => [(k as [string, string])[1], bytesOf(values[i]).slice()]);
  }

  commit(writes: readonly StoreWrite[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const tx = this.#db.transaction(OBJECT_STORE, 'readwrite', { durability: 'strict' });
      let refused: unknown;
      tx.oncomplete = () => resolve();
      // A failed request aborts the whole transaction (its error event is not cancelled);
      // the abort settles the commit, with the request's error as tx.error.
      tx.onabort = () => reject(refused ?? tx.error ?? new SdkError('STORE_CORRUPT', 'the IndexedDB transaction was aborted'));
      const os = tx.objectStore(OBJECT_STORE);
      try {
        for (const w of writes) {
          if ('value' in w) os.put(w.value.slice(), [w.ns, w.key]);
          else os.delete([w.ns, w.key]);
        }
      } catch (err) {
        // A write refused on the spot (a value that cannot be stored) must take the writes
        // already queued in this transaction with it: left alone they would auto-commit.
        refused = err;
        tx.abort();
      }
    });
  }

  async close(): Promise<void> {
    this.#db.close();
  }
}
