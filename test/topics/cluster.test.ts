/**
 * Topics across two relay processes sharing one PostgreSQL database, once with notices
 * over PostgreSQL NOTIFY and once over NATS: publishers on both relays, subscribers on
 * both, every subscriber gets every message once and in offset order, live; a reset on
 * one relay ends the subscriptions on the other.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BUSES } from '../helpers/buses.js';
import { request } from '../helpers/http.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, World, metric } from '../mailbox/world.js';
import { CLAIMS, consume, leased, messages, payloads, publish, settle, subscribe, waitMessages } from './helpers.js';

afterAll(async () => {
  await killAllRelays();
});

for (const bus of BUSES) describe(`topics on two relays, notices over ${bus.name}`, () => {
  if (!bus.available) {
    bus.missing(`topics on two relays, notices over ${bus.name}`);
    return;
  }

  let world: World;
  const fleet = bus.fleet();
  let n = 0;

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

  async function topic(): Promise<{ name: string; owner: Awaited<ReturnType<World['user']>> }> {
    const owner = await world.user('owner', 1, CLAIMS);
    const name = `feeds.c${++n}`;
    const res = await request(world.relay.baseUrl, 'POST', '/v1/topics', { token: owner.token, json: { name } });
    expect(res.status, res.text).toBe(201);
    return { name, owner };
  }

  it('gives subscribers on both relays every message of publishers on both, in order', async () => {
    const { name } = await topic();
    const pubA = await world.connect(await world.user('pa', 1, CLAIMS), undefined, { relay: 0 });
    const pubB = await world.connect(await world.user('pb', 1, CLAIMS), undefined, { relay: 1 });
    for (let i = 0; i < 10; i++) await publish(pubA, name, `early-${i}`);
    const subs = [
      await world.connect(await world.user('sa', 1, CLAIMS), undefined, { relay: 0 }),
      await world.connect(await world.user('sb', 1, CLAIMS), undefined, { relay: 1 }),
      await world.connect(await world.user('sc', 1, CLAIMS), undefined, { relay: 1 }),
    ];
    expect(await subscribe(subs[0]!, name, 'earliest')).toMatchObject({ type: 'subscribed', offset: 1 });
    expect(await subscribe(subs[1]!, name, 'earliest')).toMatchObject({ type: 'subscribed', offset: 1 });
    expect(await subscribe(subs[2]!, name, 'latest')).toMatchObject({ type: 'subscribed', offset: 11 });
    const RECEIVED = `hermetic_notifier_received_total{notifier="${bus.kind}",kind="topic"}`;
    const heardBefore = (await metric(world.relays[1]!, RECEIVED)) ?? 0;
    await Promise.all([
      (async () => {
        for (let i = 0; i < 30; i++) await publish(pubA, name, `a-${i}`);
      })(),
      (async () => {
        for (let i = 0; i < 30; i++) await publish(pubB, name, `b-${i}`);
      })(),
    ]);
    for (const [i, s] of subs.entries()) {
      const want = i === 2 ? 60 : 70;
      const got = await waitMessages(s, name, want);
      const first = i === 2 ? 11 : 1;
      expect(got.map((f) => f.offset), `subscriber ${i}`).toEqual(Array.from({ length: want }, (_, k) => first + k));
      const texts = payloads(s, name);
      expect(texts.filter((x) => x.startsWith('a-'))).toEqual(Array.from({ length: 30 }, (_, k) => `a-${k}`));
      expect(texts.filter((x) => x.startsWith('b-'))).toEqual(Array.from({ length: 30 }, (_, k) => `b-${k}`));
    }
    // Relay B heard relay A's commits on the bus.
    expect((await metric(world.relays[1]!, RECEIVED)) ?? 0).toBeGreaterThan(heardBefore);
    for (const s of subs) await s.ping();
    expect(subs.map((s) => messages(s, name).length)).toEqual([70, 70, 60]);
  });

  it('ends the subscriptions on the other relay when a topic is reset', async () => {
    const { name, owner } = await topic();
    const pub = await world.connect(await world.user('p', 1, CLAIMS), undefined, { relay: 0 });
    const sub = await world.connect(await world.user('s', 1, CLAIMS), undefined, { relay: 1 });
    await publish(pub, name, 'one');
    await subscribe(sub, name, 'earliest');
    await waitMessages(sub, name, 1);
    const reset = await request(world.relays[0]!.baseUrl, 'POST', `/v1/topics/${name}/reset`, { token: owner.token });
    expect(reset.status, reset.text).toBe(200);
    const ended = await sub.waitJson((f) => f.type === 'subscription_ended' && f.topic === name);
    expect(ended).toMatchObject({ code: 'TOPIC_EPOCH_CHANGED', details: { epoch: 2 } });
  });

  it('shares a consumer group between members on both relays, woken by commits on either', async () => {
    const { name, owner } = await topic();
    const dlq = `${name}.dead-letter`;
    await request(world.relay.baseUrl, 'POST', '/v1/topics', { token: owner.token, json: { name: dlq } });
    const g = await request(world.relays[1]!.baseUrl, 'POST', `/v1/topics/${name}/groups`, { token: owner.token, json: { name: 'workers', deadLetterTopic: dlq } });
    expect(g.status, g.text).toBe(201);
    const members = [
      await world.connect(await world.user('ma', 1, CLAIMS), undefined, { relay: 0 }),
      await world.connect(await world.user('mb', 1, CLAIMS), undefined, { relay: 1 }),
    ];
    for (const m of members) expect(await consume(m, name, 'workers', 3)).toMatchObject({ type: 'consuming' });
    const acked: number[][] = [[], []];
    let stop = false;
    const workers = members.map(async (m, i) => {
      let seen = 0;
      while (!stop) {
        await m.until(() => leased(m, name).length > seen || stop, 'leases', 30_000).catch(() => undefined);
        const fresh = leased(m, name).slice(seen);
        seen += fresh.length;
        if (fresh.length === 0) continue;
        const offsets = fresh.map((f) => Number(f.offset));
        expect(await settle(m, name, 'workers', 'ack', offsets)).toMatchObject({ type: 'settled' });
        acked[i]!.push(...offsets);
      }
    });
    // Published through relay A only: members on B are woken by the bus.
    const pub = await world.connect(await world.user('p', 1, CLAIMS), undefined, { relay: 0 });
    for (let i = 0; i < 30; i++) await publish(pub, name, `job-${i}`);
    await members[0]!.until(() => acked[0]!.length + acked[1]!.length >= 30, 'every job acknowledged', 30_000);
    stop = true;
    await Promise.all(workers);
    expect([...acked[0]!, ...acked[1]!].sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(acked[1]!.length, 'the member on relay B worked').toBeGreaterThan(0);
  });
});
