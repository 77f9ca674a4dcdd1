/**
 * Consumer groups through a real relay, on each storage driver: members share a topic's
 * messages, each processed once when acknowledged; a member killed with leases
 * outstanding has them go to the others; a message negatively acknowledged comes again
 * and, past the maximum deliveries, reaches the dead-letter topic (live, to its
 * subscribers) with where it came from; an unacknowledged lease expires to another
 * member; bad requests get their codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url } from '../../protocol/base64url.js';
import { request } from '../helpers/http.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import type { JsonFrame, RawClient } from '../mailbox/raw-client.js';
import { DRIVERS, World, driverAvailable, metric } from '../mailbox/world.js';
import { CLAIMS, consume, leased, messages, publish, settle, subscribe, waitMessages } from './helpers.js';

afterAll(async () => {
  await killAllRelays();
});

const text = (f: JsonFrame): string => new TextDecoder().decode(decodeBase64url(String(f.payload))!);

describe.each(DRIVERS)('consumer groups on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`consumer groups on ${driver.name}`);
    return;
  }

  let world: World;
  let token: string;
  let n = 0;

  beforeAll(async () => {
    world = await World.start(driver);
    token = (await world.user('admin', 1, CLAIMS)).token;
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
  });

  async function member(): Promise<RawClient> {
    return world.connect(await world.user('worker', 1, CLAIMS));
  }

  /** A topic, its dead-letter topic and a group on it. */
  async function setup(group: Record<string, unknown> = {}): Promise<{ topic: string; dlq: string }> {
    const topic = `feeds.g${++n}`;
    const dlq = `feeds.g${n}.dead-letter`;
    for (const name of [topic, dlq]) {
      const r = await request(world.relay.baseUrl, 'POST', '/v1/topics', { token, json: { name } });
      expect(r.status, r.text).toBe(201);
    }
    const g = await request(world.relay.baseUrl, 'POST', `/v1/topics/${topic}/groups`, { token, json: { name: 'workers', deadLetterTopic: dlq, ...group } });
    expect(g.status, g.text).toBe(201);
    expect(g.body).toMatchObject({ topic, name: 'workers', epoch: 1, committedOffset: 1, deadLetterTopic: dlq });
    return { topic, dlq };
  }

  /** Acknowledges every message leased to `c` as it comes, until `stop` says so. */
  function autoAck(c: RawClient, topic: string): { processed: number[]; done: Promise<void>; stop: () => void } {
    const processed: number[] = [];
    let stopped = false;
    const done = (async () => {
      let seen = 0;
      while (!stopped) {
        await c.until(() => leased(c, topic).length > seen || stopped || c.closeCode !== undefined, 'leases', 60_000).catch(() => undefined);
        if (c.closeCode !== undefined) return;
        const fresh = leased(c, topic).slice(seen);
        seen += fresh.length;
        if (fresh.length === 0) continue;
        const offsets = fresh.map((f) => Number(f.offset));
        const r = await settle(c, topic, 'workers', 'ack', offsets);
        expect(r.type, JSON.stringify(r)).toBe('settled');
        processed.push(...offsets);
      }
    })();
    return { processed, done, stop: () => (stopped = true) };
  }

  it('shares the messages among the members: each processed once', async () => {
    const { topic } = await setup();
    const pub = await member();
    const a = await member();
    const b = await member();
    expect(await consume(a, topic, 'workers', 4)).toMatchObject({ type: 'consuming', topic, group: 'workers' });
    expect(await consume(b, topic, 'workers', 4)).toMatchObject({ type: 'consuming' });
    const wa = autoAck(a, topic);
    const wb = autoAck(b, topic);
    for (let i = 0; i < 40; i++) await publish(pub, topic, `job-${i}`);
    await a.until(() => wa.processed.length + wb.processed.length >= 40, 'all jobs processed', 30_000);
    wa.stop();
    wb.stop();
    const all = [...wa.processed, ...wb.processed].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    // Both members worked (prefetch 4 each: neither can hold everything).
    expect(wa.processed.length).toBeGreaterThan(0);
    expect(wb.processed.length).toBeGreaterThan(0);
    expect(leased(a, topic).every((f) => f.deliveries === 1 && f.group === 'workers' && f.epoch === 1)).toBe(true);
    const info = await request(world.relay.baseUrl, 'GET', `/v1/topics/${topic}/groups/workers`, { token });
    expect(info.body).toMatchObject({ committedOffset: 41, nextOffset: 41, inFlight: 0, redeliveries: 0 });
  });

  it('gives a killed member\'s leased messages to another member', async () => {
    const { topic } = await setup();
    const pub = await member();
    const a = await member();
    await consume(a, topic, 'workers', 10);
    for (let i = 0; i < 5; i++) await publish(pub, topic, `job-${i}`);
    await a.until(() => leased(a, topic).length === 5, '5 leases');
    await settle(a, topic, 'workers', 'ack', [1, 2]);
    a.terminate();
    const b = await member();
    await consume(b, topic, 'workers', 10);
    await b.until(() => leased(b, topic).length >= 3, 'the killed member\'s 3 leases', 20_000);
    expect(leased(b, topic).map((f) => [f.offset, f.deliveries, text(f)])).toEqual([
      [3, 2, 'job-2'],
      [4, 2, 'job-3'],
      [5, 2, 'job-4'],
    ]);
  });

  it('gives a departed member\'s leased messages at once to a member already waiting', async () => {
    const { topic } = await setup({ visibilityMs: 60_000 });
    const pub = await member();
    const a = await member();
    await consume(a, topic, 'workers', 10);
    for (let i = 0; i < 3; i++) await publish(pub, topic, `job-${i}`);
    await a.until(() => leased(a, topic).length === 3, '3 leases');
    const b = await member();
    await consume(b, topic, 'workers', 10);
    a.terminate();
    // Long before A's leases would expire (60 s).
    await b.until(() => leased(b, topic).length === 3, 'the departed member\'s 3 leases', 5_000);
    expect(leased(b, topic).map((f) => [f.offset, f.deliveries])).toEqual([
      [1, 2],
      [2, 2],
      [3, 2],
    ]);
  });

  // Needs settles to queue behind a slow database: PostgreSQL only (PGlite answers each
  // transaction before the next frame is read, so nothing piles up there).
  const onServer = driver.needsPg ? it : undefined;
  onServer?.('holds settle requests awaiting their answer in the device\'s pending budget', async () => {
    const { topic } = await setup();
    const a = await member();
    await consume(a, topic, 'workers', 1);
    // Each is a transaction on the group's row: pipelined, they would queue without bound.
    for (let i = 0; i < 3000; i++) a.sendJson({ type: 'settle', id: 900_000 + i, topic, group: 'workers', action: 'ack', offsets: [7] });
    await a.until(() => a.json.filter((f) => f.type === 'error' && Number(f.id) >= 900_000).length === 3000, 'every answer', 30_000);
    const codes = new Set(a.json.filter((f) => f.type === 'error' && Number(f.id) >= 900_000).map((f) => f.code));
    expect([...codes].sort()).toEqual(['NOT_LEASED', 'RATE_LIMITED']);
  });

  it('redelivers a negatively acknowledged message, then dead-letters it to the subscribers of the dead-letter topic', async () => {
    const { topic, dlq } = await setup({ maxDeliveries: 2 });
    const pub = await member();
    const watcher = await member();
    await subscribe(watcher, dlq, 'earliest');
    const a = await member();
    await consume(a, topic, 'workers', 1);
    await publish(pub, topic, 'poison');
    await a.until(() => leased(a, topic).length === 1, 'first delivery');
    expect(await settle(a, topic, 'workers', 'nack', [1])).toMatchObject({ type: 'settled', action: 'nack' });
    await a.until(() => leased(a, topic).length === 2, 'second delivery');
    expect(leased(a, topic)[1]).toMatchObject({ offset: 1, deliveries: 2 });
    await settle(a, topic, 'workers', 'nack', [1]);
    const [dead] = await waitMessages(watcher, dlq, 1);
    expect(text(dead!)).toBe('poison');
    expect(dead!.deadLetter).toEqual({ topic, group: 'workers', epoch: 1, offset: 1, deliveries: 2, reason: 'max_deliveries', lastFailure: 'nack' });
    expect(await metric(world.relay, 'hermetic_group_dead_lettered_total')).toBeGreaterThanOrEqual(1);
    // And the group moved on.
    await publish(pub, topic, 'fine');
    await a.until(() => leased(a, topic).length === 3, 'the next message');
    expect(leased(a, topic)[2]).toMatchObject({ offset: 2, deliveries: 1 });
  });

  it('leases an unacknowledged message to another member once its visibility timeout passes; an extended one stays', async () => {
    const { topic } = await setup({ visibilityMs: 1000 });
    const pub = await member();
    const slow = await member();
    await consume(slow, topic, 'workers', 2);
    // Two leases (an extension covers the whole lease an offset came in).
    await publish(pub, topic, 'kept');
    await slow.until(() => leased(slow, topic).length === 1, 'the first lease');
    await publish(pub, topic, 'dropped');
    await slow.until(() => leased(slow, topic).length === 2, 'the second lease');
    const ext = await settle(slow, topic, 'workers', 'extend', [1], { byMs: 60_000 });
    expect(ext).toMatchObject({ type: 'settled', action: 'extend' });
    expect(ext.leaseUntil).toBeGreaterThan(Date.now() + 30_000);
    const other = await member();
    await consume(other, topic, 'workers', 5);
    await other.until(() => leased(other, topic).length >= 1, 'the expired lease', 20_000);
    expect(leased(other, topic).map((f) => [f.offset, f.deliveries])).toEqual([[2, 2]]);
    // The slow member's lease of 2 is over; 1 is still its own.
    expect(await settle(slow, topic, 'workers', 'ack', [2])).toMatchObject({ type: 'error', code: 'NOT_LEASED' });
    expect(await settle(slow, topic, 'workers', 'ack', [1])).toMatchObject({ type: 'settled' });
  });

  it('keeps each key in order when members come and go', async () => {
    const { topic } = await setup({ orderedByKey: true });
    const pub = await member();
    const keys = ['K0', 'K1', 'K2'];
    for (let i = 0; i < 30; i++) await publish(pub, topic, `m${i}`, { key: keys[i % 3] });
    /** Every acknowledgement, in the order they were answered: [key, offset]. */
    const log: Array<[string, number]> = [];
    const run = (c: RawClient, limit: number): Promise<void> =>
      (async () => {
        let seen = 0;
        while (log.length < 30 && c.closeCode === undefined) {
          await c.until(() => leased(c, topic).length > seen || log.length >= 30 || c.closeCode !== undefined, 'leases', 30_000).catch(() => undefined);
          const fresh = leased(c, topic).slice(seen);
          seen += fresh.length;
          for (const f of fresh) {
            if (seen > limit) return; // this member stops working (and is killed)
            const r = await settle(c, topic, 'workers', 'ack', [Number(f.offset)]);
            if (r.type === 'settled') log.push([new TextDecoder().decode(decodeBase64url(String(f.key))!), Number(f.offset)]);
          }
        }
      })();
    const a = await member();
    const b = await member();
    await consume(a, topic, 'workers', 2);
    await consume(b, topic, 'workers', 2);
    // A stops after a few messages, holding its leases, and is killed; C joins.
    await run(a, 4);
    const rb = run(b, 1000);
    a.terminate();
    const c = await member();
    await consume(c, topic, 'workers', 2);
    await Promise.all([rb, run(c, 1000)]);
    expect(log.map(([, o]) => o).sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    for (const k of keys) {
      const order = log.filter(([key]) => key === k).map(([, o]) => o);
      expect(order, k).toEqual([...order].sort((x, y) => x - y));
    }
  });

  it('ends subscriptions and memberships a renewed token no longer allows, keeping the others', async () => {
    const { topic } = await setup();
    const other = `feeds.other${n}`;
    expect((await request(world.relay.baseUrl, 'POST', '/v1/topics', { token, json: { name: other } })).status).toBe(201);
    const user = await world.user('renewer', 1, CLAIMS);
    const c = await world.connect(user);
    expect(await consume(c, topic, 'workers')).toMatchObject({ type: 'consuming' });
    expect(await subscribe(c, topic, 'latest')).toMatchObject({ type: 'subscribed' });
    expect(await subscribe(c, other, 'latest')).toMatchObject({ type: 'subscribed' });
    // The new token still grants `other`, no longer `topic`.
    const narrower = await world.issuer.mint(user.userId, { claims: { hermetic_topics: { subscribe: [other], consume: [other] } } });
    c.sendJson({ type: 'token', token: narrower });
    await c.waitJson((f) => f.type === 'token_ok');
    const ended = await c.until(() => c.json.filter((f) => f.type === 'subscription_ended').length >= 2, 'two ends').then(() => c.json.filter((f) => f.type === 'subscription_ended'));
    expect(ended.map((f) => [f.topic, f.group ?? '(subscription)', f.code, f.details?.reason]).sort()).toEqual([
      [topic, '(subscription)', 'FORBIDDEN', 'not_granted'],
      [topic, 'workers', 'FORBIDDEN', 'not_granted'],
    ]);
    const pub = await member();
    await publish(pub, other, 'still-here');
    await publish(pub, topic, 'not-for-you');
    await waitMessages(c, other, 1);
    await c.ping();
    expect(messages(c, topic)).toEqual([]);
    expect(leased(c, topic)).toEqual([]);
  });

  it('deletes a group: its members are told, and it can be created again', async () => {
    const { topic, dlq } = await setup();
    const del = () => request(world.relay.baseUrl, 'DELETE', `/v1/topics/${topic}/groups/workers`, { token });
    const create = () => request(world.relay.baseUrl, 'POST', `/v1/topics/${topic}/groups`, { token, json: { name: 'workers', deadLetterTopic: dlq } });
    // A member with room is told at once.
    const a = await member();
    await consume(a, topic, 'workers');
    const gone = await del();
    expect(gone.status, gone.text).toBe(200);
    expect(gone.body).toEqual({ topic, name: 'workers', deleted: true });
    expect(await a.waitJson((f) => f.type === 'subscription_ended')).toMatchObject({ topic, group: 'workers', code: 'GROUP_NOT_FOUND' });
    expect((await del()).body.error.code).toBe('GROUP_NOT_FOUND');
    const outsider = await world.issuer.mint('outsider', { claims: { hermetic_topics: { consume: ['other.>'] } } });
    expect((await request(world.relay.baseUrl, 'DELETE', `/v1/topics/${topic}/groups/workers`, { token: outsider })).status).toBe(403);
    // Created again; a member holding all its prefetch learns of a deletion when it settles.
    expect((await create()).status).toBe(201);
    const b = await member();
    await consume(b, topic, 'workers', 1);
    await publish(await member(), topic, 'held');
    await b.until(() => leased(b, topic).length === 1, 'the lease');
    expect((await del()).status).toBe(200);
    expect(await settle(b, topic, 'workers', 'ack', [Number(leased(b, topic)[0]!.offset)])).toMatchObject({ type: 'error', code: 'GROUP_NOT_FOUND' });
    expect(await b.waitJson((f) => f.type === 'subscription_ended')).toMatchObject({ topic, group: 'workers', code: 'GROUP_NOT_FOUND' });
  });

  it('refuses bad consumer requests with their codes', async () => {
    const { topic, dlq } = await setup();
    const a = await member();
    expect(await consume(a, topic, 'nobody')).toMatchObject({ type: 'error', code: 'GROUP_NOT_FOUND' });
    expect(await consume(a, 'feeds.none', 'workers')).toMatchObject({ type: 'error', code: 'GROUP_NOT_FOUND' });
    expect(await settle(a, topic, 'workers', 'ack', [1])).toMatchObject({ type: 'error', code: 'NOT_LEASED' });
    await consume(a, topic, 'workers');
    expect(await consume(a, topic, 'workers')).toMatchObject({ type: 'error', code: 'BAD_REQUEST' });
    expect(await settle(a, topic, 'workers', 'ack', [7])).toMatchObject({ type: 'error', code: 'NOT_LEASED', details: { offsets: [7] } });
    for (const bad of [
      { action: 'ack', offsets: [] },
      { action: 'ack', offsets: [0] },
      { action: 'ack', offsets: Array.from({ length: 257 }, (_, i) => i + 1) },
      { action: 'drop', offsets: [1] },
      { action: 'extend', offsets: [1] },
      { action: 'extend', offsets: [1], byMs: 10 },
      { action: 'nack', offsets: [1], delayMs: -1 },
    ]) {
      const id = 900 + n++;
      a.sendJson({ type: 'settle', id, topic, group: 'workers', ...bad });
      expect(await a.waitJson((f) => f.type === 'error' && f.id === id), JSON.stringify(bad)).toMatchObject({ code: 'BAD_REQUEST' });
    }
    const outsider = await world.connect(await world.user('outsider', 1, { hermetic_topics: { consume: ['other.>'] } }));
    expect(await consume(outsider, topic, 'workers')).toMatchObject({ type: 'error', code: 'FORBIDDEN', details: { action: 'consume' } });
    const noPublish = await world.issuer.mint('np', { claims: { hermetic_topics: { consume: ['feeds.>'] } } });
    const g = await request(world.relay.baseUrl, 'POST', `/v1/topics/${topic}/groups`, { token: noPublish, json: { name: 'other', deadLetterTopic: dlq } });
    expect(g.status).toBe(403);
    expect(g.body.error.details).toMatchObject({ action: 'publish', topic: dlq });
    const dup = await request(world.relay.baseUrl, 'POST', `/v1/topics/${topic}/groups`, { token, json: { name: 'workers', deadLetterTopic: dlq } });
    expect(dup.body.error.code).toBe('GROUP_EXISTS');
    expect((await request(world.relay.baseUrl, 'GET', `/v1/topics/${topic}/groups/none`, { token })).body.error.code).toBe('GROUP_NOT_FOUND');
    expect(messages(a, topic)).toEqual([]);
    await world.expectRelaysUp();
  });
});
