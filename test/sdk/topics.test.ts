/**
 * Topics and consumer groups through the SDK and a real relay: what a publisher device
 * publishes is end-to-end encrypted for its readers (the relay stores no plaintext, a
 * non-reader reads nothing), any reader reads it as often as it likes (replay from the
 * start), metadata the relay alters is caught, publishing is idempotent per id, and a
 * consumer group acknowledges, retries with backoff and dead-letters through `run`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HermeticClient, MemoryStore, type PublishResult, SdkError, type TopicMessage, limits } from '../../client-sdk/node.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { request } from '../helpers/http.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, sdkError, startWorld, tappedTransport, waitFor } from './helpers.js';

const CLAIMS = { hermetic_topics: { create: ['feeds.>'], publish: ['feeds.>'], subscribe: ['feeds.>'], consume: ['feeds.>'] } };
const MARKER = 'PLAINTEXT-MARKER-7f3a';

let world: SdkWorld;
const clients: HermeticClient[] = [];

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await killAllRelays();
});

async function user(userId: string, extra: Parameters<typeof newClient>[2] = {}): Promise<HermeticClient> {
  const c = await newClient(world, userId, { token: () => world.issuer.mint(userId, { claims: CLAIMS }), ...extra });
  clients.push(c);
  await waitFor(`${userId} online`, () => (c.state.state === 'online' ? true : undefined));
  return c;
}

/** Collects what a subscription's handler gets, and what it skips. */
function collector() {
  const got: TopicMessage[] = [];
  const skipped: SdkError[] = [];
  return {
    got,
    skipped,
    handler: (m: TopicMessage) => void got.push(m),
    onSkipped: (e: SdkError) => void skipped.push(e),
    waitGot: (n: number) => waitFor(`${n} topic messages (have ${got.length})`, () => (got.length >= n ? got : undefined)),
    waitSkipped: (n: number) => waitFor(`${n} skipped (have ${skipped.length})`, () => (skipped.length >= n ? skipped : undefined)),
  };
}

