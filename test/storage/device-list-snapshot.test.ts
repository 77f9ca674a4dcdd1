/**
 * A device-list read is one moment of the list, even while entries are appended: the
 * length, the head, the entries after `after` and the active devices all agree. Real
 * PostgreSQL (READ COMMITTED by default, several connections), readers and a writer
 * running concurrently.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DeviceChain } from '../../crypto/devices/chain.js';
import { decodeDeviceEntry, deviceEntryHash } from '../../crypto/devices/entry.js';
import { createLinkRequest, linkEntry, revokeEntry, rootEntry } from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { DirectoryStore, type DeviceListRecord } from '../../server/directory/store.js';
import type { Database } from '../../server/storage/database.js';
import { migrate } from '../../server/storage/migrate.js';
import { describePg } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

const USER = 'snap-user';
/** Link/revoke pairs the writer appends while the readers read. */
const PAIRS = 15;
const READERS = 4;

/** What is wrong with one answer, or undefined when it is one consistent moment. */
function inconsistency(after: number, r: DeviceListRecord): string | undefined {
  if (r.length === 0) return undefined;
  const expected = Math.max(0, r.length - after - 1);
  if (r.entries.length !== expected) return `after ${after}: length ${r.length} but ${r.entries.length} entries`;
  if (r.entries.length > 0) {
    const last = decodeDeviceEntry(r.entries[r.entries.length - 1]!);
    if (last.seq !== r.length - 1) return `last entry has seq ${last.seq}, length ${r.length}`;
    if (!r.head || !Buffer.from(deviceEntryHash(defaultBackend, last)).equals(Buffer.from(r.head))) return 'head is not the last entry\'s hash';
  }
  // The list alternates root, add, revoke, add, revoke...: odd lengths leave the root
  // alone, even lengths the root and one linked device.
  const devices = r.length % 2 === 1 ? 1 : 2;
  if (r.devices.length !== devices) return `length ${r.length} but ${r.devices.length} active devices`;
  return undefined;
}

describePg('a device-list read while entries are appended (PostgreSQL)', () => {
  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  let store: DirectoryStore;

  beforeAll(async () => {
    ({ db, cleanup } = await STORAGE_DRIVERS.find((d) => d.name === 'pg')!.open());
    await migrate(db);
    store = new DirectoryStore(db);
  });

  afterAll(async () => {
    await cleanup();
  });

  it('every answer has length = after + 1 + entries, the last entry\'s hash as head, and the devices of that length', async () => {
    const root = IdentityKeyPair.generate();
    let chain = DeviceChain.empty(USER);
    const append = async (entry: Uint8Array) => {
      const step = chain.append(entry);
      if (!step.ok) throw new Error(step.message);
      chain = step.chain;
      await store.appendDeviceEntry(USER, entry, defaultBackend);
    };
    await append(rootEntry(root, USER, 'root'));

    let writing = true;
    let reads = 0;
    const problems: string[] = [];
    const reader = async (n: number) => {
      while (writing) {
        // Full reads and incremental ones from a recent position.
        const after = n % 2 === 0 ? -1 : Math.max(-1, chain.length - 3);
        const r = await store.deviceList(USER, after);
        reads++;
        const p = inconsistency(after, r);
        if (p !== undefined) problems.push(p);
      }
    };
    const readers = Array.from({ length: READERS }, (_, n) => reader(n));
    try {
      for (let i = 0; i < PAIRS; i++) {
        await append(linkEntry(chain, 'root', root, createLinkRequest(IdentityKeyPair.generate(), USER, `d${i}`)));
        await append(revokeEntry(chain, 'root', root, `d${i}`));
      }
    } finally {
      writing = false;
      await Promise.all(readers);
    }
    expect(reads).toBeGreaterThan(PAIRS);
    expect(problems).toEqual([]);
  });
});
