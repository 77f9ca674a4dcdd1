/**
 * Subscriptions started together on one connection, through a real relay: a second
 * SUBSCRIBE to a topic sent before the first is answered is refused like one sent after
 * (no second subscription, no message twice), an UNSUBSCRIBE sent before the SUBSCRIBE
 * was answered ends it, the per-connection bound holds however many arrive at once, and
 * a subscriber catching up on many topics at once is paused, not disconnected, when its
 * socket stops draining.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_SUBSCRIPTIONS_PER_CONNECTION, MAX_TOPIC_MESSAGE_BYTES } from '../../protocol/limits.js';
import { request } from '../helpers/http.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import type { RawClient } from '../mailbox/raw-client.js';
import { CLAIMS, messages, publish, waitMessages } from './helpers.js';
import { DRIVERS, type TestUser, World, driverAvailable } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

describe.each(DRIVERS)('subscriptions started together on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`subscriptions started together on ${driver.name}`);
    return;
  }

  let world: World;
  let alice: TestUser;
  let n = 0;

  beforeAll(async () => {
    world = await World.start(driver);
    alice = await world.user('alice', 1, CLAIMS);
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
  });

  async function topic(): Promise<string> {
    const name = `feeds.r${++n}`;
    const res = await request(world.relay.baseUrl, 'POST', '/v1/topics', { token: alice.token, json: { name } });
    expect(res.status, res.text).toBe(201);
    return name;
  }

  /** `count` fresh topics, each with `backlog` messages published by `a`. */
  async function topicsWith(a: RawClient, count: number, backlog: number): Promise<string[]> {
    const names: string[] = [];
    for (let i = 0; i < count; i++) {
      const t = await topic();
      names.push(t);
      for (let k = 0; k < backlog; k++) await publish(a, t, `m${k}`);
    }
    return names;
  }

  it('refuses a second SUBSCRIBE to a topic sent before the first was answered', async () => {
    const a = await world.connect(alice);
    const s = await world.connect(await world.user('sub', 1, CLAIMS));
    const names = await topicsWith(a, 8, 3);
    // Two SUBSCRIBEs per topic, all sent at once.
    names.forEach((t, i) => {
      s.sendJson({ type: 'subscribe', id: 10 + 2 * i, topic: t, from: 'earliest' });
      s.sendJson({ type: 'subscribe', id: 11 + 2 * i, topic: t, from: 'earliest' });
    });
    const answered = (f: { type?: unknown; id?: unknown }): boolean => (f.type === 'subscribed' || f.type === 'error') && Number(f.id) >= 10 && Number(f.id) < 10 + 2 * names.length;
    await s.until(() => s.json.filter(answered).length === 2 * names.length, 'every answer');
    for (const [i, t] of names.entries()) {
      const answers = s.json.filter((f) => f.id === 10 + 2 * i || f.id === 11 + 2 * i).map((f) => (f.type === 'error' ? String(f.code) : String(f.type)));
      expect(answers.sort(), t).toEqual(['BAD_REQUEST', 'subscribed']);
    }
    for (const t of names) await publish(a, t, 'm3');
    for (const t of names) await waitMessages(s, t, 4);
    await s.ping();
    for (const t of names) expect(messages(s, t).map((f) => f.offset), t).toEqual([1, 2, 3, 4]);
    // Unsubscribing ends it: nothing more arrives.
    s.sendJson({ type: 'unsubscribe', id: 3, topic: names[0] });
    await s.waitJson((f) => f.type === 'unsubscribed' && f.id === 3);
    await publish(a, names[0]!, 'm4');
    await s.ping();
    expect(messages(s, names[0]!)).toHaveLength(4);
    await world.expectRelaysUp();
  });

  it('ends a subscription whose UNSUBSCRIBE was sent before its SUBSCRIBE was answered', async () => {
    const a = await world.connect(alice);
    const s = await world.connect(await world.user('undecided', 1, CLAIMS));
    const names = await topicsWith(a, 8, 1);
    names.forEach((t, i) => {
      s.sendJson({ type: 'subscribe', id: 300 + 2 * i, topic: t, from: 'earliest' });
      s.sendJson({ type: 'unsubscribe', id: 301 + 2 * i, topic: t });
    });
    await s.until(() => s.json.filter((f) => f.type === 'unsubscribed' && Number(f.id) >= 300).length === names.length, 'every unsubscribe answered');
    for (const t of names) await publish(a, t, 'm1');
    await s.ping();
    for (const [i, t] of names.entries()) {
      const at = (id: number): number => s.json.findIndex((f) => f.id === id);
      expect(at(300 + 2 * i), t).toBeLessThan(at(301 + 2 * i));
      // Nothing of the topic after its UNSUBSCRIBE was answered.
      expect(s.json.slice(at(301 + 2 * i)).filter((f) => f.type === 'topic_message' && f.topic === t), t).toEqual([]);
    }
  });

  it(`keeps to ${MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection when they arrive at once`, async () => {
    const names: string[] = [];
    for (let i = 0; i < MAX_SUBSCRIPTIONS_PER_CONNECTION + 4; i++) names.push(await topic());
    const s = await world.connect(await world.user('many', 1, CLAIMS));
    names.forEach((t, i) => s.sendJson({ type: 'subscribe', id: 100 + i, topic: t, from: 'latest' }));
    await s.until(() => s.json.filter((f) => (f.type === 'subscribed' || f.type === 'error') && Number(f.id) >= 100).length === names.length, 'every answer');
    expect(s.json.filter((f) => f.type === 'subscribed')).toHaveLength(MAX_SUBSCRIPTIONS_PER_CONNECTION);
    expect(s.json.filter((f) => f.type === 'error' && Number(f.id) >= 100).map((f) => f.code)).toEqual(['BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST']);
  }, 60_000);

  it('pauses, not disconnects, a subscriber catching up on many topics whose socket stops draining', async () => {
    const a = await world.connect(alice);
    const names: string[] = [];
    const perTopic = 8;
    for (let i = 0; i < 8; i++) {
      const t = await topic();
      names.push(t);
      await Promise.all(
        Array.from({ length: perTopic }, (_, k) => {
          const p = new Uint8Array(MAX_TOPIC_MESSAGE_BYTES);
          crypto.randomFillSync(p);
          return publish(a, t, `big-${k}`, { payload: p });
        }),
      );
    }
    const s = await world.connect(await world.user('slow', 1, CLAIMS));
    s.pause();
    names.forEach((t, i) => s.sendJson({ type: 'subscribe', id: 200 + i, topic: t, from: 'earliest' }));
    await new Promise((r) => setTimeout(r, 2000));
    s.resume();
    for (const t of names) await waitMessages(s, t, perTopic, 60_000);
    expect(s.closeCode).toBeUndefined();
    for (const t of names) expect(messages(s, t).map((f) => f.offset)).toEqual(Array.from({ length: perTopic }, (_, i) => i + 1));
    await world.expectRelaysUp();
  }, 120_000);
});
