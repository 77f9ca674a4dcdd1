/**
 * TopicStore on both drivers (in-memory PGlite and a fresh PostgreSQL database), with an
 * injected clock: offsets are gap-free and ordered under concurrent publishers; publishing
 * is idempotent per publisher; reads start where asked or say exactly why they cannot;
 * retention drops whole slices by age and by size; a reset starts a new epoch.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../protocol/errors.js';
import { MAX_PUBLISH_BATCH, MAX_TOPIC_MESSAGE_BYTES, MIN_TOPIC_RETENTION_BYTES } from '../../protocol/limits.js';
import { type Database } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { DEFAULT_TOPIC_RETENTION_MS, MAX_IDEMPOTENCY_WINDOW_MS, type PublishItem, type PublishResult, TopicStore, sliceWidthFor } from '../../server/topics/store.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

const T0 = 1_800_000_000_000;
const AGE_MS = 20_000;
const SLICE_MS = sliceWidthFor(AGE_MS);

function message(label: string, opts: { publisher?: string; id?: string; key?: string; payload?: Uint8Array } = {}): PublishItem {
  const payload = opts.payload ?? new TextEncoder().encode(label);
  return {
    publisherUserId: opts.publisher ?? 'alice',
    publisherDeviceId: 'd1',
    publishId: new TextEncoder().encode(opts.id ?? label),
    contentHash: crypto.createHash('sha256').update(payload).digest(),
    key: opts.key === undefined ? undefined : new TextEncoder().encode(opts.key),
    payload,
  };
}

function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

function offsets(results: readonly PublishResult[]): number[] {
  return results.map((r) => r.offset);
}

async function codeOf(p: Promise<unknown>): Promise<{ code: ErrorCode; details: Record<string, unknown> | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: ErrorCode; details?: Record<string, unknown> };
    if (e.code === undefined) throw err;
    return { code: e.code, details: e.details };
  }
  throw new Error('expected a rejection');
}

describe.each(STORAGE_DRIVERS)('TopicStore on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`TopicStore on ${driver.name}`);
    return;
  }

  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  let clock = T0;
  let store: TopicStore;
  let n = 0;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    await migrate(db, loadMigrations());
    store = new TopicStore(db, { now: () => clock });
  });

  afterAll(async () => {
    await cleanup();
  });

  beforeEach(() => {
    clock = T0;
  });

  async function topic(settings: { retentionMs?: number; retentionBytes?: number } = { retentionMs: AGE_MS }): Promise<string> {
    const name = `t${++n}.events`;
    await store.create(name, 'owner', settings);
    return name;
  }

  async function slices(name: string): Promise<number> {
    const [r] = await db.query<{ n: string | number }>(
      `SELECT count(*) AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass('topic_' || (SELECT topic_id FROM topics WHERE name = $1))`,
      [name],
    );
    return Number(r!.n);
  }

  it('creates a topic once, with its settings, and refuses bad names and settings', async () => {
    const name = await topic({ retentionMs: 60_000, retentionBytes: MIN_TOPIC_RETENTION_BYTES });
    const info = await store.info(name);
    expect(info).toMatchObject({ name, epoch: 1, earliestOffset: 1, nextOffset: 1, retentionMs: 60_000, retentionBytes: MIN_TOPIC_RETENTION_BYTES, sliceMs: 15_000, createdBy: 'owner', createdAt: T0 });
    expect((await codeOf(store.create(name, 'other'))).code).toBe('TOPIC_EXISTS');
    for (const bad of ['', 'Upper', '.dot-first', 'a..b', 'a.', '-a', 'a b', 'x'.repeat(129), 'é']) {
      expect((await codeOf(store.create(bad, 'owner'))).code).toBe('BAD_REQUEST');
    }
    expect((await codeOf(store.create('ok-name', 'owner', { retentionMs: 5 }))).code).toBe('BAD_REQUEST');
    expect((await codeOf(store.create('ok-name', 'owner', { retentionBytes: 1.5 }))).code).toBe('BAD_REQUEST');
    expect(await store.info('ok-name')).toBeUndefined();
    expect(await store.info('never')).toBeUndefined();
  });

  it('bounds the topics one user creates', async () => {
    const capped = new TopicStore(db, { now: () => clock, maxTopicsPerCreator: 2 });
    await capped.create('cap.a', 'prolific');
    await capped.create('cap.b', 'prolific');
    expect((await codeOf(capped.create('cap.c', 'prolific'))).code).toBe('TOO_MANY_TOPICS');
    expect(await capped.info('cap.c')).toBeUndefined();
    await capped.create('cap.c', 'someone-else');
  });

  it('answers a repeated publish id only within the idempotency window', async () => {
    const name = await topic({});
    await store.publish(name, [message('once')]);
    clock += MAX_IDEMPOTENCY_WINDOW_MS - 1;
    expect(await store.publish(name, [message('once')])).toMatchObject([{ duplicate: true, offset: 1 }]);
    clock += 2;
    expect(await store.publish(name, [message('once')])).toMatchObject([{ duplicate: false, offset: 2 }]);
  });

  it('gives offsets 1, 2, 3 ... across batches and reads them back in order', async () => {
    const name = await topic();
    const a = await store.publish(name, [message('m1'), message('m2', { key: 'k' })]);
    const b = await store.publish(name, [message('m3')]);
    expect(offsets(a)).toEqual([1, 2]);
    expect(offsets(b)).toEqual([3]);
    expect(a[0]).toEqual({ kind: 'stored', duplicate: false, epoch: 1, offset: 1, publishedAtMs: T0 });
    const r = await store.read(name, 1, 1);
    expect(r.messages.map((m) => [m.offset, text(m.payload)])).toEqual([
      [1, 'm1'],
      [2, 'm2'],
      [3, 'm3'],
    ]);
    expect(r.messages[1]!.key && text(r.messages[1]!.key)).toBe('k');
    expect(r.messages[0]!.key).toBeUndefined();
    expect(r.messages[0]).toMatchObject({ publisherUserId: 'alice', publisherDeviceId: 'd1', publishedAtMs: T0 });
    expect({ next: r.next, head: r.head }).toEqual({ next: 4, head: 4 });
    const tail = await store.read(name, 1, 4);
    expect(tail.messages).toEqual([]);
  });

  it('answers a repeated publish id with the first offset, and other content with a conflict', async () => {
    const name = await topic();
    const first = await store.publish(name, [message('pay-1'), message('pay-1'), message('pay-2')]);
    expect(first.map((r) => [r.kind, r.offset, r.kind === 'stored' && r.duplicate])).toEqual([
      ['stored', 1, false],
      ['stored', 1, true],
      ['stored', 2, false],
    ]);
    clock += 1000;
    const again = await store.publish(name, [message('pay-2'), message('other', { id: 'pay-1' }), message('pay-1', { publisher: 'bob' })]);
    expect(again).toEqual([
      { kind: 'stored', duplicate: true, epoch: 1, offset: 2, publishedAtMs: T0 },
      { kind: 'conflict', epoch: 1, offset: 1 },
      { kind: 'stored', duplicate: false, epoch: 1, offset: 3, publishedAtMs: T0 + 1000 },
    ]);
    const r = await store.read(name, 1, 1);
    expect(r.messages.map((m) => [m.offset, m.publisherUserId, text(m.payload)])).toEqual([
      [1, 'alice', 'pay-1'],
      [2, 'alice', 'pay-2'],
      [3, 'bob', 'pay-1'],
    ]);
    // Within one batch too: the same id with other content is a conflict with the first.
    const mixed = await store.publish(name, [message('pay-3'), message('changed', { id: 'pay-3' }), message('pay-3')]);
    expect(mixed.map((m) => [m.kind, m.offset, m.kind === 'stored' && m.duplicate])).toEqual([
      ['stored', 4, false],
      ['conflict', 4, false],
      ['stored', 4, true],
    ]);
    expect((await store.info(name))?.nextOffset).toBe(5);
  });

  it('keeps offsets gap-free and each publisher in order under concurrent publishers', async () => {
    const name = await topic();
    const publishers = ['p1', 'p2', 'p3', 'p4'];
    const perPublisher = 30;
    await Promise.all(
      publishers.map(async (p) => {
        for (let k = 0; k < perPublisher; k += 3) {
          const batch = [k, k + 1, k + 2].map((j) => message(`${p}:${j}`, { publisher: p }));
          const r = await store.publish(name, batch);
          expect(r.every((x) => x.kind === 'stored' && !x.duplicate)).toBe(true);
        }
      }),
    );
    const all = [];
    let from = 1;
    for (;;) {
      const r = await store.read(name, 1, from, { maxMessages: 50 });
      all.push(...r.messages);
      from = r.next;
      if (r.next === r.head) break;
    }
    expect(all.map((m) => m.offset)).toEqual(Array.from({ length: publishers.length * perPublisher }, (_, i) => i + 1));
    for (const p of publishers) {
      const mine = all.filter((m) => m.publisherUserId === p).map((m) => text(m.payload));
      expect(mine).toEqual(Array.from({ length: perPublisher }, (_, j) => `${p}:${j}`));
    }
  });

  it('bounds a read by count and bytes, always returning the first message', async () => {
    const name = await topic();
    const big = new Uint8Array(1000).fill(7);
    await store.publish(name, [1, 2, 3, 4].map((i) => message(`b${i}`, { payload: big.map((x) => x + i) })));
    expect((await store.read(name, 1, 1, { maxMessages: 2 })).messages.map((m) => m.offset)).toEqual([1, 2]);
    expect((await store.read(name, 1, 1, { maxBytes: 2500 })).messages.map((m) => m.offset)).toEqual([1, 2]);
    expect((await store.read(name, 1, 2, { maxBytes: 10 })).messages.map((m) => m.offset)).toEqual([2]);
  });

  it('refuses what cannot be published, storing nothing', async () => {
    const name = await topic();
    expect((await codeOf(store.publish('missing', [message('x')]))).code).toBe('TOPIC_NOT_FOUND');
    expect((await codeOf(store.publish(name, [message('ok'), message('big', { payload: new Uint8Array(MAX_TOPIC_MESSAGE_BYTES + 1) })]))).code).toBe('MESSAGE_TOO_LARGE');
    expect((await codeOf(store.publish(name, [message('x', { id: '' })]))).code).toBe('BAD_REQUEST');
    expect((await codeOf(store.publish(name, [message('x', { id: 'i'.repeat(65) })]))).code).toBe('BAD_REQUEST');
    expect((await codeOf(store.publish(name, [message('x', { key: '' })]))).code).toBe('BAD_REQUEST');
    // Ids starting with a zero byte are the relay's (dead-letter copies).
    expect((await codeOf(store.publish(name, [{ ...message('x'), publishId: new Uint8Array([0, 100]) }]))).code).toBe('BAD_REQUEST');
    expect((await codeOf(store.publish(name, [{ ...message('x'), contentHash: new Uint8Array(31) }]))).code).toBe('BAD_REQUEST');
    const many = Array.from({ length: MAX_PUBLISH_BATCH + 1 }, (_, i) => message(`m${i}`));
    expect((await codeOf(store.publish(name, many))).code).toBe('BAD_REQUEST');
    expect(await store.info(name)).toMatchObject({ nextOffset: 1 });
    expect(await slices(name)).toBe(0);
  });

  it('says why a position cannot be read: another epoch, beyond the head, not an offset', async () => {
    const name = await topic();
    await store.publish(name, [message('a'), message('b')]);
    expect(await codeOf(store.read(name, 2, 1))).toEqual({ code: 'TOPIC_EPOCH_CHANGED', details: { epoch: 1, earliest: 1 } });
    expect(await codeOf(store.read(name, 1, 4))).toEqual({ code: 'OFFSET_OUT_OF_RANGE', details: { epoch: 1, next: 3 } });
    expect((await codeOf(store.read(name, 1, 0))).code).toBe('BAD_REQUEST');
    expect((await codeOf(store.read('missing', 1, 1))).code).toBe('TOPIC_NOT_FOUND');
    expect((await store.read(name, 1, 3)).messages).toEqual([]);
  });

  it('resolves each kind of start: earliest, latest, an offset, a time', async () => {
    const name = await topic();
    await store.publish(name, [message('a'), message('b')]);
    clock += 3000;
    await store.publish(name, [message('c')]);
    clock += 3000;
    await store.publish(name, [message('d')]);
    expect(await store.resolve(name, { kind: 'earliest' })).toEqual({ epoch: 1, offset: 1 });
    expect(await store.resolve(name, { kind: 'latest' })).toEqual({ epoch: 1, offset: 5 });
    expect(await store.resolve(name, { kind: 'offset', epoch: 1, offset: 3 })).toEqual({ epoch: 1, offset: 3 });
    expect(await store.resolve(name, { kind: 'time', atMs: T0 - 1 })).toEqual({ epoch: 1, offset: 1 });
    expect(await store.resolve(name, { kind: 'time', atMs: T0 + 1 })).toEqual({ epoch: 1, offset: 3 });
    expect(await store.resolve(name, { kind: 'time', atMs: T0 + 6000 })).toEqual({ epoch: 1, offset: 4 });
    expect(await store.resolve(name, { kind: 'time', atMs: T0 + 6001 })).toEqual({ epoch: 1, offset: 5 });
    expect((await codeOf(store.resolve(name, { kind: 'offset', epoch: 1, offset: 6 }))).code).toBe('OFFSET_OUT_OF_RANGE');
    expect((await codeOf(store.resolve(name, { kind: 'offset', epoch: 7, offset: 1 }))).code).toBe('TOPIC_EPOCH_CHANGED');
  });

  it('keeps publish times increasing when the clock goes back', async () => {
    const name = await topic();
    clock = T0 + 10_000;
    await store.publish(name, [message('later')]);
    clock = T0;
    const [r] = await store.publish(name, [message('earlier clock')]);
    expect(r).toMatchObject({ offset: 2, publishedAtMs: T0 + 10_000 });
    expect((await store.read(name, 1, 1)).messages.map((m) => m.publishedAtMs)).toEqual([T0 + 10_000, T0 + 10_000]);
  });

  // Retirement is database-wide: these tests count the slices of their own topic.
  it('retires whole slices older than the retention age; a reader of a retired offset is told where to go on', async () => {
    const name = await topic();
    // One batch per slice, for six slices.
    for (let s = 0; s < 6; s++) {
      clock = T0 + s * SLICE_MS;
      await store.publish(name, [message(`s${s}a`), message(`s${s}b`)]);
    }
    expect(await slices(name)).toBe(6);
    // Nothing is old enough yet: the oldest slice ends at T0 + SLICE_MS (T0 is aligned).
    clock = T0 + SLICE_MS + AGE_MS - 1;
    await store.retire();
    expect(await slices(name)).toBe(6);
    // Now the first two slices are wholly older than the age.
    clock = T0 + 2 * SLICE_MS + AGE_MS;
    expect((await store.retire()).dropped).toBeGreaterThanOrEqual(2);
    expect(await slices(name)).toBe(4);
    expect(await store.info(name)).toMatchObject({ earliestOffset: 5, nextOffset: 13 });
    expect(await codeOf(store.read(name, 1, 4))).toEqual({ code: 'OFFSET_RETIRED', details: { epoch: 1, earliest: 5 } });
    expect((await codeOf(store.resolve(name, { kind: 'offset', epoch: 1, offset: 1 }))).code).toBe('OFFSET_RETIRED');
    expect(await store.resolve(name, { kind: 'earliest' })).toEqual({ epoch: 1, offset: 5 });
    expect(await store.resolve(name, { kind: 'time', atMs: T0 })).toEqual({ epoch: 1, offset: 5 });
    const rest = await store.read(name, 1, 5);
    expect(rest.messages.map((m) => text(m.payload))).toEqual(['s2a', 's2b', 's3a', 's3b', 's4a', 's4b', 's5a', 's5b']);
    // Long after, every slice goes, the newest too; the topic stays usable and its
    // offsets continue.
    clock = T0 + 100 * SLICE_MS;
    await store.retire();
    expect(await slices(name)).toBe(0);
    expect(await store.info(name)).toMatchObject({ earliestOffset: 13, nextOffset: 13 });
    expect(await store.publish(name, [message('after')])).toMatchObject([{ offset: 13 }]);
    expect((await store.read(name, 1, 13)).messages.map((m) => text(m.payload))).toEqual(['after']);
  });

  it('retires the oldest slices while the topic holds more than its retention bytes, never the newest', async () => {
    const name = await topic({ retentionBytes: MIN_TOPIC_RETENTION_BYTES });
    const quarter = MIN_TOPIC_RETENTION_BYTES / 4;
    const slice = sliceWidthFor(undefined);
    // Five slices of half the limit each, then one slice of twice the limit.
    for (let s = 0; s < 5; s++) {
      clock = T0 + s * slice;
      await store.publish(name, [message(`s${s}a`, { payload: new Uint8Array(quarter).fill(s) }), message(`s${s}b`, { payload: new Uint8Array(quarter).fill(s + 100) })]);
    }
    await store.retire();
    expect(await slices(name)).toBe(2);
    expect(await store.info(name)).toMatchObject({ earliestOffset: 7, nextOffset: 11 });
    clock = T0 + 5 * slice;
    await store.publish(name, Array.from({ length: 8 }, (_, i) => message(`big${i}`, { payload: new Uint8Array(quarter).fill(i) })));
    await store.retire();
    expect(await slices(name)).toBe(1);
    expect(await store.info(name)).toMatchObject({ earliestOffset: 11, nextOffset: 19 });
    await store.retire();
    expect(await slices(name)).toBe(1);
  });

  it('gives a topic created with neither limit the default age, and keeps a size-only topic\'s messages whatever their age', async () => {
    const aged = await topic({});
    expect(await store.info(aged)).toMatchObject({ retentionMs: DEFAULT_TOPIC_RETENTION_MS, retentionBytes: null, sliceMs: sliceWidthFor(DEFAULT_TOPIC_RETENTION_MS) });
    const sized = await topic({ retentionBytes: MIN_TOPIC_RETENTION_BYTES });
    expect(await store.info(sized)).toMatchObject({ retentionMs: null, retentionBytes: MIN_TOPIC_RETENTION_BYTES });
    await store.publish(aged, [message('aged')]);
    await store.publish(sized, [message('kept')]);
    clock = T0 + 10 * 365 * 24 * 3600 * 1000;
    await store.retire();
    expect(await codeOf(store.read(aged, 1, 1))).toMatchObject({ code: 'OFFSET_RETIRED' });
    expect((await store.read(sized, 1, 1)).messages.map((m) => text(m.payload))).toEqual(['kept']);
  });

  it('resets a topic to a new epoch: offsets start again, the old epoch is refused', async () => {
    const name = await topic();
    await store.publish(name, [message('a'), message('b')]);
    clock += SLICE_MS;
    await store.publish(name, [message('c')]);
    const info = await store.reset(name);
    expect(info).toMatchObject({ epoch: 2, earliestOffset: 1, nextOffset: 1 });
    expect(await slices(name)).toBe(0);
    expect(await codeOf(store.read(name, 1, 2))).toEqual({ code: 'TOPIC_EPOCH_CHANGED', details: { epoch: 2, earliest: 1 } });
    // The ids of the old epoch are gone with it: the same id is stored again.
    expect(await store.publish(name, [message('a')])).toEqual([{ kind: 'stored', duplicate: false, epoch: 2, offset: 1, publishedAtMs: T0 + SLICE_MS }]);
    expect((await store.read(name, 2, 1)).messages.map((m) => text(m.payload))).toEqual(['a']);
  });
});
