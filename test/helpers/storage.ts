/**
 * In-process databases for store-level tests, one per storage driver: PGlite in memory,
 * and a freshly created PostgreSQL database (unavailable without a server; see pg.ts).
 * Each `open()` gives an empty database and a cleanup that closes and drops it.
 */
import { defaultBackend } from '../../crypto/primitives/index.js';
import type { DirectoryStore } from '../../server/directory/store.js';
import type { Database } from '../../server/storage/database.js';
import { type TestDevice, verifiedChain } from './device.js';
import { openPg } from '../../server/storage/pg.js';
import { openPglite } from '../../server/storage/pglite.js';
import { createTestDatabase, pgServer } from './pg.js';

export interface StorageDriver {
  readonly name: 'pglite' | 'pg';
  readonly available: boolean;
  open(): Promise<{ db: Database; cleanup: () => Promise<void> }>;
}

export const STORAGE_DRIVERS: readonly StorageDriver[] = [
  {
    name: 'pglite',
    available: true,
    open: async () => {
      const db = await openPglite({});
      return { db, cleanup: () => db.close() };
    },
  },
  {
    name: 'pg',
    available: pgServer !== undefined,
    open: async () => {
      const tdb = await createTestDatabase();
      const db = await openPg({ connectionString: tdb.url, maxConnections: 10, timeoutMs: 10_000 });
      return {
        db,
        cleanup: async () => {
          await db.close();
          await tdb.drop();
        },
      };
    },
  },
];

/**
 * Enrols a device straight into a directory store (store-level tests): the root of its
 * user's list, or linked by a device this process enrolled before. Returns the outcome.
 */
export async function enrolInStore(store: DirectoryStore, device: TestDevice, linker?: TestDevice): Promise<'created' | 'unchanged'> {
  const list = await store.deviceList(device.userId);
  const chain = verifiedChain(device.userId, list.entries);
  const r = await store.appendDeviceEntry(device.userId, device.enrolEntry(chain, linker), defaultBackend);
  device.markEnrolled();
  return r.outcome;
}
