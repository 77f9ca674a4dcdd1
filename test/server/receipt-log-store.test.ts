/**
 * The receipt log's SQL store on each driver: appends in batches give the RFC 6962 root
 * of all leaves so far (checked against the in-memory tree), a leaf repeated keeps its
 * index, and a tree whose stored nodes no longer give its head root is never extended.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { appendLeaves, leafHash, treeHash } from '../../crypto/tlog/merkle.js';
import { MemoryNodeStore } from '../../crypto/tlog/memory-store.js';
import { type LeafInput, LogStore, type TreeMath } from '../../server/log/store.js';
import type { Database } from '../../server/storage/database.js';
import { migrate } from '../../server/storage/migrate.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

const math: TreeMath = {
  append: (size, hashes, read) => appendLeaves(size, hashes, read, defaultBackend),
  root: (size, read) => treeHash(size, read, defaultBackend),
};

const encoder = new TextEncoder();
function leaf(i: number): LeafInput {
  const receipt = `receipt-${i}`;
  return { leafHash: leafHash(encoder.encode(receipt)), receipt, recipientUser: 'bob', recipientDevice: 'phone', parties: ['bob', `sender-${i % 3}`] };
}

describe.each(STORAGE_DRIVERS)('receipt log store on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`receipt log store on ${driver.name}`);
    return;
  }
  let db: Database;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    await migrate(db);
  });

  afterAll(async () => {
    await cleanup?.();
  });

  it('appends batches into the RFC 6962 tree, keeps a repeated leaf at its index, and refuses to extend a damaged tree', async () => {
    const store = new LogStore(db);
    const memory = new MemoryNodeStore();
    const all = Array.from({ length: 300 }, (_, i) => leaf(i));
    for (const [from, to] of [[0, 1], [1, 2], [2, 7], [7, 256], [256, 300]] as const) {
      const batch = all.slice(from, to);
      const { results, head } = await store.append(batch, 1000 + from, math);
      expect(results).toEqual(batch.map((_, k) => ({ index: from + k, duplicate: false })));
      const root = await memory.append(batch.map((l) => l.leafHash));
      expect(head).toEqual({ size: to, root });
      expect(await store.treeHead()).toEqual({ size: to, root });
    }
    // Repeats, from an earlier batch and within the batch, keep one index.
    const again = await store.append([all[5]!, leaf(300), leaf(300)], 2000, math);
    expect(again.results).toEqual([
      { index: 5, duplicate: true },
      { index: 300, duplicate: false },
      { index: 300, duplicate: true },
    ]);
    expect((await store.leavesOf('sender-1', 0, 500)).map((l) => l.index)).toEqual(
      [...all, leaf(300)].map((_, i) => i).filter((i) => i % 3 === 1),
    );

    // A stored node changed behind the log's back: no further append, the head stays.
    const head = await store.treeHead();
    await db.query('UPDATE log_nodes SET hash = $1 WHERE level = 0 AND idx = 300', [new Uint8Array(32)]);
    await expect(store.append([leaf(301)], 3000, math)).rejects.toThrow(/do not give the tree head root/);
    expect(await store.treeHead()).toEqual(head);
  });
});
