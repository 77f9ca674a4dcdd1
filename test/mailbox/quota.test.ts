/**
 * Mailbox quotas and resends after the TTL, on both drivers with an injected clock:
 * - a mailbox holds at most its quota of envelopes and of payload bytes; the SEND that
 *   would pass it is refused with MAILBOX_FULL (naming the full mailboxes) while the rest
 *   of its batch is stored; ACKs and retirement (of expired envelopes) give room back;
 *   and the bound is exact under concurrent batches from several relays' stores;
 * - a resend after its TTL is stored anew (fresh sequence, not a duplicate); before the
 *   TTL it is a duplicate.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { DirectoryStore } from '../../server/directory/store.js';
import { MailboxStore, type MailboxQuota, type SendItem, type SendResult } from '../../server/mailbox/store.js';
import type { Database } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { TestDevice } from '../helpers/device.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS, enrolInStore } from '../helpers/storage.js';

const T0 = 1_800_000_000_000;
const QUOTA: MailboxQuota = { maxEnvelopes: 3, maxBytes: 100 };
const AGE_MS = 10_000;

describe.each(STORAGE_DRIVERS)('mailbox quotas and expiry on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`mailbox quotas on ${driver.name}`);
    return;
  }

  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  let clock = T0;
  let store: MailboxStore;
  let directory: DirectoryStore;
  let n = 0;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    await migrate(db, loadMigrations());
    store = new MailboxStore(db, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, quota: QUOTA, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
    directory = new DirectoryStore(db);
  });
  afterAll(async () => {
    await cleanup();
  });
  beforeEach(() => {
    clock = T0;
  });

  async function mailbox(devices = 1): Promise<{ userId: string }> {
    const userId = `q${++n}`;
    for (let d = 1; d <= devices; d++) await enrolInStore(directory, new TestDevice(userId, `d${d}`));
    return { userId };
  }

  /** A SEND of `size` payload bytes to the recipient's devices `d1`.. `d<devices>`. */
  function item(to: { userId: string }, size: number, opts: { ttlSeconds?: number; envelopeId?: Uint8Array; devices?: number; fill?: number } = {}): SendItem {
    const payload = new Uint8Array(size).fill(opts.fill ?? 7);
    return {
      senderUserId: 'sender',
      senderDeviceId: 's1',
      envelopeId: opts.envelopeId ?? systemRandom(16),
      contentHash: crypto.createHash('sha256').update(payload).digest(),
      recipientUserId: to.userId,
      targets: Array.from({ length: opts.devices ?? 1 }, (_, i) => ({ deviceId: `d${i + 1}`, payload })),
      ttlSeconds: opts.ttlSeconds ?? 3600,
    };
  }

  const outcome = (r: SendResult) => (r.ok ? (r.duplicate ? 'duplicate' : 'stored') : r.error.code);

  async function send(...items: SendItem[]): Promise<SendResult[]> {
    return (await store.storeBatch(items)).results;
  }

  async function envelopes(userId: string): Promise<number> {
    const rows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM envelopes WHERE user_id = $1', [userId]);
    return Number(rows[0]!.n);
  }

  it('refuses the SEND that would exceed the envelope count with MAILBOX_FULL, storing the rest of its batch', async () => {
    const bob = await mailbox();
    const carol = await mailbox();
    const results = await send(item(bob, 1), item(bob, 1), item(carol, 1), item(bob, 1), item(bob, 1), item(bob, 1));
    expect(results.map(outcome)).toEqual(['stored', 'stored', 'stored', 'stored', 'MAILBOX_FULL', 'MAILBOX_FULL']);
    const refused = results[4]!;
    if (refused.ok) throw new Error('expected a refusal');
    expect(refused.error.details).toEqual({ userId: bob.userId, devices: ['d1'], maxBytes: QUOTA.maxBytes, maxEnvelopes: QUOTA.maxEnvelopes });
    // The stored ones took consecutive sequences; nothing of the refused ones was written.
    expect(results.slice(0, 4).map((r) => (r.ok ? r.stored[0]!.seq : 0))).toEqual([1, 2, 1, 3]);
    expect(await envelopes(bob.userId)).toBe(3);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 3, envelopes: 3 });
    expect((await send(item(bob, 1))).map(outcome)).toEqual(['MAILBOX_FULL']);

    // An ACK gives room back: two acknowledged, two fit again, and no more.
    await store.ackBatch([{ userId: bob.userId, deviceId: 'd1', seq: 2 }]);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 1, envelopes: 1 });
    expect((await send(item(bob, 1), item(bob, 1), item(bob, 1))).map(outcome)).toEqual(['stored', 'stored', 'MAILBOX_FULL']);
  });

  it('refuses the SEND that would exceed the byte quota; a multi-device SEND names the full mailboxes', async () => {
    const bob = await mailbox(2);
    expect((await send(item(bob, 40, { devices: 1 + 1 }))).map(outcome)).toEqual(['stored']);
    // d1 and d2 hold 40 bytes each: 60 more fit, 61 do not.
    const over = await send(item(bob, 61, { devices: 2 }));
    expect(over.map(outcome)).toEqual(['MAILBOX_FULL']);
    if (over[0]!.ok) throw new Error('expected a refusal');
    expect(over[0]!.error.details).toMatchObject({ devices: ['d1', 'd2'] });
    expect((await send(item(bob, 60, { devices: 2 }))).map(outcome)).toEqual(['stored']);
    expect(await store.held(bob.userId, 'd2')).toEqual({ bytes: 100, envelopes: 2 });
    expect((await send(item(bob, 1, { devices: 2 }))).map(outcome)).toEqual(['MAILBOX_FULL']);
  });

  it('retirement gives expired envelopes\' room back, once, and an ACK passing them later credits nothing more', async () => {
    const bob = await mailbox();
    expect((await send(item(bob, 10, { ttlSeconds: 1 }), item(bob, 10, { ttlSeconds: 1 }), item(bob, 10))).map(outcome)).toEqual(['stored', 'stored', 'stored']);
    clock = T0 + 1000;
    expect((await send(item(bob, 10))).map(outcome)).toEqual(['MAILBOX_FULL']);
    clock = T0 + 2 * AGE_MS;
    expect((await store.retire()).expired).toBeGreaterThanOrEqual(2);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 10, envelopes: 1 });
    expect((await send(item(bob, 10), item(bob, 10), item(bob, 10))).map(outcome)).toEqual(['stored', 'stored', 'MAILBOX_FULL']);
    // The device comes back and acknowledges everything, the expired ones included.
    await store.ackBatch([{ userId: bob.userId, deviceId: 'd1', seq: 5 }]);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 0, envelopes: 0 });
  });

  it('an ACK passing expired envelopes of a drained partition not yet dropped credits nothing more', async () => {
    const bob = await mailbox();
    expect((await send(item(bob, 10, { ttlSeconds: 1 }), item(bob, 10, { ttlSeconds: 1 }), item(bob, 10))).map(outcome)).toEqual(['stored', 'stored', 'stored']);
    clock = T0 + 2 * AGE_MS;
    await store.ensurePartitions(clock);
    // Step 1 of retirement only (the drop failing for its table lock, or not yet run):
    // the expired envelopes are credited and stay on disk until the drop.
    const [part] = await db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE from_ms <= $1 AND to_ms > $1', [T0]);
    const drained = await db.query<{ r_expired: string | number }>('SELECT r_expired FROM hermetic_drain_partition($1::text, $2::int8, 1000, 1048576)', [part!.name, clock]);
    expect(Number(drained[0]!.r_expired)).toBe(2);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 10, envelopes: 1 });
    await store.ackBatch([{ userId: bob.userId, deviceId: 'd1', seq: 3 }]);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 0, envelopes: 0 });
    await store.retire(clock);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 0, envelopes: 0 });
  });

  it('envelopes whose slot is not their partition\'s start (as migration 0011 moved the older ones) are found: an ACK credits them, a resend is answered from them', async () => {
    // A time after every other test's, so that this partition is the newest holding rows.
    clock = T0 + 1_000 * AGE_MS;
    await store.ensurePartitions(clock);
    const bob = await mailbox();
    const first = item(bob, 10);
    expect((await send(first)).map(outcome)).toEqual(['stored']);
    // 0011 put the envelopes stored before it into one partition, [0, then), each with its
    // stored time as slot_ms: within the partition's range, but not its start.
    await db.query('UPDATE envelopes SET slot_ms = slot_ms + 1 WHERE user_id = $1', [bob.userId]);
    await store.ackBatch([{ userId: bob.userId, deviceId: 'd1', seq: 1 }]);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 0, envelopes: 0 });
    expect((await send(first)).map(outcome)).toEqual(['duplicate']);
  });

  it('the quota is exact when several relays store into one mailbox at once', async () => {
    const bob = await mailbox();
    // Two stores, as two relays would have, writing concurrently.
    const other = new MailboxStore(db, 'other-node', { now: () => clock, maxClockSkewMs: Infinity, quota: QUOTA, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
    const batches = Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? store : other).storeBatch([item(bob, 1), item(bob, 1)]));
    const outcomes = (await Promise.all(batches)).flatMap((b) => b.results.map(outcome));
    expect(outcomes.filter((o) => o === 'stored')).toHaveLength(QUOTA.maxEnvelopes);
    expect(outcomes.filter((o) => o === 'MAILBOX_FULL')).toHaveLength(12 - QUOTA.maxEnvelopes);
    expect(await envelopes(bob.userId)).toBe(QUOTA.maxEnvelopes);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: QUOTA.maxEnvelopes, envelopes: QUOTA.maxEnvelopes });
  });

  it('a resend before its TTL is a duplicate; after it, the SEND is stored anew', async () => {
    const bob = await mailbox();
    const envelopeId = systemRandom(16);
    const first = (await send(item(bob, 5, { envelopeId, ttlSeconds: 2 })))[0]!;
    expect(first).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 1 }], expiresAtMs: T0 + 2000 });
    clock = T0 + 1999;
    expect((await send(item(bob, 5, { envelopeId, ttlSeconds: 2 })))[0]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 1 }], expiresAtMs: T0 + 2000 });

    // Expired, not yet retired: the resend is new (whatever its content), with a new
    // sequence and expiry; the expired envelope stops answering and is never delivered.
    clock = T0 + 2000;
    const later = (await send(item(bob, 5, { envelopeId, ttlSeconds: 2, fill: 9 })))[0]!;
    expect(later).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 2 }], storedAtMs: T0 + 2000, expiresAtMs: T0 + 4000 });
    expect((await store.fetch(bob.userId, 'd1', 0, 10)).map((e) => e.seq)).toEqual([2]);
    const rows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM envelopes WHERE user_id = $1 AND send_hash IS NOT NULL', [bob.userId]);
    expect(Number(rows[0]!.n)).toBe(1);
    // And it is a duplicate of itself until its own TTL.
    expect((await send(item(bob, 5, { envelopeId, ttlSeconds: 2, fill: 9 })))[0]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 2 }] });
    // Both expired; retirement drops them and gives their room back.
    clock = T0 + 4000 + 2 * AGE_MS;
    await store.retire();
    expect(await envelopes(bob.userId)).toBe(0);
    expect(await store.held(bob.userId, 'd1')).toEqual({ bytes: 0, envelopes: 0 });
  });
});
