/**
 * MailboxStore on both drivers (in-memory PGlite and a fresh PostgreSQL database), with
 * an injected clock: expiry is exact for readers; retirement drops old partitions,
 * carrying forward exactly the unacknowledged, unexpired entries; the idempotency
 * window is the retirement age; one batch answers every kind of SEND in its place;
 * concurrent batches stay gap-free and store an envelope id once; ACKs move the cursor
 * and delete nothing.
 */
import crypto from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { DirectoryStore } from '../../server/directory/store.js';
import { MAILBOX_CHANNEL, decodeNotice } from '../../server/fleet/notice.js';
import { STORE_SENDS_SQL, encodeSendBatch, storeSendsArgs } from '../../server/mailbox/send-batch.js';
import { type DeliveryClaim, LogStore } from '../../server/log/store.js';
import { toProtocolError } from '../../server/ws/connections.js';
import { ClockSkewError, MailboxStore, type SendItem, type SendResult, removeMailbox } from '../../server/mailbox/store.js';
import { type Database, type SqlExecutor, sqlState } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS, enrolInStore } from '../helpers/storage.js';
import { TestDevice } from '../helpers/device.js';

const T0 = 1_800_000_000_000;
/** Retirement age of the store under test: partitions of 5 s. */
const AGE_MS = 10_000;

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
    // No receipt window: a drained partition is dropped in the same pass (the window has
    // its own test below). The clock is the test's, far from the database's: no skew check
    // (it has its own test too).
    store = new MailboxStore(db, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
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

  async function count(where: string, params: string[]): Promise<number> {
    const rows = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM envelopes WHERE ${where}`, params);
    return Number(rows[0]!.n);
  }

  const text = (p: Uint8Array): string => new TextDecoder().decode(p);

  /** `db`, with `before` called ahead of each drain step (its partition's name) run in a
   * transaction; an error it returns fails that step. */
  function onDrainStep(before: (partition: unknown) => Error | undefined): Database {
    return new Proxy(db, {
      get(target, prop) {
        if (prop === 'transaction') {
          return <T>(fn: (tx: SqlExecutor) => Promise<T>) =>
            target.transaction((tx) => {
              const query = <R extends object>(sql: string, params?: Parameters<SqlExecutor['query']>[1]): Promise<R[]> => {
                const err = sql.includes('hermetic_drain_partition') ? before(params?.[0]) : undefined;
                return err ? Promise.reject(err) : tx.query<R>(sql, params);
              };
              return fn({ ...tx, query });
            });
        }
        const v: unknown = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }

  it('retirement drops old partitions, carrying forward exactly the unacknowledged, unexpired entries, and credits the quota', async () => {
    const box = await mailbox();
    // seq 1..3 acknowledged, 4 expiring before retirement, 5..6 unacknowledged.
    for (let i = 1; i <= 3; i++) await store1(item(box, `acked ${i}`));
    await store1(item(box, 'expires', { ttlSeconds: 1 }));
    for (let i = 5; i <= 6; i++) await store1(item(box, `kept ${i}`));
    await store.ackBatch([{ ...box, seq: 3 }]);
    expect(await store.held(box.userId, box.deviceId)).toMatchObject({ envelopes: 3 });
    expect(await count('user_id = $1', [box.userId])).toBe(6);

    // Not yet old enough: nothing of this mailbox retired. (Tests share the database and
    // the clock's start, so counts are checked per mailbox and as lower bounds.)
    clock = T0 + AGE_MS;
    await store.retire();
    expect(await count('user_id = $1', [box.userId])).toBe(6);
    clock = T0 + 2 * AGE_MS;
    const r = await store.retire();
    expect(r.carried).toBeGreaterThanOrEqual(2);
    expect(r.expired).toBeGreaterThanOrEqual(1);
    expect(r.partitions).toBeGreaterThanOrEqual(1);
    // Only the two unacknowledged, unexpired envelopes are left, with their sequence,
    // ids, times and bytes unchanged.
    const left = await store.fetch(box.userId, box.deviceId, 0, 10);
    expect(left.map((e) => [e.seq, text(e.payload), e.storedAtMs])).toEqual([
      [5, 'kept 5', T0],
      [6, 'kept 6', T0],
    ]);
    expect(await count('user_id = $1', [box.userId])).toBe(2);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 2, bytes: 12 });
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 6, acked: 3 });
    // New envelopes continue the sequence; an ACK past the carried ones credits them once.
    expect(await store1(item(box, 'after'))).toBe(7);
    await store.ackBatch([{ ...box, seq: 7 }]);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 0, bytes: 0 });
  });

  it('a recipient offline across several retirements loses nothing and gets nothing twice', async () => {
    const box = await mailbox();
    const other = await mailbox();
    const sent: string[] = [];
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 3; i++) {
        const label = `r${round}.${i}`;
        sent.push(label);
        await store1(item(box, label));
        // Another mailbox, acknowledged at once, whose partitions are dropped.
        await store1(item(other, label));
      }
      await store.ackBatch([{ ...other, seq: (round + 1) * 3 }]);
      clock += AGE_MS;
      await store.retire();
    }
    clock += 2 * AGE_MS;
    await store.retire();
    const got = await store.fetch(box.userId, box.deviceId, 0, 100);
    expect(got.map((e) => text(e.payload))).toEqual(sent);
    expect(got.map((e) => e.seq)).toEqual(sent.map((_, i) => i + 1));
    expect(await count('user_id = $1', [other.userId])).toBe(0);
    // Retired partitions are gone from the catalogue and from the table.
    const parts = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM envelope_partitions WHERE to_ms <= $1`, [clock - AGE_MS]);
    expect(parts[0]!.n).toBe(0);
  });

  it('a batch still writing into an old partition holds off its retirement; its envelopes are carried, not dropped', async () => {
    // Two connections: a server database only (PGlite has one connection).
    if (driver.name !== 'pg') return;
    const box = await mailbox();
    clock = T0 + 7 * AGE_MS;
    await store.ensurePartitions();
    // The batch is written in a transaction left open, at a time whose partition
    // retirement is about to take (as a batch that waited long for its locks would).
    const it = item(box, 'slow batch');
    const batch = encodeSendBatch([it], [0], clock, db.packByteArrays);
    let retiring: Promise<unknown> | undefined;
    let retiredEarly = false;
    await db.transaction(async (tx) => {
      await tx.query(STORE_SENDS_SQL, storeSendsArgs({ nowMs: clock, channel: null, node: 'test-node', maxBytes: 1e9, maxEnvelopes: 1e6, ...batch.params }));
      clock += 3 * AGE_MS;
      retiring = store.retire().then(() => {
        retiredEarly = true;
      });
      await new Promise((r) => setTimeout(r, 300));
    });
    expect(retiredEarly).toBe(false);
    await retiring;
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['slow batch']);
  });

  it('a batch whose partition another relay drained (its clock behind, the drop not yet done) is written into the next one', async () => {
    const box = await mailbox();
    clock = T0 + 40 * AGE_MS;
    await store.ensurePartitions();
    const behind = clock;
    // A relay whose clock is ahead by more than the retirement age drains the partition
    // covering this relay's time; its drop has not happened yet.
    const ahead = behind + 3 * AGE_MS;
    await store.ensurePartitions(ahead);
    const [part] = await db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE from_ms <= $1 AND to_ms > $1', [behind]);
    await db.query('SELECT * FROM hermetic_drain_partition($1::text, $2::int8, 1000, 1048576)', [part!.name, ahead]);
    expect(await store1(item(box, 'late'))).toBe(1);
    const [row] = await db.query<{ slot_ms: string | number; stored_at_ms: string | number }>(
      'SELECT slot_ms, stored_at_ms FROM envelopes WHERE user_id = $1',
      [box.userId],
    );
    expect(Number(row!.stored_at_ms)).toBe(behind);
    expect(Number(row!.slot_ms)).toBeGreaterThan(behind);
    // Retirement drops the drained partition and keeps the envelope.
    clock = ahead;
    await store.retire();
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['late']);
  });

  it('removing a mailbox takes its cursor row before its envelopes, as a drain does: the two never deadlock', async () => {
    // Two connections: a server database only (PGlite has one connection).
    if (driver.name !== 'pg') return;
    const box = await mailbox();
    await store1(item(box, 'a'));
    await store1(item(box, 'b'));
    await store.ackBatch([{ userId: box.userId, deviceId: box.deviceId, seq: 1 }]);
    let removed: Promise<unknown> | undefined;
    // Holds the cursor row, then writes the mailbox's envelopes, in the order of
    // hermetic_drain_partition, while the removal runs.
    await db.transaction(async (tx) => {
      await tx.query('SELECT 1 FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2 FOR UPDATE', [box.userId, box.deviceId]);
      removed = db.transaction((rx) => removeMailbox(rx, box.userId, box.deviceId));
      await new Promise((r) => setTimeout(r, 200));
      await tx.query('UPDATE envelopes SET send_hash = NULL WHERE user_id = $1 AND device_id = $2', [box.userId, box.deviceId]);
    });
    await removed;
    expect(await count('user_id = $1', [box.userId])).toBe(0);
    const cursors = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM mailbox_cursors WHERE user_id = $1', [box.userId]);
    expect(Number(cursors[0]!.n)).toBe(0);
  });

  it('a pass whose drop finds the table held (a long transaction) drains its partitions but tries no further drop', async () => {
    // Two connections: a server database only (PGlite has one connection).
    if (driver.name !== 'pg') return;
    const box = await mailbox();
    clock = T0 + 60 * AGE_MS;
    for (let k = 0; k < 4; k++) {
      await store1(item(box, `m${k}`));
      clock += AGE_MS / 2;
    }
    const calls: string[] = [];
    const recording = new Proxy(db, {
      get(target, prop) {
        if (prop === 'query') {
          return (sql: string, params?: [], opts?: object) => {
            calls.push(sql);
            return target.query(sql, params, opts);
          };
        }
        const v: unknown = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const retiring = new MailboxStore(recording, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
    clock += 3 * AGE_MS;
    const old = await db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE to_ms <= $1', [clock - AGE_MS]);
    expect(old.length).toBeGreaterThanOrEqual(3);
    // The partitions ahead made first (making one needs the table lock too).
    await retiring.ensurePartitions();
    await db.transaction(async (tx) => {
      await tx.query('SELECT 1 FROM envelopes LIMIT 1');
      const r = await retiring.retire();
      expect(r.partitions).toBe(0);
      expect(r.carried).toBeGreaterThanOrEqual(4);
      // The deferred drop is reported with what held the table: this transaction.
      expect(old.map((p) => p.name)).toContain(r.deferred?.partition);
      expect(r.deferred?.holders).toContainEqual(
        expect.objectContaining({ backendType: 'client backend', state: 'idle in transaction', relation: 'envelopes', mode: 'AccessShareLock' }),
      );
    });
    expect(calls.filter((q) => q.includes('hermetic_drop_partition')).length).toBe(1);
    const undropped = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM envelope_partitions WHERE drained');
    expect(Number(undropped[0]!.n)).toBeGreaterThanOrEqual(old.length);
    // The table free again, the next pass drops them all; nothing was lost.
    expect((await retiring.retire()).partitions).toBeGreaterThanOrEqual(old.length);
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['m0', 'm1', 'm2', 'm3']);
  });

  it('refuses drain settings the drain cannot run with', () => {
    const make = (retention: object): MailboxStore => new MailboxStore(db, 'test-node', { retention: { retirementAgeMs: AGE_MS, ...retention } });
    for (const carryStep of [
      { rows: 0, bytes: 1 },
      { rows: -5, bytes: 1 },
      { rows: 1.5, bytes: 1 },
      { rows: 2 ** 31, bytes: 1 },
      { rows: 1, bytes: 0 },
      { rows: 1, bytes: -1 },
      { rows: 1, bytes: Number.NaN },
    ]) {
      expect(() => make({ carryStep }), JSON.stringify(carryStep)).toThrow(RangeError);
    }
    for (const drainBudgetMs of [-1, Number.NaN]) expect(() => make({ drainBudgetMs }), String(drainBudgetMs)).toThrow(RangeError);
    expect(() => make({ carryStep: { rows: 1, bytes: 1 }, drainBudgetMs: 0 })).not.toThrow();
  });

  it('a pass whose drain fails still drops the partitions drained before it, and reports the failure', async () => {
    const box = await mailbox();
    clock = T0 + 200 * AGE_MS;
    for (let k = 0; k < 4; k++) {
      await store1(item(box, `m${k}`));
      clock += AGE_MS / 2;
    }
    await store.ackBatch([{ ...box, seq: 2 }]);
    const slots = (await db.query<{ slot_ms: string }>('SELECT DISTINCT slot_ms FROM envelopes WHERE user_id = $1 ORDER BY 1', [box.userId])).map((r) => Number(r.slot_ms));
    expect(slots.length).toBeGreaterThanOrEqual(2);
    // The drain of the second partition fails once (a lost connection, a timeout).
    let failed = false;
    const failing = onDrainStep((partition) => {
      if (failed || partition !== `envelopes_${slots[1]}`) return undefined;
      failed = true;
      return new Error('injected drain failure');
    });
    const retiring = new MailboxStore(failing, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
    clock += 3 * AGE_MS;
    const r = await retiring.retire();
    expect(r.drainFailed?.partition).toBe(`envelopes_${slots[1]}`);
    expect(r.drainFailed?.error.message).toBe('injected drain failure');
    expect(r.partitions).toBeGreaterThanOrEqual(1);
    // The first partition (two acknowledged entries) was drained and dropped in spite of
    // the second's failure; the second is untouched.
    const partitions = (await db.query<{ from_ms: string; drained: boolean }>('SELECT from_ms, drained FROM envelope_partitions')).map((r) => [Number(r.from_ms), r.drained]);
    expect(partitions.map(([f]) => f)).not.toContain(slots[0]);
    expect(partitions).toContainEqual([slots[1], false]);
    // The next pass finishes the work; nothing unacknowledged was lost.
    await retiring.retire();
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['m2', 'm3']);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 2, bytes: 4 });
  });

  it('a large backlog is carried in bounded steps, one transaction each, across passes: readers see every entry once, the expired are credited once', async () => {
    const box = await mailbox();
    clock = T0 + 600 * AGE_MS;
    // Every partition before this one retired first (other tests leave some, and the
    // budget below allows one step per pass).
    await store.retire(clock + AGE_MS);
    // seq 1-2 acknowledged, 3-5 expiring before the drain, 6-28 kept.
    for (let i = 1; i <= 2; i++) await store1(item(box, `acked ${i}`));
    for (let i = 3; i <= 5; i++) await store1(item(box, `expires ${i}`, { ttlSeconds: 1 }));
    for (let i = 6; i <= 28; i++) await store1(item(box, `kept ${i}`));
    await store.ackBatch([{ ...box, seq: 2 }]);
    const [slot] = (await db.query<{ slot_ms: string }>('SELECT DISTINCT slot_ms FROM envelopes WHERE user_id = $1', [box.userId])).map((r) => Number(r.slot_ms));
    const partition = `envelopes_${slot}`;
    let steps = 0;
    const counting = onDrainStep((p) => {
      if (p === partition) steps++;
      return undefined;
    });
    // Steps of 10 envelopes, and a budget that lets a pass make one step only.
    const stepping = new MailboxStore(counting, 'test-node', {
      now: () => clock,
      maxClockSkewMs: Infinity,
      retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0, carryStep: { rows: 10, bytes: 1 << 20 }, drainBudgetMs: 0 },
    });
    const kept = Array.from({ length: 23 }, (_, i) => `kept ${i + 6}`);
    const drained = async (): Promise<boolean | undefined> =>
      (await db.query<{ drained: boolean }>('SELECT drained FROM envelope_partitions WHERE name = $1', [partition]))[0]?.drained;
    clock += 3 * AGE_MS;
    for (let pass = 1; pass <= 2; pass++) {
      // The budget ran out with the partition not done: the next pass is due soon.
      expect((await stepping.retire()).behind).toBe(true);
      expect(steps).toBe(pass);
      expect(await drained()).toBe(false);
      // Half carried: each entry is read once, in order, from one partition or the other.
      expect((await store.fetch(box.userId, box.deviceId, 2, 100)).map((e) => text(e.payload))).toEqual(kept);
      expect(await count('user_id = $1 AND slot_ms = $2', [box.userId, String(slot)])).toBe(28 - 10 * pass);
      expect(await store.held(box.userId, box.deviceId)).toMatchObject({ envelopes: 26 });
    }
    // The third step finds 3 left: done, the expired credited, the partition dropped.
    await stepping.retire();
    expect(steps).toBe(3);
    expect(await drained()).toBeUndefined();
    expect((await store.fetch(box.userId, box.deviceId, 0, 100)).map((e) => [e.seq, text(e.payload)])).toEqual(kept.map((t, i) => [i + 6, t]));
    expect(await count('user_id = $1', [box.userId])).toBe(23);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 23, bytes: kept.reduce((b, t) => b + t.length, 0) });
    // Carried entries no longer answer resends, and the sequence goes on.
    expect(await store1(item(box, 'after'))).toBe(29);
    // The empty partitions after it take a step each; then the passes are no longer behind.
    let passes = 0;
    while ((await stepping.retire()).behind) expect(++passes).toBeLessThan(10);
  });

  it('a drain writes nothing for the mailboxes with everything acknowledged: only the others\' cursors are locked', async () => {
    const done = await mailbox();
    const waiting = await mailbox();
    clock = T0 + 800 * AGE_MS;
    for (let i = 1; i <= 3; i++) {
      await store1(item(done, `done ${i}`));
      await store1(item(waiting, `waiting ${i}`));
    }
    await store.ackBatch([
      { ...done, seq: 3 },
      { ...waiting, seq: 1 },
    ]);
    // A row locked FOR UPDATE, or updated, gets a new xmax (the locking transaction).
    const xmax = async (b: { userId: string; deviceId: string }): Promise<string> =>
      (await db.query<{ x: string }>('SELECT xmax::text AS x FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', [b.userId, b.deviceId]))[0]!.x;
    const before = { done: await xmax(done), waiting: await xmax(waiting) };
    clock += 3 * AGE_MS;
    await store.retire();
    expect(await xmax(done)).toBe(before.done);
    expect(await xmax(waiting)).not.toBe(before.waiting);
    expect((await store.fetch(waiting.userId, waiting.deviceId, 1, 10)).map((e) => text(e.payload))).toEqual(['waiting 2', 'waiting 3']);
    expect(await count('user_id = $1', [done.userId])).toBe(0);
  });

  it('a drain step moves at most its byte budget of payload, and always one entry', async () => {
    const box = await mailbox();
    clock = T0 + 700 * AGE_MS;
    for (let i = 1; i <= 5; i++) await store1(item(box, `big ${i}`));
    const byteSteps = new MailboxStore(db, 'test-node', {
      now: () => clock,
      maxClockSkewMs: Infinity,
      retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0, carryStep: { rows: 1_000, bytes: 1 } },
    });
    clock += 3 * AGE_MS;
    const r = await byteSteps.retire();
    expect(r.carried).toBeGreaterThanOrEqual(5);
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['big 1', 'big 2', 'big 3', 'big 4', 'big 5']);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 5, bytes: 25 });
  });

  it('retirement finds every mailbox of a partition, whatever its ids sort like, and carries exactly what each has not acknowledged', async () => {
    // Ids whose order differs between byte order and the database's collation, users with
    // several devices (the walk steps over (user, device) pairs), and mailboxes with
    // nothing acknowledged, some, or everything.
    const ids = ['Zed', 'zed', 'a_b', 'a-b', 'ab', 'A', '~', 'e', '0', '_'].map((u) => `${u}${++n}`);
    const boxes: { userId: string; deviceId: string }[] = [];
    for (const userId of ids) {
      const first = new TestDevice(userId, 'd1');
      await enrolInStore(directory, first);
      await enrolInStore(directory, new TestDevice(userId, 'D2'), first);
      boxes.push({ userId, deviceId: 'd1' }, { userId, deviceId: 'D2' });
    }
    // A SEND addresses every device of its user.
    const itemFor = (userId: string, label: string): SendItem => {
      const payload = new TextEncoder().encode(label);
      return { ...item({ userId }, label), targets: ['d1', 'D2'].map((deviceId) => ({ deviceId, payload })) };
    };
    clock = T0 + 400 * AGE_MS;
    for (let i = 0; i < 5; i++) {
      const { results } = await store.storeBatch(ids.map((u, k) => itemFor(u, `${k}:${i}`)));
      expect(results.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(ids.map(() => 'ok'));
    }
    // Mailbox k acknowledges k % 6 of its 5 envelopes (5: all).
    await store.ackBatch(boxes.map((b, k) => ({ ...b, seq: Math.min(5, k % 6) })).filter((a) => a.seq > 0));
    clock += 3 * AGE_MS;
    const r = await store.retire();
    const expectCarried = boxes.reduce((sum, _b, k) => sum + 5 - Math.min(5, k % 6), 0);
    expect(r.carried).toBeGreaterThanOrEqual(expectCarried);
    for (const [k, b] of boxes.entries()) {
      const acked = Math.min(5, k % 6);
      const left = await store.fetch(b.userId, b.deviceId, 0, 10);
      expect(left.map((e) => [e.seq, text(e.payload)])).toEqual(Array.from({ length: 5 - acked }, (_, j) => [acked + j + 1, `${k >> 1}:${acked + j}`]));
      expect(await count('user_id = $1 AND device_id = $2', [b.userId, b.deviceId])).toBe(5 - acked);
      expect((await store.held(b.userId, b.deviceId))?.envelopes).toBe(5 - acked);
    }
  });

  it('readers skip expired envelopes before retirement drops them (expiry is exact)', async () => {
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
    const later = (await store.storeBatch([item(box, 'x', { envelopeId, ttlSeconds: 2 })])).results[0]!;
    expect(later).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 2 }] });
  });

  it('the idempotency window is the retirement age: inside it a resend is answered, after it the SEND is stored again', async () => {
    const box = await mailbox();
    const envelopeId = systemRandom(16);
    const send = item(box, 'x', { envelopeId, ttlSeconds: 3600 });
    expect(await store1(send)).toBe(1);
    clock = T0 + AGE_MS - 1;
    await store.retire();
    expect((await store.storeBatch([send])).results[0]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 1 }] });
    // Past the window: the partition was retired (its unacknowledged envelope carried
    // forward, no longer answering resends), and the resend is stored as new.
    clock = T0 + 3 * AGE_MS;
    expect((await store.retire()).carried).toBeGreaterThanOrEqual(1);
    expect((await store.storeBatch([send])).results[0]).toMatchObject({ ok: true, duplicate: false, stored: [{ deviceId: 'd1', seq: 2 }] });
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => [e.seq, Buffer.from(e.envelopeId).equals(envelopeId)])).toEqual([
      [1, true],
      [2, true],
    ]);
    // And the new copy answers resends again, within its own window.
    expect((await store.storeBatch([send])).results[0]).toMatchObject({ ok: true, duplicate: true, stored: [{ deviceId: 'd1', seq: 2 }] });
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
    expect(await count('user_id = $1 AND send_hash IS NOT NULL', [two.userId])).toBe(1);
  });

  it('repeats in a batch are told apart by sending device and whole envelope id, not by any part of it', async () => {
    const box = await mailbox();
    // Ids equal in their first bytes (even all but the last), one id from two senders, and
    // one SEND three times, the last of them behind others sharing its first bytes.
    const id = (last: number): Uint8Array => Uint8Array.from({ length: 16 }, (_, i) => (i === 15 ? last : 0xab));
    const batch = [
      item(box, 'a', { envelopeId: id(1) }),
      item(box, 'b', { envelopeId: id(2) }),
      item(box, 'a from another sender', { envelopeId: id(1), sender: 'sender-2' }),
      item(box, 'a', { envelopeId: id(1) }),
      item(box, 'c', { envelopeId: id(3) }),
      item(box, 'a', { envelopeId: id(1) }),
      item(box, 'b changed', { envelopeId: id(2) }),
    ];
    const { results } = await store.storeBatch(batch);
    const seqs = results.map((r) => (r.ok ? `${r.duplicate ? 'dup ' : ''}${r.stored[0]!.seq}` : r.error.code));
    expect(seqs).toEqual(['1', '2', '3', 'dup 1', '4', 'dup 1', 'ENVELOPE_ID_CONFLICT']);
  });

  it('an envelope id stored by one sender is new to another: neither a resend of it nor a conflict, and the first still answers its own resend', async () => {
    const box = await mailbox();
    const id = systemRandom(16);
    await store1(item(box, 'same', { envelopeId: id }));
    const { results } = await store.storeBatch([
      item(box, 'same', { envelopeId: id, sender: 'sender-2' }),
      item(box, 'other', { envelopeId: id, sender: 'sender-3' }),
      item(box, 'same', { envelopeId: id }),
    ]);
    const seqs = results.map((r) => (r.ok ? `${r.duplicate ? 'dup ' : ''}${r.stored[0]!.seq}` : r.error.code));
    expect(seqs).toEqual(['2', '3', 'dup 1']);
  });

  it('two batches in flight that share envelope ids in opposite orders never deadlock', async () => {
    // One sender reusing two ids for two recipients, first and last in each batch, with
    // enough between them for both transactions to be inside their inserts at once.
    // storeOnce retries nothing, so a deadlock (40P01) shows as an error instead of being
    // retried away; a unique violation (23505: one batch waited for the other and found
    // its id stored) is the expected outcome of such a race, and is retried here as
    // storeBatch does.
    const storeOnce = (items: SendItem[]) => (store as unknown as { storeOnce(i: SendItem[]): Promise<{ results: SendResult[] }> }).storeOnce(items);
    const once = async (items: SendItem[]): Promise<{ results: SendResult[] }> => {
      for (;;) {
        try {
          return await storeOnce(items);
        } catch (err) {
          if (sqlState(err) !== '23505') throw err;
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
      expect(await count('user_id = $1', [box.userId])).toBe(2);
      expect(await count('user_id = $1 AND send_hash IS NOT NULL', [box.userId])).toBe(2);
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

  it('a cumulative ACK moves the cursor forward only and deletes nothing', async () => {
    const box = await mailbox();
    for (let i = 0; i < 5; i++) await store1(item(box, `m${i}`));
    await store.ackBatch([
      { ...box, seq: 3 },
      { ...box, seq: 2 },
    ]);
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 5, acked: 3 });
    await store.ackBatch([{ ...box, seq: 1 }]);
    expect(await store.position(box.userId, box.deviceId)).toEqual({ tail: 5, acked: 3 });
    // Readers start after the cursor (the stream's position); the rows stay until their
    // partition is retired.
    expect((await store.fetch(box.userId, box.deviceId, 3, 10)).map((e) => e.seq)).toEqual([4, 5]);
    expect(await count('user_id = $1', [box.userId])).toBe(5);
    expect(await store.held(box.userId, box.deviceId)).toMatchObject({ envelopes: 2 });
  });

  it('a drained partition is kept for the receipt window: a receipt for an envelope acknowledged just before the drain is confirmed until the window has passed', async () => {
    const windowed = new MailboxStore(db, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: AGE_MS } });
    const receipts = new LogStore(db);
    const box = await mailbox();
    // Far ahead of the other tests' clocks (it runs last: partitions are made ahead).
    clock = T0 + 200 * AGE_MS;
    await windowed.ensurePartitions();
    const first = item(box, 'acked');
    const second = item(box, 'unacked');
    await store1(first);
    await store1(second);
    await windowed.ackBatch([{ ...box, seq: 1 }]);
    const claim = (it: SendItem, seq: number): DeliveryClaim => ({
      senderUser: it.senderUserId,
      senderDevice: it.senderDeviceId,
      envelopeId: it.envelopeId,
      recipientUser: box.userId,
      recipientDevice: box.deviceId,
      seq,
    });
    const claims = [claim(first, 1), claim(second, 2)];

    // Drained: the unacknowledged entry is carried forward, the acknowledged one stays
    // (unread) with its partition.
    clock += 2 * AGE_MS;
    expect((await windowed.retire()).carried).toBeGreaterThanOrEqual(1);
    expect((await windowed.fetch(box.userId, box.deviceId, 1, 10)).map((e) => e.seq)).toEqual([2]);
    expect(await receipts.unconfirmedDeliveries(claims)).toEqual([]);
    await windowed.ackBatch([{ ...box, seq: 2 }]);
    expect(await store.held(box.userId, box.deviceId)).toEqual({ envelopes: 0, bytes: 0 });

    // Just inside the window: still confirmed.
    clock += AGE_MS - 1;
    await windowed.retire();
    expect(await receipts.unconfirmedDeliveries(claims)).toEqual([]);
    expect(await count('user_id = $1', [box.userId])).toBe(2);

    // The window over: the drained partition is dropped; the carried entry, acknowledged
    // later, waits for its own partition's retirement.
    clock += 1;
    expect((await windowed.retire()).partitions).toBeGreaterThanOrEqual(1);
    expect(await receipts.unconfirmedDeliveries(claims)).toEqual([0]);
    expect(await count('user_id = $1', [box.userId])).toBe(1);
    expect(await windowed.fetch(box.userId, box.deviceId, 2, 10)).toEqual([]);
  });
  it("a relay whose clock is far from the database's makes no partition and retires none", async () => {
    const catalogue = async (): Promise<string> =>
      JSON.stringify(await db.query('SELECT name, from_ms, to_ms, drained FROM envelope_partitions ORDER BY from_ms'));
    const before = await catalogue();
    for (const offset of [3_600_000, -3_600_000]) {
      const skewed = new MailboxStore(db, 'skewed-node', { now: () => Date.now() + offset, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
      const err = await skewed.ensurePartitions().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClockSkewError);
      expect(Math.abs((err as ClockSkewError).skewMs - offset)).toBeLessThan(60_000);
      await expect(skewed.retire()).rejects.toBeInstanceOf(ClockSkewError);
      // A SEND that needed such a partition is answered UNAVAILABLE, not INTERNAL, with no
      // log line at info or above (every SEND fails so: the retirement tick says why).
      const lines: string[] = [];
      expect(toProtocolError(err, pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })).code).toBe('UNAVAILABLE');
      expect(lines).toEqual([]);
    }
    expect(await catalogue()).toBe(before);
  });

  it('a deferred drop whose lock holders cannot be listed is still reported, and the pass still returns what it did', async () => {
    if (driver.name !== 'pg') return;
    const box = await mailbox();
    clock = T0 + 900 * AGE_MS;
    await store1(item(box, 'kept'));
    const blind = new Proxy(db, {
      get(target, prop) {
        if (prop === 'query') {
          return (sql: string, params?: [], opts?: object) =>
            sql.includes('pg_locks') ? Promise.reject(new Error('injected: no lock listing')) : target.query(sql, params, opts);
        }
        const v: unknown = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const retiring = new MailboxStore(blind, 'test-node', { now: () => clock, maxClockSkewMs: Infinity, retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0 } });
    clock += 3 * AGE_MS;
    await retiring.ensurePartitions();
    await db.transaction(async (tx) => {
      await tx.query('SELECT 1 FROM envelopes LIMIT 1');
      const r = await retiring.retire();
      expect(r.carried).toBeGreaterThanOrEqual(1);
      expect(r.deferred?.partition).toMatch(/^envelopes_/);
      expect(r.deferred?.holders).toEqual([]);
    });
    expect((await store.fetch(box.userId, box.deviceId, 0, 10)).map((e) => text(e.payload))).toEqual(['kept']);
    expect((await retiring.retire()).deferred).toBeUndefined();
  });
});
