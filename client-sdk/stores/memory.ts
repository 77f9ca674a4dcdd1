/** A store in memory: for tests, and for clients that keep nothing between runs. */
import type { Store, StoreWrite } from './store.js';

export class MemoryStore implements Store {
  readonly #data = new Map<string, Map<string, Uint8Array>>();

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    return this.#data.get(ns)?.get(key)?.slice();
  }

  async list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    const m = this.#data.get(ns);
    if (!m) return [];
    return [...m.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([k, v]) => [k, v.slice()]);
  }

  async commit(writes: readonly StoreWrite[]): Promise<void> {
    for (const w of writes) {
      let m = this.#data.get(w.ns);
      if (!m) this.#data.set(w.ns, (m = new Map()));
      if ('value' in w) m.set(w.key, w.value.slice());
      else m.delete(w.key);
    }
  }

  async close(): Promise<void> {}
}
