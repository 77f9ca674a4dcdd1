/**
 * Device lists in the relay's directory on real PostgreSQL (READ COMMITTED by default,
 * several connections): a read is one moment of the list even while entries are
 * appended, and a full list takes no new device but still takes revocations.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DeviceChain } from '../../crypto/devices/chain.js';
import { DEVICE_ENTRY_KINDS, type DeviceEntry, decodeDeviceEntry, deviceEntryHash } from '../../crypto/devices/entry.js';
import { createLinkRequest, linkEntry, revokeEntry, rootEntry } from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { decodeDeviceListAnswer, encodeDeviceListAnswer } from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_DEVICE_LIST_ENTRIES } from '../../protocol/limits.js';
import { type DeviceListRecord, DirectoryStore } from '../../server/directory/store.js';
import type { Database, SqlParam } from '../../server/storage/database.js';
import { migrate } from '../../server/storage/migrate.js';
import { describePg } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

const SNAP_USER = 'snap-user';
const FULL_USER = 'full-user';
/** Link/revoke pairs the writer appends while the readers read. */
const PAIRS = 15;
const READERS = 4;

/** A user's list as this test signs it, and its appends through the store. */
function listWriter(store: DirectoryStore, userId: string) {
  const w = {
    chain: DeviceChain.empty(userId),
    /** Extends the local chain only. */
    extend(entry: Uint8Array): DeviceEntry {
      const step = w.chain.append(entry);
      if (!step.ok) throw new Error(step.message);
      w.chain = step.chain;
      return step.entry;
    },
    async append(entry: Uint8Array) {
      w.extend(entry);
      return store.appendDeviceEntry(userId, entry, defaultBackend);
    },
  };
  return w;
}

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

describePg('device lists in the relay directory (PostgreSQL)', () => {
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

  it('a new device starts its mailbox from sequence 1, whatever cursor an earlier device of that id left behind', async () => {
    // An ACK applied just after a device was removed can leave its cursor row behind.
    await db.query('INSERT INTO mailbox_cursors (user_id, device_id, acked_seq) VALUES ($1, $2, 50)', ['dl-stale', 'phone']);
    const list = listWriter(store, 'dl-stale');
    await list.append(rootEntry(IdentityKeyPair.generate(), 'dl-stale', 'phone'));
    expect(await db.query('SELECT acked_seq FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', ['dl-stale', 'phone'])).toEqual([]);
  });

  it('every answer has length = after + 1 + entries, the last entry\'s hash as head, and the devices of that length', async () => {
    const root = IdentityKeyPair.generate();
    const list = listWriter(store, SNAP_USER);
    await list.append(rootEntry(root, SNAP_USER, 'root'));

    let writing = true;
    let reads = 0;
    const problems: string[] = [];
    const reader = async (n: number) => {
      while (writing) {
        // Full reads and incremental ones from a recent position.
        const after = n % 2 === 0 ? -1 : Math.max(-1, list.chain.length - 3);
        const r = await store.deviceList(SNAP_USER, after);
        reads++;
        const p = inconsistency(after, r);
        if (p !== undefined) problems.push(p);
      }
    };
    const readers = Array.from({ length: READERS }, (_, n) => reader(n));
    try {
      for (let i = 0; i < PAIRS; i++) {
        await list.append(linkEntry(list.chain, 'root', root, createLinkRequest(IdentityKeyPair.generate(), SNAP_USER, `d${i}`)));
        await list.append(revokeEntry(list.chain, 'root', root, `d${i}`));
      }
    } finally {
      writing = false;
      await Promise.all(readers);
    }
    expect(reads).toBeGreaterThan(PAIRS);
    expect(problems).toEqual([]);
  });

  it(`refuses a link past ${MAX_DEVICE_LIST_ENTRIES} entries (DEVICE_LIST_FULL) but still revokes a stolen device`, async () => {
    const root = IdentityKeyPair.generate();
    const thief = IdentityKeyPair.generate();
    const list = listWriter(store, FULL_USER);
    await list.append(rootEntry(root, FULL_USER, 'root'));
    await list.append(linkEntry(list.chain, 'root', root, createLinkRequest(thief, FULL_USER, 'stolen')));
    // The thief's add/revoke pairs leave the active devices (and so the devices and
    // mailboxes tables) as they were: only the list rows are written here, in one
    // statement, since a thousand appends through the store would take a minute.
    const rows: SqlParam[] = [];
    const values: string[] = [];
    for (let i = 0; list.chain.length < MAX_DEVICE_LIST_ENTRIES; i++) {
      const entry = list.chain.length % 2 === 0
        ? linkEntry(list.chain, 'stolen', thief, createLinkRequest(IdentityKeyPair.generate(), FULL_USER, `t${i}`))
        : revokeEntry(list.chain, 'stolen', thief, `t${i - 1}`);
      const e = list.extend(entry);
      const at = rows.length;
      values.push(`($${at + 1}, $${at + 2}, $${at + 3}, $${at + 4}, $${at + 5}, $${at + 6}, $${at + 7})`);
      rows.push(FULL_USER, e.seq, DEVICE_ENTRY_KINDS[e.kind], e.deviceId, e.identityKey, e.bytes, list.chain.head);
    }
    await db.query(
      `INSERT INTO device_list_entries (user_id, seq, kind, device_id, identity_key, entry, entry_hash) VALUES ${values.join(', ')}`,
      rows,
    );

    const late = linkEntry(list.chain, 'root', root, createLinkRequest(IdentityKeyPair.generate(), FULL_USER, 'late'));
    const refused = await store.appendDeviceEntry(FULL_USER, late, defaultBackend).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ProtocolError);
    expect((refused as ProtocolError).code).toBe('DEVICE_LIST_FULL');

    const revoked = await list.append(revokeEntry(list.chain, 'root', root, 'stolen'));
    expect(revoked).toMatchObject({ outcome: 'created', kind: 'revoke', deviceId: 'stolen' });
    const served = await store.deviceList(FULL_USER);
    expect(served.devices.map((d) => d.deviceId)).toEqual(['root']);
    expect(served.length).toBe(list.chain.length);
    // What a client receives decodes and verifies from the root.
    const wire = JSON.parse(JSON.stringify(encodeDeviceListAnswer({ ...served, devices: [] })));
    const answer = decodeDeviceListAnswer(wire);
    expect(answer.entries).toHaveLength(MAX_DEVICE_LIST_ENTRIES + 1);
    const verified = DeviceChain.verify(FULL_USER, answer.entries);
    expect(verified.ok && verified.chain.devices.map((d) => d.deviceId)).toEqual(['root']);
  });
});
