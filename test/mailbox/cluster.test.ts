/**
 * Two relay processes sharing one PostgreSQL database, once with notices over
 * PostgreSQL NOTIFY and once over NATS: an envelope committed on relay A reaches a
 * device connected to relay B live, woken by a notice rather than by the periodic
 * catch-up scan; a device has one live connection across the fleet (connecting
 * on B replaces the connection on A with 4002, and the other way round); a device
 * revoked through B is closed on A at once (4003) by the revoked notice; a burst of
 * "all" notices (commits too large for a tails notice) costs another relay at most two
 * catch-up scans, which still deliver; a malformed or oversized notice is ignored and
 * counted.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/errors.js';
import pg from 'pg';
import { NOTICE_MAX_BYTES, NOTICE_MAX_TAILS } from '../../server/fleet/notice.js';
import { CATCHUP_INTERVAL_MS } from '../../server/limits.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { BUSES } from '../helpers/buses.js';
import type { TestDevice } from '../helpers/device.js';
import { fetchChain } from '../helpers/flows.js';
import { request } from '../helpers/http.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, World, commitUnannounced, firstDevice, metric, payload, sendMany, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const DELIVERED = 'hermetic_frames_out_total{type="deliver"}';

for (const bus of BUSES) describe(`two relays sharing PostgreSQL, notices over ${bus.name}`, () => {
  if (!bus.available) {
    bus.missing(`two relays sharing PostgreSQL, notices over ${bus.name}`);
    return;
  }

  let world: World;
  const fleet = bus.fleet();

  beforeAll(async () => {
    world = await World.start(POSTGRES, { relays: 2, env: fleet.env });
  });

  afterAll(async () => {
    await world?.stop();
  });

  afterEach(async () => {
    world.closeClients();
    await world.expectRelaysUp();
  });

  it('delivers live across relays (sender on A, recipient on B), woken by a notice', async () => {
    const [a, b] = world.relays as [typeof world.relay, typeof world.relay];
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 0 });
    const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    // Tails notices: published by A itself on NATS (after each commit), by the store
    // function on NOTIFY (not counted as the relay's); B hears each one.
    const PUBLISHED = `hermetic_notifier_published_total{notifier="${bus.kind}",kind="tails"}`;
    const RECEIVED = `hermetic_notifier_received_total{notifier="${bus.kind}",kind="tails"}`;
    const before = {
      a: (await metric(a, DELIVERED)) ?? 0,
      b: (await metric(b, DELIVERED)) ?? 0,
      published: (await metric(a, PUBLISHED)) ?? 0,
      received: (await metric(b, RECEIVED)) ?? 0,
    };

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
    // average; a notice takes milliseconds. The median is a generous, robust witness.
    latencies.sort((x, y) => x - y);
    const median = latencies[Math.floor(rounds / 2)]!;
    expect(median, `latencies ${latencies.map((l) => l.toFixed(0)).join(', ')} ms`).toBeLessThan(CATCHUP_INTERVAL_MS / 5);

    // B wrote the DELIVER frames; A wrote none.
    await reader.ping();
    expect(((await metric(b, DELIVERED)) ?? 0) - before.b).toBe(rounds);
    expect(((await metric(a, DELIVERED)) ?? 0) - before.a).toBe(0);
    expect(((await metric(a, PUBLISHED)) ?? 0) - before.published).toBe(bus.kind === 'nats' ? rounds : 0);
    expect(((await metric(b, RECEIVED)) ?? 0) - before.received).toBeGreaterThanOrEqual(rounds);
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
    // burst of BURST such commits' worth, delivered together on commit (NOTIFY) or just
    // after it (NATS).
    const BURST = 50;
    // Distinct payloads: PostgreSQL folds identical notifications of one transaction.
    const burst = Array.from({ length: BURST }, (_, i) => JSON.stringify({ node: 'another-relay', kind: 'all', n: i }));
    await commitUnannounced(world, bob, 'caught up', async (sql) => {
      if (fleet.transactional) await fleet.publish(burst, sql);
    });
    if (!fleet.transactional) await fleet.publish(burst);

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

  it('a malformed or oversized notice on the bus is ignored and counted; the relays stay up and deliver', async () => {
    const MALFORMED = `hermetic_notifier_malformed_total{notifier="${bus.kind}"}`;
    const before = await Promise.all(world.relays.map(async (r) => (await metric(r, MALFORMED)) ?? 0));
    const bad = [
      'not json',
      JSON.stringify({ node: 'x', kind: 'tails', tails: Array.from({ length: NOTICE_MAX_TAILS + 1 }, () => 0) }),
      JSON.stringify({ node: 'x', kind: 'connected', userId: 'u', deviceId: 'd', at: -1 }),
      JSON.stringify({ node: 'x', kind: 'revoked', userId: 'u', deviceId: '../d' }),
    ];
    // PostgreSQL itself refuses a NOTIFY payload of 8000 bytes; NATS carries one.
    if (bus.kind === 'nats') bad.push(JSON.stringify({ node: 'x', kind: 'all', pad: 'x'.repeat(2 * NOTICE_MAX_BYTES) }));
    const sql = new pg.Client({ connectionString: world.db!.url });
    await sql.connect();
    try {
      await fleet.publish(bad, sql);
    } finally {
      await sql.end();
    }
    for (const [i, r] of world.relays.entries()) {
      for (let t = 0; t < 200 && ((await metric(r, MALFORMED)) ?? 0) - before[i]! < bad.length; t++) await new Promise((res) => setTimeout(res, 25));
      expect(((await metric(r, MALFORMED)) ?? 0) - before[i]!).toBe(bad.length);
    }
    await world.expectRelaysUp();
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 0 });
    const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    await sendMany(sender, bob, 3, 'still');
    await reader.waitDelivered(3);
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(['still 0', 'still 1', 'still 2']);
  });

  it('a device revoked through B has its connection on A closed at once (4003), by the revoked notice', async () => {
    const [a, b] = world.relays as [typeof world.relay, typeof world.relay];
    const victor = await world.user('victor', 2);
    const [phone, laptop] = victor.devices as [TestDevice, TestDevice];
    const onA = await world.connect(victor, laptop, { relay: 0 });
    await onA.waitJson((f) => f.type === 'queue_empty');
    const REVOKED = `hermetic_notifier_received_total{notifier="${bus.kind}",kind="revoked"}`;
    const heard = (await metric(a, REVOKED)) ?? 0;
    const chain = await fetchChain(b.baseUrl, victor.token, victor.userId);
    const res = await request(b.baseUrl, 'POST', '/v1/devices', { token: victor.token, json: { entry: encodeBase64url(phone.revokeEntry(chain, laptop.deviceId)) } });
    expect(res.status, res.text).toBe(201);
    expect(await onA.waitClosed()).toBe(CLOSE_CODES.DEVICE_REVOKED);
    // Closed by the notice A heard, not only by its catch-up scan.
    expect((await metric(a, REVOKED)) ?? 0).toBeGreaterThan(heard);
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
