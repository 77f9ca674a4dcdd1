/**
 * Two relay processes sharing one PostgreSQL database: an envelope committed on relay A
 * reaches a device connected to relay B live, woken by LISTEN/NOTIFY rather than by the
 * periodic catch-up scan; a device has one live connection across the fleet (connecting
 * on B replaces the connection on A with 4002, and the other way round); a burst of
 * "all" notices (commits too large for a tails notice) costs another relay at most two
 * catch-up scans, which still deliver.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { CATCHUP_INTERVAL_MS } from '../../server/limits.js';
import { MAILBOX_CHANNEL } from '../../server/mailbox/store.js';
import { pgMissing, pgServer } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, World, commitUnannounced, firstDevice, metric, payload, sendMany, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const DELIVERED = 'hermetic_frames_out_total{type="deliver"}';

describe('two relays sharing PostgreSQL', () => {
  if (!pgServer) {
    pgMissing('two relays sharing PostgreSQL');
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(POSTGRES, { relays: 2 });
  });

  afterAll(async () => {
    await world?.stop();
  });

  afterEach(async () => {
    world.closeClients();
    await world.expectRelaysUp();
  });

  it('delivers live across relays (sender on A, recipient on B), woken by NOTIFY', async () => {
    const [a, b] = world.relays as [typeof world.relay, typeof world.relay];
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 0 });
    const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    const before = { a: (await metric(a, DELIVERED)) ?? 0, b: (await metric(b, DELIVERED)) ?? 0 };

    // One at a time, each waiting for its delivery: every one must be pushed by B as
    // soon as A commits it.
    const rounds = 10;
    const latencies: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      const stored = await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload(`cross ${i}`) }]);
      expect(stored.type).toBe('stored');
      await reader.waitDelivered(i + 1);
      latencies.push(performance.now() - t0);
    }
    expect(reader.delivered.map((d) => [d.seq, text(d.payload)])).toEqual(Array.from({ length: rounds }, (_, i) => [i + 1, `cross ${i}`]));
    // Woken by the catch-up scan alone, deliveries would take CATCHUP_INTERVAL_MS / 2 on
    // average; NOTIFY takes milliseconds. The median is a generous, robust witness.
    latencies.sort((x, y) => x - y);
    const median = latencies[Math.floor(rounds / 2)]!;
    expect(median, `latencies ${latencies.map((l) => l.toFixed(0)).join(', ')} ms`).toBeLessThan(CATCHUP_INTERVAL_MS / 5);

    // B wrote the DELIVER frames; A wrote none.
    await reader.ping();
    expect(((await metric(b, DELIVERED)) ?? 0) - before.b).toBe(rounds);
    expect(((await metric(a, DELIVERED)) ?? 0) - before.a).toBe(0);
  });

  it('a backlog stored through A is streamed by B, and envelopes from both relays interleave gap-free', async () => {
    const alice = await world.user('alice', 2);
    const bob = await world.user('bob');
    const onA = await world.connect(alice, alice.devices[0], { relay: 0 });
    const onB = await world.connect(alice, alice.devices[1], { relay: 1 });
    await sendMany(onA, bob, 20, 'from A');
    const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.stream().at(-1)).toBe('queue_empty 20');
    await Promise.all([sendMany(onA, bob, 50, 'from A live'), sendMany(onB, bob, 50, 'from B live')]);
    await reader.waitDelivered(120);
    expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    for (const label of ['from A live', 'from B live']) {
      expect(reader.delivered.filter((d) => text(d.payload).startsWith(label)).map((d) => text(d.payload))).toEqual(
        Array.from({ length: 50 }, (_, i) => `${label} ${i}`),
      );
    }
  });

  it('a burst of "all" notices costs B at most two catch-up scans, and the envelope they announce is delivered once', async () => {
    const b = world.relays[1]!;
    const bob = await world.user('bob');
    const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    const scans = async () => (await metric(b, 'hermetic_catchup_runs_total{reason="notice"}')) ?? 0;
    const heard = async () => (await metric(b, 'hermetic_notices_total')) ?? 0;
    const before = { scans: await scans(), heard: await heard() };

    // What another relay's commit of many mailboxes leaves: an envelope, the mailbox's
    // tail moved on, and (too many mailboxes for one notification) "all" notices, here a
    // burst of BURST such commits' worth, delivered together on commit.
    const BURST = 50;
    await commitUnannounced(world, bob, 'caught up', async (sql) => {
      // Distinct payloads: PostgreSQL folds identical notifications of one transaction.
      for (let i = 0; i < BURST; i++) await sql.query('SELECT pg_notify($1, $2)', [MAILBOX_CHANNEL, JSON.stringify({ node: 'another-relay', kind: 'all', n: i })]);
    });

    await reader.waitDelivered(1);
    expect(reader.delivered.map((d) => [d.seq, text(d.payload)])).toEqual([[1, 'caught up']]);
    // Every notice has been heard (each one, uncoalesced, started a scan on the spot)...
    for (let i = 0; i < 200 && (await heard()) - before.heard < BURST; i++) await new Promise((res) => setTimeout(res, 25));
    expect((await heard()) - before.heard).toBe(BURST);
    // ...and they asked for one scan, plus at most one merged follow-up.
    const ran = (await scans()) - before.scans;
    expect(ran).toBeGreaterThanOrEqual(1);
    expect(ran).toBeLessThanOrEqual(2);
    // Delivered once: the follow-up scan finds nothing new.
    await reader.ping();
    expect(reader.delivered).toHaveLength(1);
  });

  it('connecting on B replaces the connection on A (4002), and B continues the stream; and back again', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 0 });
    await sendMany(sender, bob, 3, 'first');
    const onA = await world.connect(bob, undefined, { relay: 0 });
    await onA.waitJson((f) => f.type === 'queue_empty');
    onA.ack(1);
    await onA.ping();

    const onB = await world.connect(bob, undefined, { relay: 1 });
    expect(await onA.waitClosed()).toBe(CLOSE_CODES.REPLACED);
    await onB.waitJson((f) => f.type === 'queue_empty');
    // The stream continues on B: everything not acknowledged, and what comes next.
    expect(onB.delivered.map((d) => d.seq).at(-1)).toBe(3);
    expect(onB.delivered.map((d) => d.seq)[0]).toBeLessThanOrEqual(2);
    // Counted before sending: B may deliver before the sender has its STORED.
    const before = onB.delivered.length;
    await sendMany(sender, bob, 1, 'second');
    await onB.waitDelivered(before + 1);
    expect(text(onB.delivered.at(-1)!.payload)).toBe('second 0');
    expect(onB.closeCode).toBeUndefined();

    const backOnA = await world.connect(bob, undefined, { relay: 0 });
    expect(await onB.waitClosed()).toBe(CLOSE_CODES.REPLACED);
    await backOnA.waitJson((f) => f.type === 'queue_empty');
    expect(backOnA.delivered.at(-1)!.seq).toBe(4);
    await backOnA.ping();
    expect(backOnA.closeCode).toBeUndefined();
  });
});
