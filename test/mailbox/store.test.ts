/**
 * MailboxStore on both drivers (in-memory PGlite and a fresh PostgreSQL database), with
 * an injected clock: expiry is exact for readers and the sweeper removes expired
 * envelopes and idempotency records in bounded batches; one batch answers every kind
 * of SEND in its place; concurrent batches stay gap-free and record an envelope id
 * once; ACKs move the cursor and remove what they cover.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { DirectoryStore } from '../../server/directory/store.js';
import { MAILBOX_CHANNEL, decodeNotice } from '../../server/fleet/notice.js';
import { MailboxStore, type SendItem, type SendResult } from '../../server/mailbox/store.js';
import { type Database, sqlState } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS, enrolInStore } from '../helpers/storage.js';
import { TestDevice } from '../helpers/device.js';

const T0 = 1_800_000_000_000;

describe.each(STORAGE_DRIVERS)('MailboxStore on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`MailboxStore on ${driver.name}`);
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
    store = new MailboxStore(db, 'test-node', () => clock);
    directory = new DirectoryStore(db);
  });

  afterAll(async () => {
    await cleanup();
  });

  beforeEach(() => {
    clock = T0;
  });

  /** A fresh user with one device (and so one mailbox). */
  async function mailbox(): Promise<{ userId: string; deviceId: string }> {
    const userId = `u${++n}`;
    await enrolInStore(directory, new TestDevice(userId, 'd1'));
    return { userId, deviceId: 'd1' };
  }

  function item(to: { userId: string }, label: string, opts: { ttlSeconds?: number; envelopeId?: Uint8Array; sender?: string } = {}): SendItem {
    const payload = new TextEncoder().encode(label);
    return {
      senderUserId: opts.sender ?? 'sender',
      senderDeviceId: 's1',
      envelopeId: opts.envelopeId ?? systemRandom(16),
      contentHash: crypto.createHash('sha256').update(payload).digest(),
      recipientUserId: to.userId,
      targets: [{ deviceId: 'd1', payload }],
      ttlSeconds: opts.ttlSeconds ?? 3600,
    };
  }

  async function store1(it: SendItem): Promise<number> {
    const { results } = await store.storeBatch([it]);
    const r = results[0]!;
    if (!r.ok) throw r.error;
    return r.stored[0]!.seq;
  }

  async function waitFor(cond: () => boolean): Promise<void> {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(cond()).toBe(true);
  }

  async function count(table: 'envelopes' | 'sent_envelopes', where: string, params: string[]): Promise<number> {
    const rows = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, params);
    return Number(rows[0]!.n);
  }

  it('sweepExpired removes expired envelopes and idempotency rows, in batches of at most `limit`, and nothing else', async () => {
    const box = await mailbox();
    for (let i = 0; i < 5; i++) await store1(item(box, `short ${i}`, { ttlSeconds: 1 }));
    for (let i = 0; i < 2; i++) await store1(item(box, `long ${i}`, { ttlSeconds: 60 }));
    const envelopes = (): Promise<number> => count('envelopes', 'user_id = $1', [box.userId]);
    const sends = (): Promise<number> => count('sent_envelopes', 'recipient_user = $1', [box.userId]);
    expect([await envelopes(), await sends()]).toEqual([7, 7]);

    // Not yet expired: expiry is at stored time + TTL exactly.
    clock = T0 + 999;
    expect(await store.sweepExpired(100)).toEqual({ envelopes: 0, sends: 0 });

    clock = T0 + 1000;
    expect(await store.sweepExpired(2)).toEqual({ envelopes: 2, sends: 2 });
    expect(await store.sweepExpired(2)).toEqual({ envelopes: 2, sends: 2 });
    expect(await store.sweepExpired(2)).toEqual({ envelopes: 1, sends: 1 });
    expect(await store.sweepExpired(2)).toEqual({ envelopes: 0, sends: 0 });
    expect([await envelopes(), await sends()]).toEqual([2, 2]);

    const left = await store.fetch(box.userId, box.deviceId, 0, 100);
    expect(left.map((e) => [e.seq, new TextDecoder().decode(e.payload)])).toEqual([
      [6, 'long 0'],
      [7, 'long 1'],
    ]);
    // The tail is unchanged: sequences are never reused.
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 7, acked: 0 });

    clock = T0 + 60_000;
    expect(await store.sweepExpired(100)).toEqual({ envelopes: 2, sends: 2 });
    expect([await envelopes(), await sends()]).toEqual([0, 0]);
  });

  it('the sweeper removes every target\'s envelope of an expired multi-device SEND, and records whose envelopes were acknowledged', async () => {
    const two = await mailbox();
    await enrolInStore(directory, new TestDevice(two.userId, 'd2'));
    const both = (label: string) => ({
      ...item(two, label, { ttlSeconds: 1 }),
      targets: [
        { deviceId: 'd1', payload: new TextEncoder().encode(`${label} for d1`) },
        { deviceId: 'd2', payload: new TextEncoder().encode(`${label} for d2`) },
      ],
    });
    for (const label of ['a', 'b', 'c']) {
      const r = (await store.storeBatch([both(label)])).results[0]!;
      expect(r.ok).toBe(true);
    }
    const kept = { ...both('kept'), ttlSeconds: 60 };
    expect((await store.storeBatch([kept])).results[0]!.ok).toBe(true);
    // d1 acknowledged its first two; their envelopes are gone already.
    await store.ackBatch([{ userId: two.userId, deviceId: 'd1', seq: 2 }]);
    expect(await count('envelopes', 'user_id = $1', [two.userId])).toBe(6);
    clock = T0 + 1000;
    expect(await store.sweepExpired(100)).toEqual({ envelopes: 4, sends: 3 });
    const left = async (d: string) => (await db.query<{ seq: string | number }>('SELECT seq FROM envelopes WHERE user_id = $1 AND device_id = $2 ORDER BY seq', [two.userId, d])).map((r) => Number(r.seq));
    expect(await left('d1')).toEqual([4]);
    expect(await left('d2')).toEqual([4]);
    expect(await count('sent_envelopes', 'recipient_user = $1', [two.userId])).toBe(1);
  });

  it('readers skip expired envelopes before the sweeper runs (expiry is exact)', async () => {
    const box = await mailbox();
    await store1(item(box, 'a', { ttlSeconds: 1 }));
    await store1(item(box, 'b', { ttlSeconds: 5 }));
    clock = T0 + 1000;
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => e.seq)).toEqual([2]);
    clock = T0 + 5000;
    expect(await store.fetch(box.userId, box.deviceId, 0, 10)).toEqual([]);
  });

  it('a resend is answered from the idempotency record until it expires; after that the id is new again', async () => {
    const box = await mailbox();
    const envelopeId = systemRandom(16);
    expect(await store1(item(box, 'x', { envelopeId, ttlSeconds: 2 }))).toBe(1);
    clock = T0 + 1500;
    const again = (await store.storeBatch([item(box, 'x', { envelopeId, ttlSeconds: 2 })])).results[0]!;
    expect(again).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 1 }], expiresAtMs: T0 + 2000 });
    clock = T0 + 2000;
    await store.sweepExpired(100);
    const later = (await store.storeBatch([item(box, 'x', { envelopeId, ttlSeconds: 2 })])).results[0]!;
    expect(later).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 2 }] });
  });

  it('one batch answers new SENDs, resends, conflicts, repeats and device-list mismatches, each in its place', async () => {
    const box = await mailbox();
    const two = await mailbox();
    await enrolInStore(directory, new TestDevice(two.userId, 'd2'));
    const resent = systemRandom(16);
    const conflicted = systemRandom(16);
    await store1(item(box, 'resent', { envelopeId: resent }));
    await store1(item(box, 'conflicted', { envelopeId: conflicted }));
    const repeated = systemRandom(16);
    const batch = [
      item(box, 'new 1'),
      item(box, 'resent', { envelopeId: resent }),
      item(box, 'other content', { envelopeId: conflicted }),
      item(two, 'only one of two devices'),
      { ...item(two, 'both devices'), targets: [{ deviceId: 'd2', payload: new Uint8Array([2]) }, { deviceId: 'd1', payload: new Uint8Array([1]) }] },
      item(box, 'new 2', { envelopeId: repeated }),
      item(box, 'new 2', { envelopeId: repeated }),
      item(box, 'new 2 changed', { envelopeId: repeated }),
    ];
    const { results, committed } = await store.storeBatch(batch);
    expect(results[0]).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 3 }] });
    expect(results[1]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 1 }] });
    expect(results[2]).toMatchObject({ ok: false, error: { code: 'ENVELOPE_ID_CONFLICT' } });
    expect(results[3]).toMatchObject({ ok: false, error: { code: 'DEVICE_LIST_MISMATCH', details: { userId: two.userId, devices: ['d1', 'd2'], missing: ['d2'], extra: [] } } });
    expect(results[4]).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd2', seq: 1 }, { deviceId: 'd1', seq: 1 }] });
    expect(results[5]).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 4 }] });
    expect(results[6]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 4 }] });
    expect(results[7]).toMatchObject({ ok: false, error: { code: 'ENVELOPE_ID_CONFLICT' } });
    // What the relay hands to live recipients is exactly what was stored.
    expect(committed.map((c) => [c.userId === box.userId ? 'box' : 'two', c.deviceId, c.seq, Buffer.from(c.payload).toString()])).toEqual([
      ['box', 'd1', 3, 'new 1'],
      ['two', 'd2', 1, '\u0002'],
      ['two', 'd1', 1, '\u0001'],
      ['box', 'd1', 4, 'new 2'],
    ]);
    const stored = await store.fetch(box.userId, box.deviceId, 0, 10);
    expect(stored.map((e) => [e.seq, Buffer.from(e.payload).toString()])).toEqual([
      [1, 'resent'],
      [2, 'conflicted'],
      [3, 'new 1'],
      [4, 'new 2'],
    ]);
    expect(await count('sent_envelopes', 'recipient_user = $1', [two.userId])).toBe(1);
  });

  it('two batches in flight that share envelope ids in opposite orders never deadlock', async () => {
    // One sender reusing two ids for two recipients, first and last in each batch, with
    // enough between them for both transactions to be inside their inserts at once.
    // storeOnce retries nothing, so a deadlock (40P01) shows as an error instead of being
    // retried away; HR001 (one batch waited for the other and found its id recorded) is
    // the expected outcome of such a race, and is retried here as storeBatch does.
    const storeOnce = (items: SendItem[]) => (store as unknown as { storeOnce(i: SendItem[]): Promise<{ results: SendResult[] }> }).storeOnce(items);
    const once = async (items: SendItem[]): Promise<{ results: SendResult[] }> => {
      for (;;) {
        try {
          return await storeOnce(items);
        } catch (err) {
          if (sqlState(err) !== 'HR001') throw err;
        }
      }
    };
    const r1 = await mailbox();
    const r2 = await mailbox();
    for (let round = 0; round < 15; round++) {
      const x = systemRandom(16);
      const y = systemRandom(16);
      const fill = (to: { userId: string }) => Array.from({ length: 255 }, (_, i) => item(to, `fill ${round}.${i}`));
      const [a, b] = await Promise.all([
        once([item(r1, 'a', { envelopeId: x }), ...fill(r1), item(r1, 'b', { envelopeId: y })]),
        once([item(r2, 'c', { envelopeId: y }), ...fill(r2), item(r2, 'd', { envelopeId: x })]),
      ]).catch((err: unknown) => {
        throw new Error(`round ${round}: ${(err as Error).message}`);
      });
      // Each id is stored once; its other use is refused as a conflict (other content).
      const codes = [a.results[0]!, b.results[256]!, a.results[256]!, b.results[0]!].map((r) => (r.ok ? 'stored' : r.error.code));
      expect(codes.slice(0, 2).sort()).toEqual(['ENVELOPE_ID_CONFLICT', 'stored']);
      expect(codes.slice(2).sort()).toEqual(['ENVELOPE_ID_CONFLICT', 'stored']);
    }
  });

  it('a device called NULL is a device like any other, also in the idempotency record', async () => {
    const box = await mailbox();
    await enrolInStore(directory, new TestDevice(box.userId, 'NULL'));
    const envelopeId = systemRandom(16);
    const send = {
      ...item(box, 'x', { envelopeId }),
      targets: [
        { deviceId: 'NULL', payload: new Uint8Array([1]) },
        { deviceId: 'd1', payload: new Uint8Array([2]) },
      ],
    };
    const first = (await store.storeBatch([send])).results[0]!;
    expect(first).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'NULL', seq: 1 }, { deviceId: 'd1', seq: 1 }] });
    const again = (await store.storeBatch([send])).results[0]!;
    expect(again).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'NULL', seq: 1 }, { deviceId: 'd1', seq: 1 }] });
    const wrong = (await store.storeBatch([{ ...item(box, 'y'), targets: [{ deviceId: 'd1', payload: new Uint8Array([3]) }] }])).results[0]!;
    expect(wrong).toMatchObject({ ok: false, error: { code: 'DEVICE_LIST_MISMATCH', details: { missing: ['NULL'] } } });
  });

  it('the same envelope id in two concurrent batches is stored once; the other is answered as a resend', async () => {
    for (let round = 0; round < 5; round++) {
      const box = await mailbox();
      const envelopeId = systemRandom(16);
      const [a, b] = await Promise.all([
        store.storeBatch([item(box, 'same', { envelopeId })]),
        store.storeBatch([item(box, 'filler'), item(box, 'same', { envelopeId })]),
      ]);
      const first = a.results[0]!;
      const second = b.results[1]!;
      expect(first.ok && second.ok).toBe(true);
      if (!first.ok || !second.ok) return;
      expect([first.duplicate, second.duplicate].sort()).toEqual([false, true]);
      expect(first.stored).toEqual(second.stored);
      expect(await count('envelopes', 'user_id = $1', [box.userId])).toBe(2);
      expect(await count('sent_envelopes', 'recipient_user = $1', [box.userId])).toBe(2);
    }
  });

  it('many concurrent batches to one mailbox give sequences 1..N exactly once', async () => {
    const box = await mailbox();
    const batches = await Promise.all(
      Array.from({ length: 12 }, (_, b) => store.storeBatch(Array.from({ length: 25 }, (_, i) => item(box, `${b}.${i}`, { sender: `s${b % 3}` })))),
    );
    const seqs = batches.flatMap((x) => x.results.map((r) => (r.ok ? r.stored[0]!.seq : -1)));
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 300, acked: 0 });
  });

  it('an ACK transaction commits without waiting for the WAL flush; other transactions keep the default', async () => {
    const box = await mailbox();
    await store1(item(box, 'one'));
    // The setting a transaction's commit obeys, read inside the transaction after the call.
    const ackSetting = await db.transaction(async (tx) => {
      await tx.query('SELECT hermetic_apply_acks($1::text[], $2::text[], $3::int8[])', [[box.userId], [box.deviceId], [1]]);
      return (await tx.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s"))[0]!.s;
    });
    expect(ackSetting).toBe('off');
    const otherSetting = await db.transaction(async (tx) => (await tx.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s"))[0]!.s);
    expect(otherSetting).toBe('on');
    // And outside that transaction the session is back to the default.
    expect((await db.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s"))[0]!.s).toBe('on');
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 1, acked: 1 });
  });

  it('each stored batch sends one NOTIFY with every mailbox\'s new tail, or "all" when that would be too long', async () => {
    const notices: string[] = [];
    const unlisten = await db.listen(MAILBOX_CHANNEL, (payload) => notices.push(payload));
    try {
      const a = await mailbox();
      const b = await mailbox();
      await store.storeBatch([item(a, 'a1'), item(b, 'b1'), item(a, 'a2')]);
      await waitFor(() => notices.length >= 1);
      expect(notices.map(decodeNotice)).toEqual([
        { node: 'test-node', kind: 'tails', tails: [[a.userId, 'd1', 2], [b.userId, 'd1', 1]] },
      ]);
      // A refused batch (nothing stored) notifies nobody.
      await store.storeBatch([{ ...item(a, 'x'), targets: [{ deviceId: 'nope', payload: new Uint8Array([1]) }] }]);
      // 300 mailboxes with long ids do not fit in one notification payload.
      const many = [];
      for (let i = 0; i < 300; i++) {
        const userId = `a-rather-long-user-identifier-number-${i}-${++n}`;
        await enrolInStore(directory, new TestDevice(userId, 'd1'));
        many.push(item({ userId }, `m${i}`));
      }
      await store.storeBatch(many);
      await waitFor(() => notices.length >= 2);
      expect(notices.slice(1).map(decodeNotice)).toEqual([{ node: 'test-node', kind: 'all' }]);
    } finally {
      await unlisten();
    }
  });

  it('a cumulative ACK moves the cursor forward only and removes what it covers', async () => {
    const box = await mailbox();
    for (let i = 0; i < 5; i++) await store1(item(box, `m${i}`));
    await store.ackBatch([
      { ...box, seq: 3 },
      { ...box, seq: 2 },
    ]);
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 5, acked: 3 });
    await store.ackBatch([{ ...box, seq: 1 }]);
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 5, acked: 3 });
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => e.seq)).toEqual([4, 5]);
    expect(await count('envelopes', 'user_id = $1', [box.userId])).toBe(2);
  });
});
