/**
 * STORED_BATCH through a real relay process over a real socket, on each storage driver:
 * a client that asks for it at authentication gets the STORED answers of a pipelined
 * burst of SENDs in binary frames, several answers a frame, each answer saying what the
 * JSON `stored` frame says (ids, envelope ids, sequences, duplicate flags, times); a
 * refused SEND in the burst still gets its JSON error; a client that does not ask gets
 * JSON exactly as before.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { FEATURE_STORED_BATCH } from '../../protocol/stored-batch.js';
import { MAX_STORED_PER_BATCH } from '../../protocol/limits.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { type JsonFrame, RawClient } from './raw-client.js';
import { DRIVERS, type TestUser, World, driverAvailable, metric, payload, targetsFor } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const TTL_SECONDS = 3600;
/** SENDs in the burst; every seventh resends an envelope id sent earlier in it. */
const BURST = 300;

interface Sent {
  readonly id: number;
  readonly envelopeId: string;
  /** The index of the SEND this one resends. */
  readonly resends: number | undefined;
}

/** Sends the burst without waiting for any answer, then waits for them all. */
async function burst(sender: RawClient, to: TestUser): Promise<{ sent: Sent[]; answers: Map<number, JsonFrame>; from: number; to: number }> {
  const from = Date.now();
  const sent: Sent[] = [];
  const ids: Uint8Array[] = [];
  const bodies: Array<ReturnType<typeof targetsFor>> = [];
  for (let i = 0; i < BURST; i++) {
    const resends = i % 7 === 6 ? i - 3 : undefined;
    const body = resends === undefined ? targetsFor(to, (d) => payload(`burst ${i} ${d.deviceId}`)) : bodies[resends]!;
    const s = sender.send(to.userId, body, { ttlSeconds: TTL_SECONDS, ...(resends === undefined ? {} : { envelopeId: ids[resends]! }) });
    ids.push(s.envelopeId);
    bodies.push(body);
    sent.push({ id: s.id, envelopeId: encodeBase64url(s.envelopeId), resends });
  }
  const answers = new Map<number, JsonFrame>();
  await sender.until(
    () => {
      for (const f of sender.json) if ((f.type === 'stored' || f.type === 'error') && typeof f.id === 'number') answers.set(f.id, f);
      return answers.size === BURST;
    },
    `${BURST} answers`,
    60_000,
  );
  return { sent, answers, from, to: Date.now() };
}

/** The answers say what was sent: ids, envelope ids, sequences in send order, duplicates, times. */
function checkAnswers(run: Awaited<ReturnType<typeof burst>>, to: TestUser): void {
  const { sent, answers } = run;
  const nextSeq = new Map(to.devices.map((d) => [d.deviceId, 1]));
  for (const [i, s] of sent.entries()) {
    const a = answers.get(s.id);
    expect(a?.type, `answer to SEND ${i}`).toBe('stored');
    expect(a!.envelopeId).toBe(s.envelopeId);
    expect(a!.storedAt).toBeGreaterThanOrEqual(run.from - 1000);
    expect(a!.storedAt).toBeLessThanOrEqual(run.to + 1000);
    if (s.resends === undefined) {
      expect(a!.duplicate).toBe(false);
      expect(a!.expiresAt).toBe(a!.storedAt + TTL_SECONDS * 1000);
      // Pipelined SENDs are numbered in the order they were sent, per mailbox.
      expect(a!.recipients).toEqual(to.devices.map((d) => ({ deviceId: d.deviceId, seq: nextSeq.get(d.deviceId)! })));
      for (const d of to.devices) nextSeq.set(d.deviceId, nextSeq.get(d.deviceId)! + 1);
    } else {
      const original = answers.get(sent[s.resends]!.id)!;
      expect(a!.duplicate).toBe(true);
      expect(a!.recipients).toEqual(original.recipients);
      expect(a!.expiresAt).toBe(original.expiresAt);
    }
  }
}

