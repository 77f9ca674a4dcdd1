/**
 * GroupStore on both drivers, with an injected clock: members of a group share a topic's
 * messages (a range lease per call, one row); acknowledged messages are done; a lease
 * that expires or a negative acknowledgement makes a message due again (to any member),
 * counted, and past the maximum deliveries it goes to the dead-letter topic with where it
 * came from; extensions and releases move deadlines; offsets not leased to the caller are
 * refused whole; retention and resets are reported, never hidden.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../protocol/errors.js';
import type { Database } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { GroupStore, MAX_GROUPS_PER_TOPIC, MAX_GROUP_REDELIVERIES } from '../../server/topics/groups.js';
import { type PublishItem, TopicStore } from '../../server/topics/store.js';
import { openPg } from '../../server/storage/pg.js';
import { createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

const T0 = 1_800_000_000_000;
const VIS = 10_000;

function message(label: string, key?: string): PublishItem {
  const payload = new TextEncoder().encode(label);
  return {
    publisherUserId: 'bank-a',
    publisherDeviceId: 'd1',
    publishId: payload,
    contentHash: crypto.createHash('sha256').update(payload).digest(),
    payload,
    ...(key !== undefined ? { key: new TextEncoder().encode(key) } : {}),
  };
}

async function codeOf(p: Promise<unknown>): Promise<ErrorCode> {
  try {
    await p;
  } catch (err) {
    const code = (err as { code?: ErrorCode }).code;
    if (code === undefined) throw err;
    return code;
  }
  throw new Error('expected a rejection');
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

describe.each(STORAGE_DRIVERS)('GroupStore on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`GroupStore on ${driver.name}`);
    return;
  }

  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  let clock = T0;
  let topics: TopicStore;
  let groups: GroupStore;
  let n = 0;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    await migrate(db, loadMigrations());
    topics = new TopicStore(db, { now: () => clock });
    groups = new GroupStore(db, topics, { now: () => clock });
  });

  afterAll(async () => {
    await cleanup();
  });

  beforeEach(() => {
    clock = T0;
  });

  /** A topic with `count` messages m0.., its dead-letter topic, and a group on it. */
  async function setup(count: number, settings: { maxDeliveries?: number; retentionMs?: number; orderedByKey?: boolean } = {}): Promise<{ topic: string; dlq: string; group: string }> {
    const topic = `pay${++n}`;
    const dlq = `pay${n}.dead-letter`;
    await topics.create(topic, 'owner', settings.retentionMs ? { retentionMs: settings.retentionMs } : {});
    await topics.create(dlq, 'owner');
    if (count > 0) await topics.publish(topic, Array.from({ length: count }, (_, i) => message(`m${i}`)));
    await groups.create(topic, 'workers', 'owner', { visibilityMs: VIS, maxDeliveries: settings.maxDeliveries ?? 3, deadLetterTopic: dlq, orderedByKey: settings.orderedByKey });
    return { topic, dlq, group: 'workers' };
  }

  async function leaseRows(topic: string): Promise<number> {
    const [r] = await db.query<{ n: string | number }>('SELECT count(*) AS n FROM group_leases l JOIN topics t ON t.topic_id = l.topic_id WHERE t.name = $1', [topic]);
    return Number(r!.n);
  }

  it('bounds the groups of a topic', async () => {
    const { topic, dlq } = await setup(0);
    for (let i = 1; i < MAX_GROUPS_PER_TOPIC; i++) await groups.create(topic, `g${i}`, 'owner', { deadLetterTopic: dlq });
    expect(await codeOf(groups.create(topic, 'one-more', 'owner', { deadLetterTopic: dlq }))).toBe('TOO_MANY_GROUPS');
  });

  it('leases nothing new while the group\'s failed messages fill their bound', async () => {
    const { topic, group } = await setup(3);
    await groups.lease(topic, group, 'A', 1);
    // Fill the group's redeliveries up to the bound (as failures would).
    const [t] = await db.query<{ topic_id: string | number }>('SELECT topic_id FROM topics WHERE name = $1', [topic]);
    await db.query(
      `INSERT INTO group_redeliveries (topic_id, group_name, off, deliveries, available_at_ms, reason)
       SELECT $1, $2, 1000000 + g, 1, $3, 'nack' FROM generate_series(1, $4::int) AS g`,
      [t!.topic_id, group, T0 + 3_600_000, MAX_GROUP_REDELIVERIES],
    );
    expect((await groups.lease(topic, group, 'B', 5)).messages).toEqual([]);
    await db.query('DELETE FROM group_redeliveries WHERE off > 1000000');
    expect((await groups.lease(topic, group, 'B', 5)).messages.map((m) => m.offset)).toEqual([2, 3]);
  });

  it('creates a group once, and refuses bad settings', async () => {
    const { topic, dlq } = await setup(0);
    expect(await groups.info(topic, 'workers')).toMatchObject({ topic, name: 'workers', epoch: 1, committedOffset: 1, nextOffset: 1, visibilityMs: VIS, maxDeliveries: 3, deadLetterTopic: dlq, inFlight: 0 });
    expect(await codeOf(groups.create(topic, 'workers', 'x', { deadLetterTopic: dlq }))).toBe('GROUP_EXISTS');
    expect(await codeOf(groups.create('nope', 'g', 'x', { deadLetterTopic: dlq }))).toBe('TOPIC_NOT_FOUND');
    expect(await codeOf(groups.create(topic, 'g', 'x', { deadLetterTopic: 'nope' }))).toBe('TOPIC_NOT_FOUND');
    expect(await codeOf(groups.create(topic, 'g', 'x', { deadLetterTopic: topic }))).toBe('BAD_REQUEST');
    for (const bad of [{ visibilityMs: 999 }, { visibilityMs: 13 * 3600 * 1000 }, { maxDeliveries: 0 }, { maxDeliveries: 101 }]) {
      expect(await codeOf(groups.create(topic, 'g', 'x', { deadLetterTopic: dlq, ...bad }))).toBe('BAD_REQUEST');
    }
    for (const name of ['', 'A', 'a.b', '-a', 'x'.repeat(65)]) expect(await codeOf(groups.create(topic, name, 'x', { deadLetterTopic: dlq }))).toBe('BAD_REQUEST');
    expect(await codeOf(groups.lease(topic, 'none', 'm', 1))).toBe('GROUP_NOT_FOUND');
  });

  it('leases each message to one member, a range per call in one row; acknowledged messages are done', async () => {
    const { topic, group } = await setup(10);
    const a = await groups.lease(topic, group, 'A', 4);
    const b = await groups.lease(topic, group, 'B', 4);
    expect(a.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4]);
    expect(b.messages.map((m) => m.offset)).toEqual([5, 6, 7, 8]);
    expect(a.messages.map((m) => [text(m.payload), m.deliveries, m.leaseUntilMs])).toEqual([1, 2, 3, 4].map((o) => [`m${o - 1}`, 1, T0 + VIS]));
    expect(await leaseRows(topic)).toBe(2);
    await groups.ack(topic, group, 'A', [1, 2, 3, 4]);
    await groups.ack(topic, group, 'B', [5, 7]);
    expect(await leaseRows(topic)).toBe(1);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 5, nextOffset: 9, inFlight: 2, redeliveries: 0 });
    const c = await groups.lease(topic, group, 'C', 10);
    expect(c.messages.map((m) => m.offset)).toEqual([9, 10]);
    const none = await groups.lease(topic, group, 'C', 10);
    expect(none.messages).toEqual([]);
    expect(none.nextDueMs).toBe(T0 + VIS);
  });

  it('the one-call lease and acknowledgement write what the full path reads, and leave it every uncommon case', async () => {
    const { topic, group } = await setup(20);
    const fresh = (member: string, max: number) => db.query<{ off: string | number }>('SELECT * FROM hermetic_group_lease_fresh($1, $2, $3::text[], $4::int4[], $5)', [topic, group, [member], [max], clock]);
    const ackFast = async (member: string, offsets: number[], epoch: number | null = null) => {
      const [r] = await db.query<{ ok: boolean }>('SELECT hermetic_group_ack_fast($1, $2, $3::text[], $4::int8[], $5) AS ok', [topic, group, offsets.map(() => member), offsets, epoch]);
      return r!.ok;
    };
    expect((await fresh('A', 10)).map((r) => Number(r.off))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(await ackFast('A', [10, 1, 8, 3, 3])).toBe(true);
    // Most significant bit first, as the full path writes and reads them.
    const [row] = await db.query<{ done: Uint8Array; done_count: number }>('SELECT l.done, l.done_count FROM group_leases l JOIN topics t ON t.topic_id = l.topic_id WHERE t.name = $1', [topic]);
    expect([...row!.done]).toEqual([0b1010_0001, 0b0100_0000]);
    expect(row!.done_count).toBe(4);
    // Done already, another member's, another epoch, or not leased: false, nothing written.
    expect(await ackFast('A', [3])).toBe(false);
    expect(await ackFast('B', [2])).toBe(false);
    expect(await ackFast('A', [2], 2)).toBe(false);
    expect(await ackFast('A', [2, 11])).toBe(false);
    expect(await codeOf(groups.nack(topic, group, 'A', [3]))).toBe('NOT_LEASED');
    expect(await groups.info(topic, group)).toMatchObject({ inFlight: 6, nextOffset: 11 });
    // A lease past its deadline: the one call leaves it to the full path, which makes the
    // unacknowledged offsets due again.
    clock += VIS + 1;
    expect(await fresh('B', 10)).toEqual([]);
    const b = await groups.lease(topic, group, 'B', 10);
    expect(b.messages.map((m) => [m.offset, m.deliveries])).toEqual([[2, 2], [4, 2], [5, 2], [6, 2], [7, 2], [9, 2], [11, 1], [12, 1], [13, 1], [14, 1]]);
    // A redelivery is not in a range lease: the full path acknowledges it.
    expect(await ackFast('B', [2])).toBe(false);
    await groups.ack(topic, group, 'B', [2, 4, 5, 6, 7, 9, 11, 12, 13, 14]);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 15, inFlight: 0, redeliveries: 0 });
    // An ordered group always takes the full path.
    const ordered = await setup(3, { orderedByKey: true });
    expect(await groups.leaseFresh(ordered.topic, ordered.group, [{ member: 'A', max: 3 }])).toBeUndefined();
    expect((await groups.lease(ordered.topic, ordered.group, 'A', 3)).messages.map((m) => m.offset)).toEqual([1, 2, 3]);
  });

  it('leases for several members in one call, each a range in turn, while offsets last', async () => {
    const { topic, group } = await setup(7);
    const leases = await groups.leaseFresh(topic, group, [{ member: 'A', max: 3 }, { member: 'B', max: 3 }, { member: 'C', max: 3 }, { member: 'D', max: 2 }]);
    expect(leases && [...leases].map(([m, l]) => [m, l.messages.map((x) => x.offset)])).toEqual([['A', [1, 2, 3]], ['B', [4, 5, 6]], ['C', [7]], ['D', []]]);
    expect(await leaseRows(topic)).toBe(3);
    expect(await groups.info(topic, group)).toMatchObject({ nextOffset: 8, inFlight: 7 });
    // Acknowledged by their own members only.
    expect(await codeOf(groups.ack(topic, group, 'A', [4]))).toBe('NOT_LEASED');
    expect(await groups.ackMany(topic, group, [{ member: 'A', offsets: [1, 2, 3] }, { member: 'B', offsets: [4, 5, 6] }, { member: 'C', offsets: [7] }])).toEqual([undefined, undefined, undefined]);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 8, inFlight: 0 });
    // Nothing new: the full path decides (and says when to look again).
    expect(await groups.leaseFresh(topic, group, [{ member: 'A', max: 3 }])).toBeUndefined();
    expect(await codeOf(groups.leaseFresh(topic, group, [{ member: 'A', max: 0 }]))).toBe('BAD_REQUEST');
  });

  it('applies the acknowledgements of several members in one call, and each by itself when one is refused', async () => {
    const { topic, group } = await setup(12);
    await groups.lease(topic, group, 'A', 4);
    await groups.lease(topic, group, 'B', 4);
    expect(await groups.ackMany(topic, group, [{ member: 'A', offsets: [1, 2] }, { member: 'B', offsets: [5, 6] }])).toEqual([undefined, undefined]);
    expect(await groups.info(topic, group)).toMatchObject({ inFlight: 4 });
    const outcomes = await groups.ackMany(topic, group, [{ member: 'A', offsets: [3] }, { member: 'B', offsets: [4, 7] }, { member: 'A', offsets: [0] }]);
    expect(outcomes[0]).toBeUndefined();
    expect((outcomes[1] as { code?: string }).code).toBe('NOT_LEASED');
    expect((outcomes[2] as { code?: string }).code).toBe('BAD_REQUEST');
    // A's was applied; nothing of B's refused request was (7 is still leased to B).
    expect(await groups.info(topic, group)).toMatchObject({ inFlight: 3 });
    await groups.ack(topic, group, 'B', [7]);
    expect(await codeOf(groups.ack(topic, group, 'A', [3]))).toBe('NOT_LEASED');
  });

  it('refuses an offset a member acknowledges again in a later request of the same call, as each by itself would', async () => {
    const { topic, group } = await setup(6);
    // Member ids are the relay's, but nothing in the array parameters depends on their characters.
    const [a, b] = ['r1/1/a,"b\\{c}', 'NULL'];
    const leases = await groups.leaseFresh(topic, group, [{ member: a, max: 3 }, { member: b, max: 3 }]);
    expect(leases && [...leases].map(([m, l]) => [m, l.messages.map((x) => x.offset)])).toEqual([[a, [1, 2, 3]], [b, [4, 5, 6]]]);
    const outcomes = await groups.ackMany(topic, group, [{ member: a, offsets: [1, 2, 2] }, { member: b, offsets: [4] }, { member: a, offsets: [2] }]);
    expect(outcomes.slice(0, 2)).toEqual([undefined, undefined]);
    expect((outcomes[2] as { code?: string }).code).toBe('NOT_LEASED');
    expect(await groups.info(topic, group)).toMatchObject({ inFlight: 3 });
    expect(await groups.ackMany(topic, group, [{ member: a, offsets: [3] }, { member: b, offsets: [5, 6] }])).toEqual([undefined, undefined]);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 7, inFlight: 0 });
  });

  it('makes a message due again when its lease expires, to any member, counting the delivery', async () => {
    const { topic, group } = await setup(5);
    await groups.lease(topic, group, 'A', 5);
    await groups.ack(topic, group, 'A', [1, 2]);
    clock += VIS - 1;
    expect((await groups.lease(topic, group, 'B', 5)).messages).toEqual([]);
    clock += 1;
    const again = await groups.lease(topic, group, 'B', 5);
    expect(again.messages.map((m) => [m.offset, m.deliveries])).toEqual([
      [3, 2],
      [4, 2],
      [5, 2],
    ]);
    // A's lease is over: its late acknowledgement is refused, and nothing changes.
    expect(await codeOf(groups.ack(topic, group, 'A', [3]))).toBe('NOT_LEASED');
    await groups.ack(topic, group, 'B', [3, 4, 5]);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 6, inFlight: 0, redeliveries: 0 });
  });

  it('leaves a failed message to another member when asked to, and gives it back to the same one otherwise', async () => {
    const { topic, group } = await setup(2);
    await groups.lease(topic, group, 'A', 1);
    await groups.lease(topic, group, 'B', 1);
    await groups.nack(topic, group, 'B', [2]);
    clock += VIS;
    // 1 expired at A, 2 was refused by B: each goes to the other one.
    expect((await groups.lease(topic, group, 'A', 5, { avoidOwnFailures: true })).messages.map((m) => m.offset)).toEqual([2]);
    expect((await groups.lease(topic, group, 'B', 5, { avoidOwnFailures: true })).messages.map((m) => m.offset)).toEqual([1]);
    clock += VIS;
    // Alone, a member gets its own failures again.
    expect((await groups.lease(topic, group, 'A', 5)).messages.map((m) => [m.offset, m.deliveries])).toEqual([
      [1, 3],
      [2, 3],
    ]);
  });

  it('refuses offsets not leased to the caller whole, changing nothing', async () => {
    const { topic, group } = await setup(4);
    await groups.lease(topic, group, 'A', 2);
    await groups.lease(topic, group, 'B', 2);
    expect(await codeOf(groups.ack(topic, group, 'A', [1, 3]))).toBe('NOT_LEASED');
    expect(await codeOf(groups.nack(topic, group, 'A', [2, 99]))).toBe('NOT_LEASED');
    expect(await codeOf(groups.extend(topic, group, 'B', [1], 5000))).toBe('NOT_LEASED');
    expect(await codeOf(groups.ack(topic, group, 'A', []))).toBe('BAD_REQUEST');
    expect(await codeOf(groups.ack(topic, group, 'A', [0]))).toBe('BAD_REQUEST');
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 1, inFlight: 4, redeliveries: 0 });
    await groups.ack(topic, group, 'A', [1, 2]);
    // Twice: the second is not leased any more.
    expect(await codeOf(groups.ack(topic, group, 'A', [1]))).toBe('NOT_LEASED');
  });

  it('redelivers a negatively acknowledged message after its delay, and dead-letters it after the maximum deliveries', async () => {
    const { topic, dlq, group } = await setup(3, { maxDeliveries: 2 });
    await groups.lease(topic, group, 'A', 3);
    await groups.ack(topic, group, 'A', [1, 3]);
    await groups.nack(topic, group, 'A', [2], 5000);
    expect((await groups.lease(topic, group, 'B', 5)).messages).toEqual([]);
    clock += 5000;
    const second = await groups.lease(topic, group, 'B', 5);
    expect(second.messages.map((m) => [m.offset, m.deliveries, text(m.payload)])).toEqual([[2, 2, 'm1']]);
    await groups.nack(topic, group, 'B', [2]);
    const third = await groups.lease(topic, group, 'C', 5);
    expect(third.messages).toEqual([]);
    expect(third.deadLettered).toBe(1);
    expect(third.deadLetterHead).toEqual({ topic: dlq, epoch: 1, head: 2 });
    const dead = await topics.read(dlq, 1, 1);
    expect(dead.messages.map((m) => [text(m.payload), m.publisherUserId, m.deadLetter])).toEqual([
      ['m1', 'bank-a', { topic, group, epoch: 1, offset: 2, deliveries: 2, reason: 'max_deliveries', lastFailure: 'nack' }],
    ]);
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 4, deadLettered: 1, redeliveries: 0, inFlight: 0 });
  });

  it('dead-letters a message whose leases keep expiring, saying so', async () => {
    const { topic, dlq, group } = await setup(1, { maxDeliveries: 1 });
    await groups.lease(topic, group, 'A', 1);
    clock += VIS;
    expect((await groups.lease(topic, group, 'B', 1)).deadLettered).toBe(1);
    expect((await topics.read(dlq, 1, 1)).messages[0]!.deadLetter).toMatchObject({ offset: 1, deliveries: 1, lastFailure: 'visibility_timeout' });
  });

  it('extends a lease past its deadline, and hands a departed member\'s messages to the others at once', async () => {
    const { topic, group } = await setup(4);
    await groups.lease(topic, group, 'A', 2);
    await groups.lease(topic, group, 'B', 2);
    clock += VIS / 2;
    // The range 1..2 is extended whole.
    expect(await groups.extend(topic, group, 'A', [1], VIS)).toEqual({ leaseUntilMs: clock + VIS, offsets: [1, 2] });
    clock = T0 + VIS;
    // A's lease was extended; B's expired.
    const c = await groups.lease(topic, group, 'C', 10);
    expect(c.messages.map((m) => m.offset)).toEqual([3, 4]);
    await groups.release(topic, group, 'A');
    const d = await groups.lease(topic, group, 'D', 10);
    expect(d.messages.map((m) => [m.offset, m.deliveries])).toEqual([
      [1, 2],
      [2, 2],
    ]);
  });

  it('reports messages retention took before the group leased them', async () => {
    const { topic, group } = await setup(0, { retentionMs: 4000 });
    await topics.publish(topic, [message('old1'), message('old2')]);
    clock += 10_000;
    await topics.publish(topic, [message('new')]);
    await topics.retire();
    const l = await groups.lease(topic, group, 'A', 10);
    expect(l.skipped).toBe(2);
    expect(l.messages.map((m) => text(m.payload))).toEqual(['new']);
    expect(await groups.info(topic, group)).toMatchObject({ skipped: 2 });
  });

  it('starts again at offset 1 when the topic is reset', async () => {
    const { topic, group } = await setup(3);
    await groups.lease(topic, group, 'A', 2);
    await topics.reset(topic);
    await topics.publish(topic, [message('fresh')]);
    const l = await groups.lease(topic, group, 'A', 5);
    expect(l.epoch).toBe(2);
    expect(l.messages.map((m) => [m.offset, text(m.payload)])).toEqual([[1, 'fresh']]);
    expect(await codeOf(groups.ack(topic, group, 'A', [2]))).toBe('NOT_LEASED');
  });

  it('refuses offsets of an old epoch, even when the same offsets of the new one are leased to the member', async () => {
    const { topic, group } = await setup(3);
    await groups.lease(topic, group, 'A', 3);
    await topics.reset(topic);
    await topics.publish(topic, [message('n1'), message('n2'), message('n3')]);
    expect((await groups.lease(topic, group, 'A', 3)).messages.map((m) => m.offset)).toEqual([1, 2, 3]);
    // A finishes offset 2 of epoch 1: not offset 2 of epoch 2, which it has not processed.
    expect(await codeOf(groups.ack(topic, group, 'A', [2], { epoch: 1 }))).toBe('NOT_LEASED');
    expect(await codeOf(groups.nack(topic, group, 'A', [2], 0, { epoch: 1 }))).toBe('NOT_LEASED');
    expect(await codeOf(groups.extend(topic, group, 'A', [2], VIS, { epoch: 1 }))).toBe('NOT_LEASED');
    expect(await groups.info(topic, group)).toMatchObject({ epoch: 2, inFlight: 3 });
    await groups.ack(topic, group, 'A', [1, 2, 3], { epoch: 2 });
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 4, inFlight: 0 });
  });

  it('gives every message to exactly one of several concurrent members', async () => {
    const { topic, group } = await setup(120);
    const seen: number[] = [];
    await Promise.all(
      ['A', 'B', 'C'].map(async (member) => {
        for (;;) {
          const l = await groups.lease(topic, group, member, 7);
          if (l.messages.length === 0) return;
          seen.push(...l.messages.map((m) => m.offset));
          await groups.ack(topic, group, member, l.messages.map((m) => m.offset));
        }
      }),
    );
    expect(seen.sort((x, y) => x - y)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 121, inFlight: 0 });
    expect(await leaseRows(topic)).toBe(0);
  });

  it('dead-letters the same offset once per group, even for long group names sharing a prefix', async () => {
    const { topic, dlq } = await setup(1);
    const long = (last: string): string => `${'g'.repeat(60)}-${last}`.slice(0, 64);
    for (const name of [long('a'), long('b')]) {
      await groups.create(topic, name, 'owner', { visibilityMs: VIS, maxDeliveries: 1, deadLetterTopic: dlq });
      await groups.lease(topic, name, 'A', 1);
      await groups.nack(topic, name, 'A', [1]);
      expect((await groups.lease(topic, name, 'B', 1)).deadLettered).toBe(1);
    }
    const dead = await topics.read(dlq, 1, 1);
    expect(dead.messages.map((m) => m.deadLetter?.group)).toEqual([long('a'), long('b')]);
  });

  describe('ordered by key', () => {
    const offsets = (l: { messages: readonly { offset: number }[] }): number[] => l.messages.map((m) => m.offset);

    it('leases a key\'s next message only once its earlier one is done, other keys meanwhile', async () => {
      const { topic, group } = await setup(0, { orderedByKey: true });
      // 1 a1(K1) 2 b1(K2) 3 a2(K1) 4 c1(no key) 5 b2(K2) 6 a3(K1)
      await topics.publish(topic, [message('a1', 'K1'), message('b1', 'K2'), message('a2', 'K1'), message('c1'), message('b2', 'K2'), message('a3', 'K1')]);
      expect(await groups.info(topic, group)).toMatchObject({ orderedByKey: true });
      expect(offsets(await groups.lease(topic, group, 'A', 10))).toEqual([1, 2, 4]);
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([]);
      await groups.ack(topic, group, 'A', [1]);
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([3]);
      await groups.ack(topic, group, 'A', [2, 4]);
      expect(offsets(await groups.lease(topic, group, 'A', 10))).toEqual([5]);
      await groups.ack(topic, group, 'B', [3]);
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([6]);
      await groups.ack(topic, group, 'A', [5]);
      await groups.ack(topic, group, 'B', [6]);
      expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 7, inFlight: 0, redeliveries: 0 });
    });

    it('keeps the order through a negative acknowledgement and an expired lease', async () => {
      const { topic, group } = await setup(0, { orderedByKey: true });
      await topics.publish(topic, [message('k1', 'K'), message('k2', 'K'), message('k3', 'K')]);
      expect(offsets(await groups.lease(topic, group, 'A', 10))).toEqual([1]);
      await groups.nack(topic, group, 'A', [1]);
      const again = await groups.lease(topic, group, 'B', 10);
      expect(again.messages.map((m) => [m.offset, m.deliveries])).toEqual([[1, 2]]);
      clock += VIS;
      // B's lease expired: 1 is due again, and still before 2.
      expect(offsets(await groups.lease(topic, group, 'C', 10, { avoidOwnFailures: true }))).toEqual([1]);
      await groups.ack(topic, group, 'C', [1]);
      expect(offsets(await groups.lease(topic, group, 'C', 10))).toEqual([2]);
    });

    it('holds a key back while its earlier message waits out a negative acknowledgement\'s delay', async () => {
      const { topic, group } = await setup(0, { orderedByKey: true });
      await topics.publish(topic, [message('k1', 'K'), message('k2', 'K')]);
      expect(offsets(await groups.lease(topic, group, 'A', 10))).toEqual([1]);
      await groups.nack(topic, group, 'A', [1], 5000);
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([]);
      clock += 5000;
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([1]);
      await groups.ack(topic, group, 'B', [1]);
      expect(offsets(await groups.lease(topic, group, 'B', 10))).toEqual([2]);
    });

    it('keeps a key\'s order, and its parked messages bounded, behind a hot key\'s backlog', async () => {
      const { topic, group } = await setup(0, { orderedByKey: true });
      await topics.publish(topic, [message('h0', 'H')]);
      expect(offsets(await groups.lease(topic, group, 'A', 1))).toEqual([1]);
      // H is busy; 1,100 more of H, then one of K.
      for (let i = 0; i < 1100; i += 220) await topics.publish(topic, Array.from({ length: 220 }, (_, j) => message(`h${i + j + 1}`, 'H')));
      await topics.publish(topic, [message('k0', 'K')]);
      const kLeased: number[] = [];
      for (let i = 1; i <= 4; i++) {
        const l = await groups.lease(topic, group, 'B', 256);
        const ks = l.messages.filter((m) => text(m.key!) === 'K').map((m) => m.offset);
        kLeased.push(...ks);
        // K fails each time: its first message stays K's earliest not done.
        if (ks.length > 0) await groups.nack(topic, group, 'B', ks);
        await topics.publish(topic, [message(`k${i}`, 'K')]);
      }
      expect(new Set(kLeased).size, `K leased out of order: ${kLeased.join(', ')}`).toBeLessThanOrEqual(1);
      expect((await groups.info(topic, group))!.redeliveries).toBeLessThanOrEqual(2048);
    });

    it('gives each key\'s messages in order, once each, to concurrent members', async () => {
      const { topic, group } = await setup(0, { orderedByKey: true });
      const keys = ['K0', 'K1', 'K2', 'K3', 'K4'];
      await topics.publish(topic, Array.from({ length: 100 }, (_, i) => message(`m${i}`, keys[(i * 7) % 5])));
      const byKey = new Map<string, number[]>();
      const inFlight = new Set<string>();
      await Promise.all(
        ['A', 'B', 'C'].map(async (member) => {
          for (let idle = 0; idle < 20; ) {
            const l = await groups.lease(topic, group, member, 3);
            if (l.messages.length === 0) {
              idle++;
              await new Promise((r) => setImmediate(r));
              continue;
            }
            idle = 0;
            for (const m of l.messages) {
              const k = new TextDecoder().decode(m.key!);
              expect(inFlight.has(k), `key ${k} leased twice at once`).toBe(false);
              inFlight.add(k);
              byKey.set(k, [...(byKey.get(k) ?? []), m.offset]);
            }
            await groups.ack(topic, group, member, l.messages.map((m) => m.offset));
            // Free again only once acknowledged: no other member may hold it meanwhile.
            for (const m of l.messages) inFlight.delete(new TextDecoder().decode(m.key!));
          }
        }),
      );
      const all = [...byKey.values()].flat().sort((x, y) => x - y);
      expect(all).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      for (const [k, offs] of byKey) expect(offs, k).toEqual([...offs].sort((x, y) => x - y));
      expect(await groups.info(topic, group)).toMatchObject({ committedOffset: 101, inFlight: 0, redeliveries: 0 });
    });
  });
});

