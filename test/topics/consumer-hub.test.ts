/**
 * ConsumerHub's own bookkeeping, with a stand-in group store: the per-connection limit on
 * groups holds when many consume requests arrive at once, and each request is answered;
 * a reset of the topic gives the members back the room its old epoch's leases took.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { GroupInfo, GroupStore, Lease, LeasedMessage } from '../../server/topics/groups.js';
import { ConsumerHub, MAX_CONSUMES_PER_CONNECTION } from '../../server/topics/consumers.js';
import type { TopicPeer } from '../../server/topics/hub.js';

/** Every group exists; lookups answer on a later turn, as a database would. */
function standInGroups(): GroupStore {
  const later = <T>(v: T): Promise<T> => new Promise((r) => setImmediate(() => r(v)));
  const empty: Lease = { epoch: 1, messages: [], deadLettered: 0, skipped: 0, nextDueMs: undefined };
  return {
    info: (topic: string, name: string) => later({ topic, name } as unknown as GroupInfo),
    lease: () => later(empty),
    release: () => later(undefined),
  } as unknown as GroupStore;
}

function peer(): TopicPeer & { frames: string[] } {
  const frames: string[] = [];
  return { userId: 'u', deviceId: 'd', closed: false, frames, write: (t) => frames.push(t), cork: (fn) => fn(), bufferedAmount: () => 0, join: () => undefined, leave: () => undefined };
}

const codeOf = (r: PromiseSettledResult<void>): string => (r.status === 'fulfilled' ? 'ok' : String((r.reason as { code?: string }).code));

describe('ConsumerHub', () => {
  it('keeps to its groups-per-connection limit when consume requests arrive together', async () => {
    const hub = new ConsumerHub({ groups: standInGroups(), logger: pino({ level: 'silent' }), nodeId: 'n1', onDeadLettered: () => undefined });
    const p = peer();
    const results = await Promise.allSettled(Array.from({ length: MAX_CONSUMES_PER_CONNECTION + 4 }, (_, i) => hub.consume(p, i, 'feeds.a', `g${i}`, 16)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(MAX_CONSUMES_PER_CONNECTION);
    expect(results.slice(MAX_CONSUMES_PER_CONNECTION).map(codeOf)).toEqual(['BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST']);
    hub.stopAll();
  });

  it('answers a second consume of one group sent before the first was answered', async () => {
    const hub = new ConsumerHub({ groups: standInGroups(), logger: pino({ level: 'silent' }), nodeId: 'n1', onDeadLettered: () => undefined });
    const p = peer();
    const results = await Promise.allSettled([hub.consume(p, 1, 'feeds.a', 'g', 16), hub.consume(p, 2, 'feeds.a', 'g', 16)]);
    expect(results.map(codeOf)).toEqual(['ok', 'BAD_REQUEST']);
    expect(p.frames.filter((f) => f.includes('"consuming"'))).toHaveLength(1);
    hub.stopAll();
  });

  it('gives a member its room back when the topic is reset, its old epoch\'s leases gone', async () => {
    const asked: { epoch: number; max: number }[] = [];
    let epoch = 1;
    let pending = 2;
    const msg = (offset: number): LeasedMessage => ({
      offset,
      publishedAtMs: 1,
      publisherUserId: 'u',
      publisherDeviceId: 'd',
      publishId: new Uint8Array([1]),
      key: undefined,
      payload: new Uint8Array([1]),
      deliveries: 1,
      leaseUntilMs: Date.now() + 3_600_000,
    });
    const groups = Object.assign(standInGroups(), {
      lease: async (_t: string, _g: string, _m: string, max: number): Promise<Lease> => {
        asked.push({ epoch, max });
        const n = Math.min(max, pending);
        pending -= n;
        return { epoch, messages: Array.from({ length: n }, (_, i) => msg(i + 1)), deadLettered: 0, skipped: 0, nextDueMs: undefined };
      },
    });
    const hub = new ConsumerHub({ groups, logger: pino({ level: 'silent' }), nodeId: 'n1', onDeadLettered: () => undefined });
    const p = peer();
    await hub.consume(p, 1, 'feeds.a', 'g', 2);
    await new Promise((r) => setTimeout(r, 20));
    expect(asked).toEqual([{ epoch: 1, max: 2 }]);
    // The member is full; the topic is reset and published to.
    epoch = 2;
    pending = 2;
    hub.topicHead('feeds.a', 2);
    await new Promise((r) => setTimeout(r, 20));
    expect(asked).toEqual([
      { epoch: 1, max: 2 },
      { epoch: 2, max: 2 },
    ]);
    hub.stopAll();
  });
});
