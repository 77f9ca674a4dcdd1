/**
 * The storage contract, run against both drivers: PGlite (in memory) and a real
 * PostgreSQL server (a fresh database per suite). Everything above the Database
 * interface is written once, so both must give the same answers: migrations, the
 * driver primitives, and the key directory's rules.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_DEVICES_PER_USER } from '../../protocol/limits.js';
import { DirectoryStore, type KeyUpload, type PrekeyBundle } from '../../server/directory/store.js';
import { MAX_STORED_ONE_TIME_KEYS } from '../../server/limits.js';
import type { Database } from '../../server/storage/database.js';
import { loadMigrations, migrate, migrationsCurrent } from '../../server/storage/migrate.js';
import { TestDevice, range, verifiedChain } from '../helpers/device.js';
import { createLinkRequest, linkEntry } from '../../crypto/devices/link.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS, enrolInStore } from '../helpers/storage.js';
import { defaultBackend, systemRandom } from '../../crypto/primitives/index.js';

async function rejection(p: Promise<unknown>): Promise<ProtocolError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw err;
  }
  throw new Error('expected a ProtocolError, but the call succeeded');
}

function emptyUpload(): KeyUpload {
  return { oneTimePrekeys: [], oneTimeKemPrekeys: [] };
}

/** A hand-out budget that never runs out, for the tests of everything else. */
const NO_BUDGET = { burst: 1_000_000, perSecond: 0 };

/** Key material that doesn't need to be valid for the store (it never parses keys). */
function fakeKey(keyId: number, publicKeyBytes = 32) {
  return { keyId, publicKey: systemRandom(publicKeyBytes), signature: systemRandom(64) };
}