describe('SDK topics', () => {
  it('publishes end-to-end encrypted: readers read (again and again), the relay and non-readers do not', async () => {
    const alice = await user('t-alice');
    const bob = await user('t-bob');
    const carol = await user('t-carol');
    await alice.createTopic('feeds.news');
    const news = alice.topic('feeds.news', { readers: ['t-bob'] });
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await news.publish({ n: i, text: `${MARKER} ${i}` }, { key: `k${i % 2}` }));
    expect(sent.map((s) => s.offset)).toEqual([1, 2, 3, 4, 5]);
    expect(sent.every((s) => !s.duplicate && s.epoch === 1)).toBe(true);

    // What the relay stores holds no plaintext.
    const token = await world.issuer.mint('t-bob', { claims: CLAIMS });
    const page = await request(world.relay.baseUrl, 'GET', '/v1/topics/feeds.news/messages?epoch=1&from=1&limit=10', { token });
    expect(page.status).toBe(200);
    expect(page.body.messages).toHaveLength(5);
    for (const m of page.body.messages) {
      const bytes = decodeBase64url(m.payload)!;
      expect(Buffer.from(bytes).includes(MARKER)).toBe(false);
      expect(bytes[0]).toBe(0x16);
    }

    // Bob reads from the start, twice over (the second time from a new subscription).
    for (let round = 0; round < 2; round++) {
      const c = collector();
      const sub = bob.topic('feeds.news').subscribe(c.handler, { from: 'earliest', onSkipped: c.onSkipped });
      const got = await c.waitGot(5);
      expect(got.map((m) => (m.body as { n: number }).n)).toEqual([0, 1, 2, 3, 4]);
      expect(got[0]).toMatchObject({ topic: 'feeds.news', epoch: 1, offset: 1, id: sent[0]!.id, key: 'k0', from: { userId: 't-alice', deviceId: alice.deviceId }, kind: 'json' });
      expect(c.skipped).toEqual([]);
      expect(sub.position).toEqual({ epoch: 1, offset: 6 });
      await sub.close();
      await sub.ended;
    }

    // Carol may subscribe (the relay's access control allows it) but holds no key.
    const c = collector();
    const sub = carol.topic('feeds.news').subscribe(c.handler, { from: 'earliest', onSkipped: c.onSkipped, keyWaitMs: 200 });
    const skipped = await c.waitSkipped(5);
    expect(skipped.every((e) => e.code === 'TOPIC_KEY_MISSING')).toBe(true);
    expect(c.got).toEqual([]);
    await sub.close();
  });

  it('a reader removed gets no key for what follows; a live subscriber reads on', async () => {
    const alice = await user('t-alice2');
    const bob = await user('t-bob2');
    const dave = await user('t-dave2');
    await alice.createTopic('feeds.rotate');
    const t = alice.topic('feeds.rotate', { readers: ['t-bob2', 't-dave2'] });
    const b = collector();
    const d = collector();
    bob.topic('feeds.rotate').subscribe(b.handler, { from: 'earliest', onSkipped: b.onSkipped });
    dave.topic('feeds.rotate').subscribe(d.handler, { from: 'earliest', onSkipped: d.onSkipped, keyWaitMs: 500 });
    await t.publish('before');
    await b.waitGot(1);
    await d.waitGot(1);
    t.setReaders(['t-bob2']);
    await t.publish(`${MARKER} after`);
    expect((await b.waitGot(2))[1]!.body).toBe(`${MARKER} after`);
    const [skip] = await d.waitSkipped(1);
    expect(skip!.code).toBe('TOPIC_KEY_MISSING');
    expect(d.got.map((m) => m.body)).toEqual(['before']);
  });

  it('publishing an id again answers with the first publish; other content under it is refused', async () => {
    const alice = await user('t-alice3');
    await alice.createTopic('feeds.idem');
    const t = alice.topic('feeds.idem', { readers: [] });
    const first = await t.publish('pay 10', { id: 'tx-1' });
    const again = await t.publish('pay 10', { id: 'tx-1' });
    expect(again).toMatchObject({ offset: first.offset, epoch: first.epoch, duplicate: true, id: 'tx-1' });
    const err = await sdkError(t.publish('pay 99', { id: 'tx-1' }));
    expect(err.code).toBe('PUBLISH_ID_CONFLICT');
    expect((await sdkError(t.publish('x', { id: '' }))).code).toBe('INVALID_ARGUMENT');
    expect((await sdkError(t.publish('x', { id: 'a'.repeat(65) }))).code).toBe('INVALID_ARGUMENT');
    expect((await sdkError(t.publish('x', { key: 'k'.repeat(257) }))).code).toBe('INVALID_ARGUMENT');
    // Concurrent publishes of one id seal one message.
    const both = await Promise.all([t.publish('same', { id: 'tx-2' }), t.publish('same', { id: 'tx-2' })]);
    expect(both[0]!.offset).toBe(both[1]!.offset);
    expect((await t.info()).nextOffset).toBe(first.offset + 2);
    // A topic that does not exist: the relay's refusal, typed.
    const missing = await sdkError(alice.topic('feeds.nowhere').publish('x'));
    expect(missing).toMatchObject({ code: 'RELAY_ERROR', relayCode: 'TOPIC_NOT_FOUND' });
    // Its own device reads its own topic.
    const c = collector();
    alice.topic('feeds.idem').subscribe(c.handler, { from: 'earliest' });
    expect((await c.waitGot(2)).map((m) => m.body)).toEqual(['pay 10', 'same']);
  });

  it('catches a relay that alters a message or swaps its publish id', async () => {
    const alice = await user('t-alice4');
    const tap = tappedTransport();
    const bob = await user('t-bob4', { transport: tap.transport });
    const problems: SdkError[] = [];
    bob.on('error', (e) => problems.push(e));
    await alice.createTopic('feeds.tamper');
    const t = alice.topic('feeds.tamper', { readers: ['t-bob4'] });
    const c = collector();
    bob.topic('feeds.tamper').subscribe(c.handler, { from: 'earliest', onSkipped: c.onSkipped, keyWaitMs: 300 });
    await t.publish('real', { id: 'id-1' });
    const [real] = await c.waitGot(1);
    const page = await request(world.relay.baseUrl, 'GET', '/v1/topics/feeds.tamper/messages?epoch=1&from=1&limit=1', { token: await world.issuer.mint('t-bob4', { claims: CLAIMS }) });
    const wire = page.body.messages[0];
    const frame = (over: Record<string, unknown>) => JSON.stringify({ type: 'topic_message', topic: 'feeds.tamper', epoch: 1, offset: wire.offset, publishedAt: wire.publishedAt, publisher: wire.publisher, publishId: wire.publishId, payload: wire.payload, ...over });
    // Offsets after the real one, so the subscription does not drop them as repeats.
    tap.inject(frame({ offset: 2, publishId: encodeBase64url(new TextEncoder().encode('id-2')) }));
    const flipped = decodeBase64url(wire.payload)!;
    flipped[60] = flipped[60]! ^ 1;
    tap.inject(frame({ offset: 3, payload: encodeBase64url(flipped) }));
    tap.inject(frame({ offset: 4, publisher: { userId: 't-carol', deviceId: 'dx' } }));
    const skipped = await c.waitSkipped(3);
    expect(problems).toEqual([]);
    expect(skipped.map((e) => e.code)).toEqual(['TOPIC_MESSAGE_INVALID', 'TOPIC_MESSAGE_INVALID', 'TOPIC_KEY_MISSING']);
    expect(c.got).toEqual([real]);
  }, 60_000);

  it('a subscription resumes after a reconnect, without gaps or repeats', async () => {
    const alice = await user('t-alice5');
    const bob = await user('t-bob5');
    await alice.createTopic('feeds.resume');
    const t = alice.topic('feeds.resume', { readers: ['t-bob5'] });
    const c = collector();
    bob.topic('feeds.resume').subscribe(c.handler, { from: 'earliest' });
    await t.publish(1);
    await c.waitGot(1);
    bob.disconnect();
    await t.publish(2);
    await t.publish(3);
    bob.connect();
    await t.publish(4);
    const got = await c.waitGot(4);
    await new Promise((r) => setTimeout(r, 200));
    expect(c.got.map((m) => m.body)).toEqual([1, 2, 3, 4]);
    expect(got.map((m) => m.offset)).toEqual([1, 2, 3, 4]);
  });

  it('a slow handler leaves the live stream and catches up from storage, in order', async () => {
    const alice = await user('t-alice6');
    const bob = await user('t-bob6');
    await alice.createTopic('feeds.slow');
    const t = alice.topic('feeds.slow', { readers: ['t-bob6'] });
    const got: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    bob.topic('feeds.slow').subscribe(async (m) => {
      if (got.length === 0) await gate;
      got.push(m.body as number);
    }, { from: 'earliest' });
    const total = 300;
    await Promise.all(Array.from({ length: total }, (_, i) => t.publish(i, { id: `n${i}` })));
    await new Promise((r) => setTimeout(r, 500));
    release();
    await waitFor(`${total} handled (have ${got.length})`, () => (got.length >= total ? true : undefined), 60_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toHaveLength(total);
    expect(new Set(got).size).toBe(total);
  }, 120_000);

  it('holds a message until its key generation arrives by mailbox', async () => {
    const alice = await user('t-alice8');
    // Bob's mailbox deliveries (binary frames) are held back while `hold` is set.
    let hold = true;
    const held: Array<() => void> = [];
    const inner = tappedTransport();
    const transport: typeof inner.transport = {
      open(url, handlers) {
        return inner.transport.open(url, {
          ...handlers,
          onMessage: (data) => {
            if (hold && typeof data !== 'string') held.push(() => handlers.onMessage(data));
            else handlers.onMessage(data);
          },
        });
      },
    };
    const bob = await user('t-bob8', { transport });
    await alice.createTopic('feeds.wait');
    const c = collector();
    bob.topic('feeds.wait').subscribe(c.handler, { from: 'earliest', onSkipped: c.onSkipped });
    await alice.topic('feeds.wait', { readers: ['t-bob8'] }).publish('needs its key');
    await waitFor('the key held back', () => (held.length > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 300));
    expect(c.got).toEqual([]);
    hold = false;
    for (const f of held.splice(0)) f();
    expect((await c.waitGot(1))[0]!.body).toBe('needs its key');
    expect(c.skipped).toEqual([]);
  });

  it('a publish made offline survives a restart and is published once', async () => {
    const store = new MemoryStore();
    const first = await user('t-alice9', { store });
    await first.createTopic('feeds.durable');
    first.disconnect();
    const pending = first.topic('feeds.durable').publish('while offline', { id: 'offline-1' });
    pending.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    await first.close();
    expect((await sdkError(pending)).code).toBe('CLIENT_CLOSED');
    const published: PublishResult[] = [];
    const again = await newClient(world, 't-alice9', { store, connect: false, token: () => world.issuer.mint('t-alice9', { claims: CLAIMS }) });
    clients.push(again);
    again.on('published', (r) => published.push(r));
    again.connect();
    await waitFor('published after the restart', () => (published.length > 0 ? true : undefined));
    expect(published).toEqual([expect.objectContaining({ topic: 'feeds.durable', id: 'offline-1', offset: 1, duplicate: false })]);
    // The same id again: the first publish, not a second message.
    expect(await again.topic('feeds.durable').publish('while offline', { id: 'offline-1' })).toMatchObject({ offset: 1, duplicate: true });
    expect((await again.topic('feeds.durable').info()).nextOffset).toBe(2);
  });

  it('publishes signed events a reader verifies', async () => {
    const alice = await user('t-alice7');
    const bob = await user('t-bob7');
    await alice.createTopic('feeds.events');
    const t = alice.topic('feeds.events', { readers: ['t-bob7'] });
    const r = await t.publishEvent({ id: 'evt-1', type: 'payment.sent', data: { amount: 10 } });
    expect(r.id).toBe('evt-1');
    expect((await t.publishEvent({ id: 'evt-1', type: 'payment.sent', data: { amount: 10 } })).duplicate).toBe(true);
    expect((await sdkError(t.publishEvent({ id: 'evt-1', type: 'payment.sent', data: { amount: 11 } }))).code).toBe('PUBLISH_ID_CONFLICT');
    const c = collector();
    bob.topic('feeds.events').subscribe(c.handler, { from: 'earliest' });
    const [m] = await c.waitGot(1);
    expect(m!.kind).toBe('event');
    expect(m!.event!.event).toMatchObject({ id: 'evt-1', type: 'payment.sent', data: { amount: 10 }, signeruser: 't-alice7', signerdevice: alice.deviceId });
    expect((await bob.verifyEvent(m!.event!.jws)).signer).toEqual({ userId: 't-alice7', deviceId: alice.deviceId });
  });
});