describe('GroupStore locks on PostgreSQL', () => {
  if (!pgServer) {
    pgMissing('GroupStore locks on PostgreSQL');
    return;
  }

  it('an acknowledgement call of several members locks their leases in first offset order, as an expiry does (no deadlock between them)', async () => {
    const tdb = await createTestDatabase();
    const db = await openPg({ connectionString: tdb.url, maxConnections: 4, timeoutMs: 10_000 });
    const other = new pg.Client({ connectionString: tdb.url });
    try {
      await migrate(db, loadMigrations());
      const topics = new TopicStore(db, { now: () => T0 });
      const groups = new GroupStore(db, topics, { now: () => T0 });
      await topics.create('pay', 'owner');
      await topics.create('pay.dead-letter', 'owner');
      await topics.publish('pay', [message('m0'), message('m1')]);
      await groups.create('pay', 'workers', 'owner', { visibilityMs: VIS, deadLetterTopic: 'pay.dead-letter' });
      // B's lease starts first; A sorts first.
      expect((await groups.lease('pay', 'workers', 'B', 1)).messages.map((m) => m.offset)).toEqual([1]);
      expect((await groups.lease('pay', 'workers', 'A', 1)).messages.map((m) => m.offset)).toEqual([2]);
      await other.connect();
      await other.query('BEGIN');
      // Holds the first lease, as an expiry deleting leases in first offset order would.
      await other.query('SELECT 1 FROM group_leases WHERE first_off = 1 FOR UPDATE');
      const acked = groups.ackMany('pay', 'workers', [{ member: 'A', offsets: [2] }, { member: 'B', offsets: [1] }]);
      for (;;) {
        const [w] = await db.query<{ n: string | number }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query LIKE '%hermetic_group_ack_fast%'`,
        );
        if (Number(w!.n) > 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      // Waiting for the first lease, the call holds none after it: the expiry can go on.
      const second = await other.query('SELECT 1 FROM group_leases WHERE first_off = 2 FOR UPDATE NOWAIT').then(
        () => 'free',
        (err: { code?: string }) => err.code,
      );
      expect(second).toBe('free');
      await other.query('ROLLBACK');
      expect(await acked).toEqual([undefined, undefined]);
      expect(await groups.info('pay', 'workers')).toMatchObject({ committedOffset: 3, inFlight: 0 });
    } finally {
      await other.end();
      await db.close();
      await tdb.drop();
    }
  });
});