describe.each(STORAGE_DRIVERS)('storage contract on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`storage contract on ${driver.name}`);
    return;
  }

  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  let store: DirectoryStore;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    store = new DirectoryStore(db);
  });

  afterAll(async () => {
    await cleanup();
  });

  describe('migrations', () => {
    it('apply every migration once, then are a no-op the second time', async () => {
      const migrations = loadMigrations();
      expect(migrations.length).toBeGreaterThan(0);
      expect(await migrationsCurrent(db, migrations.length)).toBe(false);

      const first = await migrate(db, migrations);
      expect(first.applied).toEqual(migrations.map((m) => m.name));
      expect(first.current).toBe(migrations.length);
      const before = await db.query('SELECT version, name, applied_at FROM schema_migrations ORDER BY version');
      expect(before.map((r) => r.name)).toEqual(migrations.map((m) => m.name));

      const second = await migrate(db, migrations);
      expect(second.applied).toEqual([]);
      expect(second.current).toBe(migrations.length);
      const after = await db.query('SELECT version, name, applied_at FROM schema_migrations ORDER BY version');
      expect(after).toEqual(before);
      expect(await migrationsCurrent(db, migrations.length)).toBe(true);
    });
  });

  describe('driver primitives', () => {
    it('round-trips bytea and bigint parameters', async () => {
      const bytes = new Uint8Array([0, 1, 2, 254, 255]);
      const rows = await db.query<{ b: Uint8Array; n: string | number }>('SELECT $1::bytea AS b, $2::bigint AS n', [bytes, 4294967295]);
      expect(new Uint8Array(rows[0]!.b)).toEqual(bytes);
      expect(Number(rows[0]!.n)).toBe(4294967295);
    });

    it('commits a transaction that resolves and rolls back one that throws', async () => {
      await db.query('CREATE TABLE IF NOT EXISTS contract_tx (v int)');
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO contract_tx (v) VALUES (1)');
      });
      await expect(
        db.transaction(async (tx) => {
          await tx.query('INSERT INTO contract_tx (v) VALUES (2)');
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      const rows = await db.query<{ v: number }>('SELECT v FROM contract_tx ORDER BY v');
      expect(rows.map((r) => r.v)).toEqual([1]);
    });

    it('delivers NOTIFY payloads to a listener', async () => {
      const got: string[] = [];
      let wake: () => void = () => undefined;
      const arrived = new Promise<void>((r) => (wake = r));
      const unlisten = await db.listen('contract_channel', (payload) => {
        got.push(payload);
        wake();
      });
      await db.query("SELECT pg_notify('contract_channel', 'hello')");
      await arrived;
      expect(got).toEqual(['hello']);
      await unlisten();
    });
  });

  describe('directory store', () => {
    beforeAll(async () => {
      // Already applied by the migrations test when the whole file runs; a no-op then.
      await migrate(db);
    });

    it('enrols a root device: created, then unchanged for the same entry', async () => {
      const d = new TestDevice('reg-user');
      const entry = d.enrolEntry(verifiedChain(d.userId, []));
      expect((await store.appendDeviceEntry(d.userId, entry, defaultBackend)).outcome).toBe('created');
      expect(await store.appendDeviceEntry(d.userId, entry, defaultBackend)).toEqual({ outcome: 'unchanged', kind: 'root', deviceId: d.deviceId, seq: 0 });
      const rec = await store.getDevice(d.userId, d.deviceId);
      expect(rec?.identityKey).toEqual(d.identityKey);
      expect((await store.listDevices(d.userId)).map((x) => x.deviceId)).toEqual([d.deviceId]);
      const list = await store.deviceList(d.userId);
      expect(list.length).toBe(1);
      expect(list.entries).toEqual([entry]);
      expect(verifiedChain(d.userId, list.entries).head).toEqual(list.head);
      expect((await store.deviceList(d.userId, 0)).entries).toEqual([]);
    });

    it('links a device only with a signature of an active device of the user', async () => {
      const root = new TestDevice('link-user');
      await enrolInStore(store, root);
      const chain = verifiedChain(root.userId, (await store.deviceList(root.userId)).entries);
      const mallory = new TestDevice(root.userId);
      const thief = new TestDevice('someone-else');
      // A token alone: an entry signed by a key that is not one of the user's devices.
      const forged = linkEntry(chain, root.deviceId, thief.identity, createLinkRequest(mallory.identity, root.userId, mallory.deviceId));
      expect((await rejection(store.appendDeviceEntry(root.userId, forged, defaultBackend))).code).toBe('INVALID_SIGNATURE');
      // A second root for a user who has a list.
      expect((await rejection(store.appendDeviceEntry(root.userId, mallory.enrolEntry(verifiedChain(root.userId, [])), defaultBackend))).code).toBe(
        'DEVICE_NOT_AUTHORIZED',
      );
      expect(await store.getDevice(root.userId, mallory.deviceId)).toBeUndefined();
      // The real thing.
      const laptop = new TestDevice(root.userId);
      expect(await enrolInStore(store, laptop)).toBe('created');
      expect((await store.listDevices(root.userId)).map((x) => x.deviceId).sort()).toEqual([root.deviceId, laptop.deviceId].sort());
      // An entry signed against the old head is stale.
      const late = new TestDevice(root.userId);
      expect((await rejection(store.appendDeviceEntry(root.userId, late.enrolEntry(chain, root), defaultBackend))).code).toBe('DEVICE_LIST_CONFLICT');
    });

    it('revokes a device: its mailbox, envelopes and keys go; it never comes back; the last device stays', async () => {
      const root = new TestDevice('revoke-user');
      const laptop = new TestDevice(root.userId);
      await enrolInStore(store, root);
      await enrolInStore(store, laptop);
      await store.uploadKeys(laptop.userId, laptop.deviceId, { ...emptyUpload(), signedPrekey: fakeKey(1), oneTimePrekeys: [fakeKey(2)] });
      const before = verifiedChain(root.userId, (await store.deviceList(root.userId)).entries);
      const r = await store.appendDeviceEntry(root.userId, root.revokeEntry(before, laptop.deviceId), defaultBackend);
      expect(r).toEqual({ outcome: 'created', kind: 'revoke', deviceId: laptop.deviceId, seq: 2 });
      expect(await store.getDevice(root.userId, laptop.deviceId)).toBeUndefined();
      expect(await db.query('SELECT 1 FROM mailboxes WHERE user_id = $1 AND device_id = $2', [root.userId, laptop.deviceId])).toEqual([]);
      expect(await db.query('SELECT 1 FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2', [root.userId, laptop.deviceId])).toEqual([]);
      expect((await rejection(store.countKeys(laptop.userId, laptop.deviceId))).code).toBe('DEVICE_NOT_FOUND');
      const after = verifiedChain(root.userId, (await store.deviceList(root.userId)).entries);
      expect(after.devices.map((x) => x.deviceId)).toEqual([root.deviceId]);
      expect((await rejection(store.appendDeviceEntry(root.userId, laptop.enrolEntry(after, root), defaultBackend))).code).toBe('DEVICE_EXISTS');
      const last = root.revokeEntry(after, root.deviceId);
      expect((await rejection(store.appendDeviceEntry(root.userId, last, defaultBackend))).code).toBe('LAST_DEVICE');
    });

    it('scopes device ids per user', async () => {
      const a = new TestDevice('scope-a', 'phone');
      const b = new TestDevice('scope-b', 'phone');
      expect(await enrolInStore(store, a)).toBe('created');
      expect(await enrolInStore(store, b)).toBe('created');
      expect((await store.getDevice('scope-a', 'phone'))?.identityKey).toEqual(a.identityKey);
      expect((await store.getDevice('scope-b', 'phone'))?.identityKey).toEqual(b.identityKey);
      expect(await store.getDevice('scope-c', 'phone')).toBeUndefined();
    });

    it(`caps devices per user at ${MAX_DEVICES_PER_USER} (TOO_MANY_DEVICES); concurrent links on one head: one wins`, async () => {
      const user = 'many-devices';
      const root = new TestDevice(user, 'd0');
      await enrolInStore(store, root);
      const chain = verifiedChain(user, (await store.deviceList(user)).entries);
      const racers = range(1, 6).map((i) => new TestDevice(user, `race${i}`));
      const results = await Promise.allSettled(racers.map((d) => store.appendDeviceEntry(user, d.enrolEntry(chain, root), defaultBackend)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as ProtocolError).code).toBe('DEVICE_LIST_CONFLICT');
      let count = 2;
      while (count < MAX_DEVICES_PER_USER) {
        await enrolInStore(store, new TestDevice(user, `d${count}`), root);
        count++;
      }
      expect(await store.listDevices(user)).toHaveLength(MAX_DEVICES_PER_USER);
      const full = verifiedChain(user, (await store.deviceList(user)).entries);
      expect((await rejection(store.appendDeviceEntry(user, new TestDevice(user, 'extra').enrolEntry(full, root), defaultBackend))).code).toBe(
        'TOO_MANY_DEVICES',
      );
    });

    it('adopts a device registered before the signed list as the root and retires its unlisted siblings', async () => {
      const user = 'legacy-user';
      const a = new TestDevice(user, 'old-a');
      const b = new TestDevice(user, 'old-b');
      for (const d of [a, b]) {
        await db.query('INSERT INTO devices (user_id, device_id, identity_key) VALUES ($1, $2, $3)', [user, d.deviceId, d.identityKey]);
        await db.query('INSERT INTO mailboxes (user_id, device_id) VALUES ($1, $2)', [user, d.deviceId]);
      }
      // The same id with another key cannot become the root.
      const impostor = new TestDevice(user, 'old-a');
      expect((await rejection(store.appendDeviceEntry(user, impostor.enrolEntry(verifiedChain(user, [])), defaultBackend))).code).toBe('DEVICE_EXISTS');
      expect(await enrolInStore(store, a)).toBe('created');
      expect((await store.listDevices(user)).map((x) => x.deviceId)).toEqual(['old-a']);
      expect(await db.query('SELECT linked_seq FROM devices WHERE user_id = $1', [user])).toEqual([{ linked_seq: 0 }]);
      expect(await db.query('SELECT device_id FROM mailboxes WHERE user_id = $1', [user])).toEqual([{ device_id: 'old-a' }]);
    });

    it('stores an upload and counts it', async () => {
      const d = new TestDevice('upload-user');
      await enrolInStore(store, d);
      expect(await store.countKeys(d.userId, d.deviceId)).toEqual({
        oneTimePrekeys: 0,
        oneTimeKemPrekeys: 0,
        hasSignedPrekey: false,
        hasLastResortKemPrekey: false,
      });
      const counts = await store.uploadKeys(d.userId, d.deviceId, {
        signedPrekey: fakeKey(1),
        lastResortKemPrekey: fakeKey(1, 1184),
        oneTimePrekeys: range(1, 5).map((i) => fakeKey(i)),
        oneTimeKemPrekeys: range(1, 3).map((i) => fakeKey(i, 1184)),
      });
      const expected = { oneTimePrekeys: 5, oneTimeKemPrekeys: 3, hasSignedPrekey: true, hasLastResortKemPrekey: true };
      expect(counts).toEqual(expected);
      expect(await store.countKeys(d.userId, d.deviceId)).toEqual(expected);
    });

    it('refuses uploads and counts for an unknown device (DEVICE_NOT_FOUND)', async () => {
      expect((await rejection(store.uploadKeys('nobody', 'nothing', { ...emptyUpload(), signedPrekey: fakeKey(1) }))).code).toBe(
        'DEVICE_NOT_FOUND',
      );
      expect((await rejection(store.countKeys('nobody', 'nothing'))).code).toBe('DEVICE_NOT_FOUND');
      expect((await rejection(store.fetchBundle('nobody', 'nothing', NO_BUDGET, 0))).code).toBe('DEVICE_NOT_FOUND');
    });

    it('treats a retried identical upload as a no-op', async () => {
      const d = new TestDevice('retry-user');
      await enrolInStore(store, d);
      const upload: KeyUpload = {
        signedPrekey: fakeKey(7),
        lastResortKemPrekey: fakeKey(7, 1184),
        oneTimePrekeys: range(10, 4).map((i) => fakeKey(i)),
        oneTimeKemPrekeys: range(10, 2).map((i) => fakeKey(i, 1184)),
      };
      const first = await store.uploadKeys(d.userId, d.deviceId, upload);
      const second = await store.uploadKeys(d.userId, d.deviceId, upload);
      expect(second).toEqual(first);
      expect(second.oneTimePrekeys).toBe(4);
      expect(second.oneTimeKemPrekeys).toBe(2);
    });

    it('rolls the whole upload back on KEY_ID_CONFLICT (same id, other bytes)', async () => {
      const d = new TestDevice('conflict-user');
      await enrolInStore(store, d);
      const spk = fakeKey(1);
      await store.uploadKeys(d.userId, d.deviceId, {
        signedPrekey: spk,
        lastResortKemPrekey: fakeKey(1, 1184),
        oneTimePrekeys: range(1, 3).map((i) => fakeKey(i)),
        oneTimeKemPrekeys: [],
      });
      const before = await store.countKeys(d.userId, d.deviceId);

      // New keys of both kinds and a new signed prekey, plus key id 2 with other bytes.
      const err = await rejection(
        store.uploadKeys(d.userId, d.deviceId, {
          signedPrekey: fakeKey(2),
          lastResortKemPrekey: undefined,
          oneTimePrekeys: [fakeKey(50), fakeKey(2), fakeKey(51)],
          oneTimeKemPrekeys: [fakeKey(60, 1184)],
        }),
      );
      expect(err.code).toBe('KEY_ID_CONFLICT');
      expect(await store.countKeys(d.userId, d.deviceId)).toEqual(before);
      const ids = await db.query<{ key_id: string | number }>(
        'SELECT key_id FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 ORDER BY kind, key_id',
        [d.userId, d.deviceId],
      );
      expect(ids.map((r) => Number(r.key_id))).toEqual([1, 2, 3]);
      // The signed prekey in the refused upload did not replace the stored one.
      const bundle = await store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0);
      expect(bundle.signedPrekey).toEqual(spk);
    });

    it('refuses an upload that repeats a key id (KEY_ID_CONFLICT) and stores none of it', async () => {
      const d = new TestDevice('dup-user');
      await enrolInStore(store, d);
      const err = await rejection(
        store.uploadKeys(d.userId, d.deviceId, { oneTimePrekeys: [fakeKey(1), fakeKey(2), fakeKey(1)], oneTimeKemPrekeys: [] }),
      );
      expect(err.code).toBe('KEY_ID_CONFLICT');
      expect((await store.countKeys(d.userId, d.deviceId)).oneTimePrekeys).toBe(0);
    });

    it(`caps stored one-time keys at ${MAX_STORED_ONE_TIME_KEYS} per kind (TOO_MANY_KEYS), storing none of the excess upload`, async () => {
      const d = new TestDevice('cap-user');
      await enrolInStore(store, d);
      await store.uploadKeys(d.userId, d.deviceId, { oneTimePrekeys: range(0, MAX_STORED_ONE_TIME_KEYS - 1).map((i) => fakeKey(i)), oneTimeKemPrekeys: [] });
      const err = await rejection(
        store.uploadKeys(d.userId, d.deviceId, { oneTimePrekeys: [fakeKey(100_000), fakeKey(100_001)], oneTimeKemPrekeys: [] }),
      );
      expect(err.code).toBe('TOO_MANY_KEYS');
      expect((await store.countKeys(d.userId, d.deviceId)).oneTimePrekeys).toBe(MAX_STORED_ONE_TIME_KEYS - 1);
      expect((await store.uploadKeys(d.userId, d.deviceId, { oneTimePrekeys: [fakeKey(100_000)], oneTimeKemPrekeys: [] })).oneTimePrekeys).toBe(
        MAX_STORED_ONE_TIME_KEYS,
      );
    });

    it('rotation replaces the signed prekey and the last-resort key', async () => {
      const d = new TestDevice('rotate-user');
      await enrolInStore(store, d);
      await store.uploadKeys(d.userId, d.deviceId, { ...emptyUpload(), signedPrekey: fakeKey(1), lastResortKemPrekey: fakeKey(1, 1184) });
      const spk2 = fakeKey(2);
      const lr2 = fakeKey(2, 1184);
      await store.uploadKeys(d.userId, d.deviceId, { ...emptyUpload(), signedPrekey: spk2, lastResortKemPrekey: lr2 });
      const rows = await db.query('SELECT kind FROM signed_prekeys WHERE user_id = $1 AND device_id = $2', [d.userId, d.deviceId]);
      expect(rows).toHaveLength(2);
      const b = await store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0);
      expect(b.signedPrekey).toEqual(spk2);
      expect(b.kemPrekey).toEqual(lr2);
      expect(b.kemLastResort).toBe(true);
    });

    it('answers NO_SIGNED_PREKEY without consuming a one-time key', async () => {
      const d = new TestDevice('nospk-user');
      await enrolInStore(store, d);
      await store.uploadKeys(d.userId, d.deviceId, {
        oneTimePrekeys: range(1, 2).map((i) => fakeKey(i)),
        oneTimeKemPrekeys: range(1, 2).map((i) => fakeKey(i, 1184)),
      });
      expect((await rejection(store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0))).code).toBe('NO_SIGNED_PREKEY');
      // A signed X25519 prekey alone is not enough: the last-resort KEM key is required too.
      await store.uploadKeys(d.userId, d.deviceId, { ...emptyUpload(), signedPrekey: fakeKey(1) });
      expect((await rejection(store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0))).code).toBe('NO_SIGNED_PREKEY');
      const counts = await store.countKeys(d.userId, d.deviceId);
      expect(counts.oneTimePrekeys).toBe(2);
      expect(counts.oneTimeKemPrekeys).toBe(2);
    });

    it('50 concurrent bundle fetches hand out each of 20 one-time keys exactly once, then fall back', async () => {
      const d = new TestDevice('race-user');
      await enrolInStore(store, d);
      const otks = range(1, 20).map((i) => fakeKey(i));
      const kems = range(1, 20).map((i) => fakeKey(1000 + i, 1184));
      const lastResort = fakeKey(999, 1184);
      await store.uploadKeys(d.userId, d.deviceId, { signedPrekey: fakeKey(5), lastResortKemPrekey: lastResort, oneTimePrekeys: otks, oneTimeKemPrekeys: kems });

      const bundles: PrekeyBundle[] = await Promise.all(range(0, 50).map(() => store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0)));

      const withOtk = bundles.filter((b) => b.oneTimePrekey !== undefined);
      expect(withOtk).toHaveLength(20);
      expect(bundles.filter((b) => b.oneTimePrekey === undefined)).toHaveLength(30);
      const handedOtks = withOtk.map((b) => b.oneTimePrekey!.keyId).sort((a, b) => a - b);
      expect(handedOtks).toEqual(otks.map((k) => k.keyId));
      for (const b of withOtk) expect(b.oneTimePrekey).toEqual(otks.find((k) => k.keyId === b.oneTimePrekey!.keyId));

      const oneTimeKem = bundles.filter((b) => !b.kemLastResort);
      expect(oneTimeKem).toHaveLength(20);
      expect(oneTimeKem.map((b) => b.kemPrekey.keyId).sort((a, b) => a - b)).toEqual(kems.map((k) => k.keyId));
      const fallback = bundles.filter((b) => b.kemLastResort);
      expect(fallback).toHaveLength(30);
      for (const b of fallback) expect(b.kemPrekey).toEqual(lastResort);

      expect(await store.countKeys(d.userId, d.deviceId)).toMatchObject({ oneTimePrekeys: 0, oneTimeKemPrekeys: 0 });
    });

    it('refuses an old key presented again with its valid old signature (KEY_ID_REUSED), and rolls the upload back', async () => {
      const d = new TestDevice('fresh-user');
      await enrolInStore(store, d);
      const spk1 = fakeKey(1);
      const lr1 = fakeKey(1, 1184);
      const otk1 = fakeKey(1);
      const kem1 = fakeKey(2, 1184);
      await store.uploadKeys(d.userId, d.deviceId, { signedPrekey: spk1, lastResortKemPrekey: lr1, oneTimePrekeys: [otk1], oneTimeKemPrekeys: [kem1] });
      // The current keys, sent again unchanged, are a retried request.
      await store.uploadKeys(d.userId, d.deviceId, { signedPrekey: spk1, lastResortKemPrekey: lr1, oneTimePrekeys: [otk1], oneTimeKemPrekeys: [kem1] });
      // Rotate, and hand the one-time keys out.
      const spk2 = fakeKey(2);
      const lr2 = fakeKey(3, 1184);
      await store.uploadKeys(d.userId, d.deviceId, { signedPrekey: spk2, lastResortKemPrekey: lr2, oneTimePrekeys: [], oneTimeKemPrekeys: [] });
      const b = await store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0);
      expect(b.oneTimePrekey).toEqual(otk1);
      expect(b.kemPrekey).toEqual(kem1);

      const refused = async (upload: KeyUpload) => {
        const err = await rejection(store.uploadKeys(d.userId, d.deviceId, upload));
        expect(err.code).toBe('KEY_ID_REUSED');
      };
      await refused({ ...emptyUpload(), signedPrekey: spk1 });
      await refused({ ...emptyUpload(), lastResortKemPrekey: lr1 });
      await refused({ ...emptyUpload(), oneTimePrekeys: [otk1] });
      await refused({ ...emptyUpload(), oneTimeKemPrekeys: [kem1] });
      // A fresh key id of another kind in the same upload is stored neither.
      await refused({ signedPrekey: fakeKey(10), lastResortKemPrekey: undefined, oneTimePrekeys: [fakeKey(10)], oneTimeKemPrekeys: [kem1] });
      // The current signed key with other bytes is no retry either.
      await refused({ ...emptyUpload(), signedPrekey: fakeKey(2) });

      expect(await store.countKeys(d.userId, d.deviceId)).toMatchObject({ oneTimePrekeys: 0, oneTimeKemPrekeys: 0 });
      const after = await store.fetchBundle(d.userId, d.deviceId, NO_BUDGET, 0);
      expect(after.signedPrekey).toEqual(spk2);
      expect(after.kemPrekey).toEqual(lr2);
      // Ids above the highest used are accepted, each kind on its own scale.
      const counts = await store.uploadKeys(d.userId, d.deviceId, { signedPrekey: fakeKey(3), lastResortKemPrekey: fakeKey(4, 1184), oneTimePrekeys: [fakeKey(2)], oneTimeKemPrekeys: [fakeKey(3, 1184)] });
      expect(counts).toMatchObject({ oneTimePrekeys: 1, oneTimeKemPrekeys: 1 });
    });

    it('limits one-time key hand-outs per target device: beyond the budget bundles come without them, and it refills with time', async () => {
      const d = new TestDevice('budget-user');
      await enrolInStore(store, d);
      const lastResort = fakeKey(100, 1184);
      await store.uploadKeys(d.userId, d.deviceId, {
        signedPrekey: fakeKey(1),
        lastResortKemPrekey: lastResort,
        oneTimePrekeys: range(1, 10).map((i) => fakeKey(i)),
        oneTimeKemPrekeys: range(1, 10).map((i) => fakeKey(i, 1184)),
      });
      const budget = { burst: 3, perSecond: 0.5 };
      const t0 = 1_700_000_000_000;
      const first = await Promise.all(range(0, 5).map(() => store.fetchBundle(d.userId, d.deviceId, budget, t0)));
      expect(first.filter((b) => b.oneTimePrekey !== undefined)).toHaveLength(3);
      const withheld = first.filter((b) => b.oneTimePrekey === undefined);
      expect(withheld).toHaveLength(2);
      for (const b of withheld) {
        expect(b.kemLastResort).toBe(true);
        expect(b.kemPrekey).toEqual(lastResort);
        expect(b.withheld).toEqual([
          { kind: 'x25519', reason: 'target_budget' },
          { kind: 'mlkem', reason: 'target_budget' },
        ]);
      }
      expect(await store.countKeys(d.userId, d.deviceId)).toMatchObject({ oneTimePrekeys: 7, oneTimeKemPrekeys: 7 });
      // 1.9 s later less than one token has come back; at 2 s one has.
      expect((await store.fetchBundle(d.userId, d.deviceId, budget, t0 + 1_900)).oneTimePrekey).toBeUndefined();
      expect((await store.fetchBundle(d.userId, d.deviceId, budget, t0 + 2_000)).oneTimePrekey).toBeDefined();
      expect((await store.fetchBundle(d.userId, d.deviceId, budget, t0 + 2_000)).oneTimePrekey).toBeUndefined();
      // A long pause refills up to the burst, never beyond.
      const later = await Promise.all(range(0, 5).map(() => store.fetchBundle(d.userId, d.deviceId, budget, t0 + 3_600_000)));
      expect(later.filter((b) => b.oneTimePrekey !== undefined)).toHaveLength(3);
      // A clock that goes back (another relay's) adds nothing.
      expect((await store.fetchBundle(d.userId, d.deviceId, budget, t0)).oneTimePrekey).toBeUndefined();
      // Another device's budget is its own.
      const other = new TestDevice('budget-user');
      await enrolInStore(store, other, d);
      await store.uploadKeys(other.userId, other.deviceId, { signedPrekey: fakeKey(1), lastResortKemPrekey: fakeKey(1, 1184), oneTimePrekeys: [fakeKey(1)], oneTimeKemPrekeys: [] });
      const ob = await store.fetchBundle(other.userId, other.deviceId, budget, t0 + 3_600_000);
      expect(ob.oneTimePrekey).toBeDefined();
      expect(ob.withheld).toEqual([{ kind: 'mlkem', reason: 'exhausted' }]);
    });
  });
});