describe('SDK consumer groups', () => {
  it('members share the messages: acknowledged on success, retried after a failure, dead-lettered at the maximum', async () => {
    const alice = await user('c-alice');
    const w1 = await user('c-worker');
    const w2Client = await newClient(world, 'c-worker', { token: () => world.issuer.mint('c-worker', { claims: CLAIMS }) });
    clients.push(w2Client);
    await w1.linkDevice(w2Client.linkCode!);
    await w2Client.linked;
    await waitFor('second worker online', () => (w2Client.state.state === 'online' ? true : undefined));
    const ops = await user('c-ops');
    await alice.createTopic('feeds.jobs');
    await alice.createTopic('feeds.jobs-dlq');
    await alice.createGroup('feeds.jobs', { name: 'workers', deadLetterTopic: 'feeds.jobs-dlq', maxDeliveries: 2, visibilityMs: 5_000 });
    const jobs = alice.topic('feeds.jobs', { readers: ['c-worker', 'c-ops'] });

    const handled = new Map<string, string[]>();
    const failedOnce = new Set<string>();
    const errors: unknown[] = [];
    const handler = (who: string) => async (m: TopicMessage) => {
      const body = m.body as string;
      if (body === 'poison') throw new Error('cannot handle poison');
      if (body === 'flaky' && !failedOnce.has(body)) {
        failedOnce.add(body);
        throw new Error('flaky the first time');
      }
      handled.set(body, [...(handled.get(body) ?? []), who]);
    };
    const fast = () => 50;
    const c1 = w1.consumer('feeds.jobs', 'workers', { prefetch: 4, retryDelayMs: fast, onError: (e) => errors.push(e) });
    const c2 = w2Client.consumer('feeds.jobs', 'workers', { prefetch: 4, retryDelayMs: fast, onError: (e) => errors.push(e) });
    const run1 = c1.run(handler('w1'));
    const run2 = c2.run(handler('w2'));
    const dead = collector();
    ops.topic('feeds.jobs-dlq').subscribe(dead.handler, { from: 'earliest', onSkipped: dead.onSkipped });

    const bodies = [...Array.from({ length: 40 }, (_, i) => `job-${i}`), 'flaky', 'poison'];
    for (const b of bodies) await jobs.publish(b, { id: b });
    await waitFor('every good job handled', () => (handled.size === bodies.length - 1 ? true : undefined), 30_000);
    const [dl] = await dead.waitGot(1);
    expect(dl).toMatchObject({ topic: 'feeds.jobs-dlq', body: 'poison', id: 'poison', from: { userId: 'c-alice' } });
    expect(dl!.deadLetter).toMatchObject({ topic: 'feeds.jobs', group: 'workers', deliveries: 2, reason: 'max_deliveries', lastFailure: 'nack' });
    // Each good job once; both members took part.
    for (const [, who] of handled) expect(who).toHaveLength(1);
    const members = new Set([...handled.values()].flat());
    expect(members).toEqual(new Set(['w1', 'w2']));
    expect(errors.length).toBeGreaterThanOrEqual(3); // flaky once, poison twice
    const info = await waitForInfo(alice, bodies.length + 1);
    expect(info).toMatchObject({ inFlight: 0, deadLettered: 1 });
    await c1.stop();
    await c2.stop();
    await run1;
    await run2;
  }, 90_000);

  it('a consumer group of a dead-letter topic opens the copies, with where they came from', async () => {
    const alice = await user('c-alice5');
    const w = await user('c-worker5');
    for (const t of ['feeds.pay5', 'feeds.pay5-dlq', 'feeds.pay5-dlq-dlq']) await alice.createTopic(t);
    await alice.createGroup('feeds.pay5', { name: 'main', deadLetterTopic: 'feeds.pay5-dlq', maxDeliveries: 1 });
    await alice.createGroup('feeds.pay5-dlq', { name: 'triage', deadLetterTopic: 'feeds.pay5-dlq-dlq' });
    await alice.topic('feeds.pay5', { readers: ['c-worker5'] }).publish('bad payment', { id: 'p-1', key: 'acct-9' });
    const failing = w.consumer('feeds.pay5', 'main', { retryDelayMs: () => 0, onError: () => undefined });
    const failed = failing.run(() => {
      throw new Error('rejected');
    });
    const triaged: TopicMessage[] = [];
    const triage = w.consumer('feeds.pay5-dlq', 'triage', { onError: (e) => triaged.push(e as never) });
    const triaging = triage.run((m) => void triaged.push(m));
    await waitFor('the copy triaged', () => (triaged.length > 0 ? true : undefined));
    expect(triaged[0]).toMatchObject({ topic: 'feeds.pay5-dlq', body: 'bad payment', id: 'p-1', key: 'acct-9', from: { userId: 'c-alice5' }, deliveries: 1 });
    expect(triaged[0]!.deadLetter).toMatchObject({ topic: 'feeds.pay5', group: 'main', offset: 1, deliveries: 1, reason: 'max_deliveries' });
    for (const c of [failing, triage]) await c.stop();
    await failed;
    await triaging;
  });

  it('extends the lease of a long handler, so the message is not redelivered', async () => {
    const { alice, w } = await groupOf('c-alice2', 'c-worker2', 'feeds.long', 'slow', 1_000);
    const seen: number[] = [];
    const consumer = w.consumer('feeds.long', 'slow', { prefetch: 1 });
    const run = consumer.run(async (m) => {
      seen.push(m.deliveries ?? 0);
      await new Promise((r) => setTimeout(r, 3_000));
    });
    await alice.topic('feeds.long', { readers: ['c-worker2'] }).publish('takes a while');
    await waitFor('handled', () => (seen.length > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 3_500));
    expect(seen).toEqual([1]);
    const info = await alice.groupInfo('feeds.long', 'slow');
    expect(info).toMatchObject({ committedOffset: 2, inFlight: 0, redeliveries: 0 });
    await consumer.stop();
    await run;
  }, 30_000);

  it('refuses a group that does not exist, with the relay\'s code', async () => {
    const w = await user('c-worker3');
    const consumer = w.consumer('feeds.jobs', 'nobody');
    const err = await sdkError(consumer.run(() => undefined));
    expect(err).toMatchObject({ code: 'RELAY_ERROR', relayCode: 'GROUP_NOT_FOUND' });
    expect(() => w.consumer('Bad Topic', 'g')).toThrow(SdkError);
  });
});

