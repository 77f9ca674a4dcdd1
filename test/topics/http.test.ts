/**
 * Topics over HTTP through a real relay, on each storage driver: creating, describing,
 * resetting and reading a topic, each checked against the token's `hermetic_topics`
 * claim (a refusal is FORBIDDEN with its reason, and counted in /metrics); bad input gets
 * its code and changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJsonObject } from '../../protocol/decode.js';
import { MIN_TOPIC_RETENTION_MS } from '../../protocol/limits.js';
import { decodeTopicInfo, decodeTopicPage } from '../../protocol/topics.js';
import { expectError, request } from '../helpers/http.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { DRIVERS, World, driverAvailable, metric } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

describe.each(DRIVERS)('topics over HTTP on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`topics over HTTP on ${driver.name}`);
    return;
  }

  let world: World;
  let admin: string;
  let reader: string;

  beforeAll(async () => {
    world = await World.start(driver);
    admin = await world.issuer.mint('bank-a-admin', { claims: { hermetic_topics: { create: ['bank-a.>'], subscribe: ['bank-a.>'] } } });
    reader = await world.issuer.mint('bank-b-reader', { claims: { hermetic_topics: { subscribe: ['bank-a.*'] } } });
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
  });

  const api = (method: string, path: string, token: string, json?: unknown) => request(world.relay.baseUrl, method, path, { token, ...(json === undefined ? {} : { json }) });

  it('creates a topic for a user the claim allows, and describes it', async () => {
    const res = await api('POST', '/v1/topics', admin, { name: 'bank-a.payments', retentionMs: 3_600_000 });
    expect(res.status, res.text).toBe(201);
    const info = decodeTopicInfo(parseJsonObject(res.text));
    expect(info).toMatchObject({ name: 'bank-a.payments', epoch: 1, earliestOffset: 1, nextOffset: 1, retentionMs: 3_600_000, retentionBytes: null, createdBy: 'bank-a-admin' });
    const got = await api('GET', '/v1/topics/bank-a.payments', reader);
    expect(got.status, got.text).toBe(200);
    expect(decodeTopicInfo(parseJsonObject(got.text))).toEqual(info);
    expectError(await api('POST', '/v1/topics', admin, { name: 'bank-a.payments' }), 409, 'TOPIC_EXISTS');
  });

  it('refuses what the claim does not grant, says why, and counts it', async () => {
    const before = (await metric(world.relay, 'hermetic_topic_denied_total{action="create",reason="not_granted"}')) ?? 0;
    const denied = await api('POST', '/v1/topics', reader, { name: 'bank-a.refunds' });
    expectError(denied, 403, 'FORBIDDEN');
    expect(denied.body.error.details).toEqual({ action: 'create', topic: 'bank-a.refunds', reason: 'not_granted' });
    expect(await metric(world.relay, 'hermetic_topic_denied_total{action="create",reason="not_granted"}')).toBe(before + 1);

    const plain = await world.issuer.mint('no-claim');
    const none = await api('POST', '/v1/topics', plain, { name: 'bank-a.x' });
    expectError(none, 403, 'FORBIDDEN');
    expect(none.body.error.details.reason).toBe('no_claim');

    for (const claim of ['all', ['create'], { create: 'bank-a.>' }, { delete: ['x'] }, { create: ['a.>.b'] }, { create: ['UPPER'] }, { create: Array(33).fill('a') }]) {
      const bad = await world.issuer.mint('bad-claim', { claims: { hermetic_topics: claim } });
      const r = await api('POST', '/v1/topics', bad, { name: 'a.b' });
      expectError(r, 403, 'FORBIDDEN');
      expect(r.body.error.details.reason, JSON.stringify(claim)).toBe('malformed_claim');
    }
    // A reader of bank-a.* does not see deeper names, nor whether they exist.
    expectError(await api('GET', '/v1/topics/bank-a.payments.eu', reader), 403, 'FORBIDDEN');
    expect((await api('GET', '/v1/topics', reader)).status).toBe(404);
    // Nothing was created by any of these.
    expectError(await api('GET', '/v1/topics/bank-a.refunds', admin), 404, 'TOPIC_NOT_FOUND');
  });

  it('refuses bad input with its code', async () => {
    for (const body of [{}, { name: 'Bad' }, { name: 'bank-a.' }, { name: 'bank-a.ok', retentionMs: MIN_TOPIC_RETENTION_MS - 1 }, { name: 'bank-a.ok', retentionBytes: 'big' }]) {
      expectError(await api('POST', '/v1/topics', admin, body), 400, 'BAD_REQUEST');
    }
    expectError(await api('GET', '/v1/topics/Bad%20Name', admin), 400, 'BAD_REQUEST');
    expectError(await api('GET', '/v1/topics/bank-a.payments/messages?from=1', reader), 400, 'BAD_REQUEST');
    expectError(await api('GET', '/v1/topics/bank-a.payments/messages?epoch=1&from=0', reader), 400, 'BAD_REQUEST');
    expectError(await api('GET', '/v1/topics/bank-a.payments/messages?epoch=1&from=1&limit=257', reader), 400, 'BAD_REQUEST');
    expectError(await api('GET', '/v1/topics/bank-a.missing/messages?epoch=1&from=1', reader), 404, 'TOPIC_NOT_FOUND');
  });

  it('reads a page, and says when a position is out of range or of another epoch; a reset starts a new epoch', async () => {
    await api('POST', '/v1/topics', admin, { name: 'bank-a.resets' });
    const empty = await api('GET', '/v1/topics/bank-a.resets/messages?epoch=1&from=1', reader);
    expect(empty.status, empty.text).toBe(200);
    expect(decodeTopicPage(parseJsonObject(empty.text))).toEqual({ epoch: 1, next: 1, head: 1, messages: [] });
    const beyond = await api('GET', '/v1/topics/bank-a.resets/messages?epoch=1&from=2', reader);
    expectError(beyond, 416, 'OFFSET_OUT_OF_RANGE');
    expect(beyond.body.error.details).toEqual({ epoch: 1, next: 1 });
    expectError(await api('POST', '/v1/topics/bank-a.resets/reset', reader), 403, 'FORBIDDEN');
    const reset = await api('POST', '/v1/topics/bank-a.resets/reset', admin);
    expect(reset.status, reset.text).toBe(200);
    expect(reset.body).toMatchObject({ epoch: 2, nextOffset: 1 });
    const old = await api('GET', '/v1/topics/bank-a.resets/messages?epoch=1&from=1', reader);
    expectError(old, 409, 'TOPIC_EPOCH_CHANGED');
    expect(old.body.error.details).toEqual({ epoch: 2, earliest: 1 });
    await world.expectRelaysUp();
  });
});