describe.each(DRIVERS)('STORED_BATCH on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`STORED_BATCH on ${driver.name}`);
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(driver);
  });

  afterAll(async () => {
    await world?.stop();
  });

  afterEach(async () => {
    world.closeClients();
    await world.expectRelaysUp();
  });

  it('answers a pipelined burst of SENDs in binary frames of several answers, matching ids, sequences, duplicates and times', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 2);
    const framesBefore = (await metric(world.relay, 'hermetic_frames_out_total{type="stored_batch"}')) ?? 0;
    const sender = await world.connect(alice, undefined, { storedBatch: true });
    expect(sender.json.find((f) => f.type === 'auth_ok')).toMatchObject({ features: [FEATURE_STORED_BATCH] });

    const run = await burst(sender, bob);
    checkAnswers(run, bob);
    // Every answer came in a STORED_BATCH, none as JSON text, and commits carried many.
    const inBatches = sender.storedBatches.flat();
    expect(inBatches).toHaveLength(BURST);
    expect(sender.json.filter((f) => f.type === 'stored')).toHaveLength(BURST);
    expect(new Set(inBatches.map((a) => a.id)).size).toBe(BURST);
    expect(sender.storedBatches.length).toBeLessThan(BURST / 4);
    for (const b of sender.storedBatches) expect(b.length).toBeLessThanOrEqual(MAX_STORED_PER_BATCH);
    expect(await metric(world.relay, 'hermetic_frames_out_total{type="stored_batch"}')).toBe(framesBefore + sender.storedBatches.length);

    // What was answered is what is delivered.
    const reader = await world.connect(bob, bob.devices[1]!, { autoAck: true });
    await reader.waitDelivered(BURST - Math.floor(BURST / 7));
    expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: BURST - Math.floor(BURST / 7) }, (_, i) => i + 1));
  });

  it('still answers a refused SEND in the burst with its JSON error, the others in binary', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { storedBatch: true });
    const good = Array.from({ length: 20 }, (_, i) => sender.send(bob.userId, targetsFor(bob, () => payload(`ok ${i}`))));
    const bad = sender.send(bob.userId, [{ deviceId: 'not-a-device', payload: payload('lost') }]);
    const more = Array.from({ length: 20 }, (_, i) => sender.send(bob.userId, targetsFor(bob, () => payload(`ok2 ${i}`))));
    const refused = await sender.answer(bad.id);
    expect(refused).toMatchObject({ type: 'error', code: 'DEVICE_LIST_MISMATCH', id: bad.id });
    const answers = await Promise.all([...good, ...more].map((s) => sender.answer(s.id)));
    expect(answers.map((a) => a.recipients[0].seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(sender.storedBatches.flat()).toHaveLength(40);
  });

  it('answers a client that does not ask for it in JSON, exactly as before', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 2);
    const sender = await world.connect(alice);
    expect(sender.json.find((f) => f.type === 'auth_ok')).toEqual({ type: 'auth_ok', userId: alice.userId, deviceId: 'd1', expiresAt: expect.any(Number) });
    const run = await burst(sender, bob);
    checkAnswers(run, bob);
    expect(sender.storedBatches).toHaveLength(0);
    // The JSON frames carry exactly the documented members.
    for (const a of run.answers.values()) expect(Object.keys(a)).toEqual(['type', 'id', 'envelopeId', 'duplicate', 'storedAt', 'expiresAt', 'recipients']);
  });

  it('ignores features it does not know, and then answers in JSON', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const c = await RawClient.connect(world.relay.wsUrl, alice.devices[0]!, alice.token, { auth: false });
    const challenge = c.json.find((f) => f.type === 'challenge')!;
    c.sendJson({ ...alice.devices[0]!.authFrame(decodeBase64url(String(challenge.nonce))!, alice.token, world.relay.wsUrl), features: ['stored-batch/9', 'something-else'] });
    const ok = await c.waitJson((f) => f.type === 'auth_ok' || f.type === 'error');
    expect(ok).toEqual({ type: 'auth_ok', userId: alice.userId, deviceId: 'd1', expiresAt: expect.any(Number) });
    const stored = await c.sendAndWait(bob.userId, targetsFor(bob, () => payload('x')));
    expect(stored).toMatchObject({ type: 'stored', duplicate: false });
    expect(c.storedBatches).toHaveLength(0);
    c.close();
  });
});