describe('SDK topics against a relay that lies, and an application that errs', () => {
  /** A tapped transport that also counts the `subscribed` answers the client gets. */
  function counted() {
    const tap = tappedTransport();
    const seen = { subscribed: 0 };
    const transport: typeof tap.transport = {
      open(url, handlers) {
        return tap.transport.open(url, {
          ...handlers,
          onMessage: (data) => {
            if (typeof data === 'string' && (JSON.parse(data) as { type?: string }).type === 'subscribed') seen.subscribed++;
            handlers.onMessage(data);
          },
        });
      },
    };
    return { tap, seen, transport };
  }

  /** The stored messages of a topic as the relay would send them, for a frame of our own. */
  async function stored(topic: string, reader: string) {
    const page = await request(world.relay.baseUrl, 'GET', `/v1/topics/${topic}/messages?epoch=1&from=1&limit=100`, { token: await world.issuer.mint(reader, { claims: CLAIMS }) });
    expect(page.status).toBe(200);
    return (page.body.messages as Array<Record<string, unknown>>).map(
      (wire) => (over: Record<string, unknown> = {}) =>
        JSON.stringify({ type: 'topic_message', topic, epoch: 1, offset: wire.offset, publishedAt: wire.publishedAt, publisher: wire.publisher, publishId: wire.publishId, payload: wire.payload, ...over }),
    );
  }

  it('a subscription that left the live stream holds no more than its buffer, however much the relay sends', async () => {
    const alice = await user('h-alice1');
    const { tap, seen, transport } = counted();
    const bob = await user('h-bob1', { transport });
    await alice.createTopic('feeds.flood');
    await alice.topic('feeds.flood', { readers: ['h-bob1'] }).publish('first');
    const [frame] = await stored('feeds.flood', 'h-bob1');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered = false;
    const skipped: SdkError[] = [];
    const sub = bob.topic('feeds.flood').subscribe(async () => {
      entered = true;
      await gate;
    }, { from: 'earliest', onSkipped: (e) => void skipped.push(e) });
    await waitFor('the handler busy with the first message', () => (entered ? true : undefined));
    // Far more than the buffer, after the subscription left the stream: not held.
    for (let offset = 2; offset <= 2_000; offset++) tap.inject(frame!({ offset, payload: 'AAAA' }));
    release();
    // Caught up, it subscribes again after the last message it handled: an offset the
    // relay never had, so the relay ends the subscription.
    expect(await sub.ended.catch((e: unknown) => e)).toMatchObject({ code: 'RELAY_ERROR', relayCode: 'OFFSET_OUT_OF_RANGE' });
    expect(seen.subscribed).toBe(1);
    expect(skipped.length).toBe(limits.MAX_SUBSCRIPTION_BUFFER);
    expect(sub.position).toEqual({ epoch: 1, offset: 2 + limits.MAX_SUBSCRIPTION_BUFFER });
  }, 60_000);

  it('a subscription opened again takes nothing of the stream it replaced: no gap', async () => {
    const alice = await user('h-alice2');
    const { tap, transport } = counted();
    const bob = await user('h-bob2', { transport });
    await alice.createTopic('feeds.again');
    const t = alice.topic('feeds.again', { readers: ['h-bob2'] });
    for (let i = 1; i <= 3; i++) await t.publish(i);
    const first = collector();
    const sub1 = bob.topic('feeds.again').subscribe(first.handler, { from: 'earliest' });
    await first.waitGot(3);
    const frames = await stored('feeds.again', 'h-bob2');
    const closing = sub1.close();
    const second = collector();
    bob.topic('feeds.again').subscribe(second.handler, { from: 'earliest', onSkipped: second.onSkipped });
    // A message of the first stream, still on its way when the second was asked for.
    tap.inject(frames[2]!());
    await closing;
    await second.waitGot(3);
    await t.publish(4);
    const got = await second.waitGot(4);
    expect(got.map((m) => m.offset)).toEqual([1, 2, 3, 4]);
    expect(second.skipped).toEqual([]);
  });

  it('callbacks that throw do not stop a subscription', async () => {
    const alice = await user('h-alice3');
    const tap = tappedTransport();
    const bob = await user('h-bob3', { transport: tap.transport });
    const problems: unknown[] = [];
    bob.on('error', (e) => problems.push(e));
    await alice.createTopic('feeds.throws');
    await alice.topic('feeds.throws', { readers: ['h-bob3'] }).publish('real');
    const [frame] = await stored('feeds.throws', 'h-bob3');
    const c = collector();
    bob.topic('feeds.throws').subscribe(c.handler, {
      from: 'earliest',
      onSkipped: (e) => {
        c.onSkipped(e);
        throw new Error('onSkipped failed');
      },
    });
    await c.waitGot(1);
    tap.inject(frame!({ offset: 2, payload: 'AAAA' }));
    tap.inject(frame!({ offset: 3, payload: 'AAAA' }));
    await c.waitSkipped(2);
    await waitFor('both throws reported', () => (problems.length >= 2 ? true : undefined));
    expect(problems.map((e) => (e as Error).message)).toEqual(['onSkipped failed', 'onSkipped failed']);
  });

  it('a consumer handles no more leases at once than its prefetch, however many the relay sends', async () => {
    const tap = tappedTransport();
    const { alice, w } = await groupOf('h-alice8', 'h-worker8', 'feeds.leases', 'g', undefined, { transport: tap.transport });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const consumer = w.consumer('feeds.leases', 'g', { prefetch: 2, onError: () => undefined });
    const run = consumer.run(() => gate);
    await alice.topic('feeds.leases', { readers: ['h-worker8'] }).publish('real');
    await waitFor('the real message in hand', () => (consumer.inFlight === 1 ? true : undefined));
    const [frame] = await stored('feeds.leases', 'h-worker8');
    for (let offset = 100; offset < 150; offset++) tap.inject(frame!({ type: 'leased', group: 'g', offset, deliveries: 1, leaseUntil: Date.now() + 60_000 }));
    expect(consumer.inFlight).toBe(2);
    release();
    await consumer.stop();
    await run;
  });

  it('refuses options a timer cannot hold, and options that are not an object', async () => {
    const bob = await user('h-bob4');
    const t = bob.topic('feeds.options');
    for (const keyWaitMs of [Number.NaN, -1, 1.5, Infinity, 2 ** 31, '1000']) {
      expect(() => t.subscribe(() => undefined, { keyWaitMs } as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
      expect(() => bob.consumer('feeds.options', 'g', { keyWaitMs } as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => t.subscribe(() => undefined, null as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => bob.consumer('feeds.options', 'g', null as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    t.subscribe(() => undefined, { keyWaitMs: 0 });
  });

  it('a publish under way when the client closes rejects with CLIENT_CLOSED rather than wait forever', async () => {
    const store = new MemoryStore();
    const alice = await user('h-alice5', { store });
    await alice.createTopic('feeds.closing');
    const pending = alice.topic('feeds.closing').publish('at close', { id: 'closing-1' });
    pending.catch(() => undefined);
    await alice.close();
    expect((await sdkError(pending)).code).toBe('CLIENT_CLOSED');
  });
});

describe('SDK consumer groups, misuse and races', () => {
  it('stop() before the relay answered the join leaves the group: the next consumer joins', async () => {
    const { alice, w } = await groupOf('h-alice6', 'h-worker6', 'feeds.rejoin', 'g');
    const first = w.consumer('feeds.rejoin', 'g');
    const run1 = first.run(() => undefined);
    await first.stop();
    await run1;
    const handled: unknown[] = [];
    const second = w.consumer('feeds.rejoin', 'g');
    const run2 = second.run((m) => void handled.push(m.body));
    await alice.topic('feeds.rejoin', { readers: ['h-worker6'] }).publish('after the rejoin');
    await waitFor('handled by the second consumer', () => (handled.length > 0 ? true : undefined));
    await second.stop();
    await run2;
    expect(handled).toEqual(['after the rejoin']);
  });

  it('a retryDelayMs that throws is reported, and the message is released all the same', async () => {
    // A long lease: only a release brings the message back within the test.
    const { alice, w } = await groupOf('h-alice7', 'h-worker7', 'feeds.delay', 'g', 120_000);
    const errors: unknown[] = [];
    const deliveries: number[] = [];
    const consumer = w.consumer('feeds.delay', 'g', {
      retryDelayMs: () => {
        throw new Error('no delay');
      },
      onError: (e) => errors.push(e),
    });
    const run = consumer.run((m) => {
      deliveries.push(m.deliveries ?? 0);
      if (deliveries.length === 1) throw new Error('first time');
    });
    await alice.topic('feeds.delay', { readers: ['h-worker7'] }).publish('again');
    await waitFor('delivered again', () => (deliveries.length >= 2 ? true : undefined));
    expect(deliveries).toEqual([1, 2]);
    expect(errors.map((e) => (e as Error).message)).toEqual(['first time', 'no delay']);
    await consumer.stop();
    await run;
  });
});

/** A publisher, a worker, and `topic` with the consumer group `group` (dead-lettering to `topic`-dlq). */
async function groupOf(publisher: string, worker: string, topic: string, group: string, visibilityMs?: number, workerOptions: Parameters<typeof newClient>[2] = {}) {
  const alice = await user(publisher);
  const w = await user(worker, workerOptions);
  await alice.createTopic(topic);
  await alice.createTopic(`${topic}-dlq`);
  await alice.createGroup(topic, { name: group, deadLetterTopic: `${topic}-dlq`, ...(visibilityMs === undefined ? {} : { visibilityMs }) });
  return { alice, w };
}

async function waitForInfo(client: HermeticClient, committed: number) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const info = await client.groupInfo('feeds.jobs', 'workers');
    if (info.committedOffset >= committed || Date.now() > deadline) return info;
    await new Promise((r) => setTimeout(r, 100));
  }
}
