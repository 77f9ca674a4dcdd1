/**
 * Topics on the WebSocket through a real relay, on each storage driver: PUBLISH is
 * answered after commit with its offset (idempotent per publisher, conflicts refused);
 * SUBSCRIBE from each kind of start delivers the backlog and then live messages in
 * offset order, without gaps or repeats, under concurrent publishers; a subscriber that
 * stops reading is paused and resumes from the database; a reset or a retired offset
 * ends a subscription with the reason; access comes from the token's claim.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { MAX_TOPIC_MESSAGE_BYTES } from '../../protocol/limits.js';
import { request } from '../helpers/http.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import type { JsonFrame, RawClient } from '../mailbox/raw-client.js';
import { CLAIMS, messages, payloads, publish, subscribe, waitMessages } from './helpers.js';
import { DRIVERS, type TestUser, World, driverAvailable, metric } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});


describe.each(DRIVERS)('topics on the WebSocket on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`topics on the WebSocket on ${driver.name}`);
    return;
  }

  let world: World;
  let alice: TestUser;
  let bob: TestUser;
  let n = 0;

  beforeAll(async () => {
    world = await World.start(driver);
    alice = await world.user('alice', 1, CLAIMS);
    bob = await world.user('bob', 1, CLAIMS);
  }, 120_000);

  afterAll(async () => {
      await world?.stop();
  });

  /** A connection of a fresh subscriber (one connection per device: a second connection
   * of the same device would replace the first). */
  async function subscriber(): Promise<RawClient> {
    return world.connect(await world.user('sub', 1, CLAIMS));
  }

  async function topic(settings: Record<string, unknown> = {}): Promise<string> {
    const name = `feeds.t${++n}`;
    const res = await request(world.relay.baseUrl, 'POST', '/v1/topics', { token: alice.token, json: { name, ...settings } });
    expect(res.status, res.text).toBe(201);
    return name;
  }

  it('answers a publish after commit with its offset; a repeat gets the same offset, other content a conflict', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    const first = await publish(a, t, 'one', { key: 'k1' });
    expect(first).toMatchObject({ type: 'published', topic: t, epoch: 1, offset: 1, duplicate: false });
    expect(await publish(a, t, 'two')).toMatchObject({ offset: 2, duplicate: false });
    expect(await publish(a, t, 'one', { key: 'k1' })).toMatchObject({ offset: 1, duplicate: true, publishedAt: first.publishedAt });
    const conflict = await publish(a, t, 'other', { id: 'one' });
    expect(conflict).toMatchObject({ type: 'error', code: 'PUBLISH_ID_CONFLICT', details: { offset: 1, epoch: 1 } });
    // Another publisher's ids are its own.
    const b = await world.connect(bob);
    expect(await publish(b, t, 'one')).toMatchObject({ offset: 3, duplicate: false });
    const page = await request(world.relay.baseUrl, 'GET', `/v1/topics/${t}/messages?epoch=1&from=1`, { token: alice.token });
    expect(page.body.messages.map((m: JsonFrame) => [m.offset, m.publisher.userId, m.key])).toEqual([
      [1, alice.userId, encodeBase64url(new TextEncoder().encode('k1'))],
      [2, alice.userId, undefined],
      [3, bob.userId, undefined],
    ]);
  });

  it('refuses what cannot be published with its code and the request id, storing nothing', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    expect(await publish(a, 'feeds.missing', 'x')).toMatchObject({ type: 'error', code: 'TOPIC_NOT_FOUND' });
    expect(await publish(a, 'other.topic', 'x')).toMatchObject({ type: 'error', code: 'FORBIDDEN', details: { action: 'publish', reason: 'not_granted' } });
    const big = await publish(a, t, 'big', { payload: new Uint8Array(MAX_TOPIC_MESSAGE_BYTES + 1) });
    expect(big).toMatchObject({ type: 'error', code: 'MESSAGE_TOO_LARGE' });
    for (const bad of [
      { type: 'publish', id: 1, topic: t, publishId: '', payload: 'eA' },
      { type: 'publish', id: 2, topic: t, publishId: 'eA', payload: '' },
      { type: 'publish', id: 3, topic: 'Bad', publishId: 'eA', payload: 'eA' },
      { type: 'publish', id: 4, topic: t, publishId: encodeBase64url(new Uint8Array(65)), payload: 'eA' },
      { type: 'subscribe', id: 5, topic: t, from: 'middle' },
      { type: 'subscribe', id: 6, topic: t, from: { epoch: 0, offset: 1 } },
    ]) {
      a.sendJson(bad);
      expect(await a.waitJson((f) => f.type === 'error' && f.id === bad.id)).toMatchObject({ code: 'BAD_REQUEST' });
    }
    const plain = await world.user('plain');
    const p = await world.connect(plain);
    expect(await publish(p, t, 'x')).toMatchObject({ type: 'error', code: 'FORBIDDEN', details: { reason: 'no_claim' } });
    expect(await subscribe(p, t, 'earliest')).toMatchObject({ type: 'error', code: 'FORBIDDEN', details: { action: 'subscribe' } });
    expect(await metric(world.relay, 'hermetic_topic_denied_total{action="publish",reason="no_claim"}')).toBeGreaterThanOrEqual(1);
    const info = await request(world.relay.baseUrl, 'GET', `/v1/topics/${t}`, { token: alice.token });
    expect(info.body.nextOffset).toBe(1);
    await world.expectRelaysUp();
  });

  it('delivers the backlog and then live messages in offset order, under concurrent publishers', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    const b = await world.connect(bob);
    for (let i = 0; i < 20; i++) await publish(a, t, `early-${i}`);
    const s = await subscriber();
    // Publishers keep going while the subscriber reads its backlog.
    const publishing = Promise.all([
      (async () => {
        for (let i = 0; i < 40; i++) await publish(a, t, `a-${i}`);
      })(),
      (async () => {
        for (let i = 0; i < 40; i++) await publish(b, t, `b-${i}`);
      })(),
    ]);
    expect(await subscribe(s, t, 'earliest')).toMatchObject({ type: 'subscribed', topic: t, epoch: 1, offset: 1 });
    await publishing;
    const got = await waitMessages(s, t, 100);
    expect(got.map((f) => f.offset)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    const texts = payloads(s, t);
    expect(texts.slice(0, 20)).toEqual(Array.from({ length: 20 }, (_, i) => `early-${i}`));
    expect(texts.filter((x) => x.startsWith('a-'))).toEqual(Array.from({ length: 40 }, (_, i) => `a-${i}`));
    expect(texts.filter((x) => x.startsWith('b-'))).toEqual(Array.from({ length: 40 }, (_, i) => `b-${i}`));
    expect(got[20]!.publisher).toEqual({ userId: expect.any(String), deviceId: 'd1' });
    // And live, once caught up.
    await publish(a, t, 'late');
    await waitMessages(s, t, 101);
    await s.ping();
    expect(messages(s, t).map((f) => f.offset)).toEqual(Array.from({ length: 101 }, (_, i) => i + 1));
  });

  it('starts where asked: latest, an offset, a time', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    await publish(a, t, 'm1');
    await new Promise((r) => setTimeout(r, 20));
    const afterFirst = Date.now();
    await new Promise((r) => setTimeout(r, 20));
    await publish(a, t, 'm2');
    await publish(a, t, 'm3');
    const latest = await subscriber();
    expect(await subscribe(latest, t, 'latest')).toMatchObject({ offset: 4 });
    const fromOffset = await subscriber();
    expect(await subscribe(fromOffset, t, { epoch: 1, offset: 3 })).toMatchObject({ offset: 3 });
    const fromTime = await subscriber();
    expect(await subscribe(fromTime, t, { time: afterFirst })).toMatchObject({ offset: 2 });
    await publish(a, t, 'm4');
    await waitMessages(latest, t, 1);
    await waitMessages(fromOffset, t, 2);
    await waitMessages(fromTime, t, 3);
    expect(payloads(latest, t)).toEqual(['m4']);
    expect(payloads(fromOffset, t)).toEqual(['m3', 'm4']);
    expect(payloads(fromTime, t)).toEqual(['m2', 'm3', 'm4']);
    expect(await subscribe(latest, t, 'earliest')).toMatchObject({ type: 'error', code: 'BAD_REQUEST' });
    expect(await subscribe(fromOffset, 'feeds.none', 'earliest')).toMatchObject({ type: 'error', code: 'TOPIC_NOT_FOUND' });
    expect(await subscribe(fromOffset, t.replace('t', 'x'), { epoch: 1, offset: 9 })).toMatchObject({ type: 'error', code: 'TOPIC_NOT_FOUND' });
    const beyond = await subscriber();
    expect(await subscribe(beyond, t, { epoch: 1, offset: 9 })).toMatchObject({ type: 'error', code: 'OFFSET_OUT_OF_RANGE', details: { next: 5 } });
    expect(await subscribe(beyond, t, { epoch: 2, offset: 1 })).toMatchObject({ type: 'error', code: 'TOPIC_EPOCH_CHANGED', details: { epoch: 1 } });
    // Unsubscribed: nothing more arrives.
    latest.sendJson({ type: 'unsubscribe', id: 7, topic: t });
    await latest.waitJson((f) => f.type === 'unsubscribed' && f.id === 7);
    await publish(a, t, 'm5');
    await waitMessages(fromOffset, t, 3);
    await latest.ping();
    expect(payloads(latest, t)).toEqual(['m4']);
  });

  it('pauses a subscriber that stops reading and resumes it from the database: nothing lost, nothing repeated', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    const s = await world.connect(bob);
    await subscribe(s, t, 'latest');
    s.pause();
    const size = 64 * 1024;
    const count = 96;
    for (let i = 0; i < count; i += 8) {
      await Promise.all(
        Array.from({ length: 8 }, (_, k) => {
          const p = new Uint8Array(size);
          crypto.randomFillSync(p);
          p.set(new TextEncoder().encode(`big-${i + k}|`));
          return publish(a, t, `big-${i + k}`, { payload: p });
        }),
      );
    }
    s.resume();
    const got = await waitMessages(s, t, count, 60_000);
    expect(await metric(world.relay, 'hermetic_topic_subscriber_pauses_total')).toBeGreaterThanOrEqual(1);
    expect(s.closeCode).toBeUndefined();
    expect(got.map((f) => f.offset)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    // Each message's own bytes, in its place.
    got.forEach((f, i) => expect(new TextDecoder().decode(decodeBase64url(String(f.payload))!.subarray(0, `big-${i}|`.length))).toBe(`big-${i}|`));
    await world.expectRelaysUp();
  });

  it('ends a live subscription when the topic is reset, saying so', async () => {
    const t = await topic();
    const a = await world.connect(alice);
    const s = await world.connect(bob);
    await publish(a, t, 'before');
    await subscribe(s, t, 'earliest');
    await waitMessages(s, t, 1);
    const reset = await request(world.relay.baseUrl, 'POST', `/v1/topics/${t}/reset`, { token: alice.token });
    expect(reset.status, reset.text).toBe(200);
    const ended = await s.waitJson((f) => f.type === 'subscription_ended' && f.topic === t);
    expect(ended).toMatchObject({ code: 'TOPIC_EPOCH_CHANGED', details: { epoch: 2 } });
    expect(payloads(s, t)).toEqual(['before']);
    // Subscribing again in the new epoch works.
    expect(await subscribe(s, t, 'earliest')).toMatchObject({ type: 'subscribed', epoch: 2, offset: 1 });
    await publish(a, t, 'after');
    await waitMessages(s, t, 2);
    expect(payloads(s, t)).toEqual(['before', 'after']);
  });

  it('retires old messages on its own, and tells a subscriber asking for them where to go on', async () => {
    const t = await topic({ retentionMs: 1000 });
    const a = await world.connect(alice);
    await publish(a, t, 'old-1');
    await publish(a, t, 'old-2');
    // The relay's retirement pass (every 5 s) drops the slices once older than 1 s.
    const deadline = Date.now() + 20_000;
    let info: JsonFrame = {} as JsonFrame;
    while (Date.now() < deadline) {
      info = (await request(world.relay.baseUrl, 'GET', `/v1/topics/${t}`, { token: alice.token })).body;
      if (info.earliestOffset === 3) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(info).toMatchObject({ earliestOffset: 3, nextOffset: 3 });
    const s = await subscriber();
    expect(await subscribe(s, t, { epoch: 1, offset: 1 })).toMatchObject({ type: 'error', code: 'OFFSET_RETIRED', details: { epoch: 1, earliest: 3 } });
    const open = (await metric(world.relay, 'hermetic_topic_subscriptions')) ?? 0;
    expect(await subscribe(s, t, 'earliest')).toMatchObject({ type: 'subscribed', offset: 3 });
    expect(await metric(world.relay, 'hermetic_topic_subscriptions')).toBe(open + 1);
    expect(await metric(world.relay, 'hermetic_topic_slices_retired_total{kind="dropped"}')).toBeGreaterThanOrEqual(1);
  });
});
