/**
 * Per-mailbox sequences under concurrent senders: four sender devices (two users) each
 * pipeline 500 SENDs at once to one recipient device. The recipient must see sequences
 * 1..N exactly — strictly increasing, no gap, no repeat — and each sender's envelopes in
 * the order that sender sent them; every STORED answer must name the sequence the
 * envelope was delivered at. Run on each driver, and on two relays sharing one
 * PostgreSQL database (senders split between them), with notices over PostgreSQL NOTIFY
 * and over NATS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSES } from '../helpers/buses.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import type { RawClient } from './raw-client.js';
import { DRIVERS, POSTGRES, World, driverAvailable, firstDevice, hex, payload, sendMany, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const SENDERS_PER_USER = 2;
const PER_SENDER = 500;

async function concurrentSenders(world: World, relayOf: (senderIndex: number) => number): Promise<void> {
  const users = [await world.user('sender-a', SENDERS_PER_USER), await world.user('sender-b', SENDERS_PER_USER)];
  const recipient = await world.user('recipient');
  const to = firstDevice(recipient).deviceId;
  const reader = await world.connect(recipient, undefined, { autoAck: true });
  await reader.waitJson((f) => f.type === 'queue_empty');

  const senders: Array<{ label: string; client: RawClient }> = [];
  for (const u of users) {
    for (const d of u.devices) {
      const i = senders.length;
      senders.push({ label: `${u.userId}/${d.deviceId}`, client: await world.connect(u, d, { relay: relayOf(i) }) });
    }
  }

  // Every sender pipelines all of its SENDs without waiting for answers.
  const sent = senders.map(({ label, client }) => {
    const out: Array<{ id: number; envelopeId: string }> = [];
    for (let i = 0; i < PER_SENDER; i++) {
      const { id, envelopeId } = client.send(recipient.userId, [{ deviceId: to, payload: payload(`${label} #${i}`, 64) }]);
      out.push({ id, envelopeId: hex(envelopeId) });
    }
    return out;
  });
  const total = senders.length * PER_SENDER;

  await Promise.all(senders.map(({ client }) => client.until(() => client.json.filter((f) => f.type === 'stored' || f.type === 'error').length >= PER_SENDER, 'every answer', 60_000)));
  await reader.waitDelivered(total, 60_000);

  // The recipient: exactly 1..N, in order.
  expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  const bySeq = new Map(reader.delivered.map((d) => [d.seq, d]));

  for (const [s, { label, client }] of senders.entries()) {
    const answers = new Map(client.json.filter((f) => f.type === 'stored' || f.type === 'error').map((f) => [f.id as number, f]));
    const seqs: number[] = [];
    for (const [i, { id, envelopeId }] of sent[s]!.entries()) {
      const a = answers.get(id);
      expect(a, `answer to ${label} #${i}`).toMatchObject({ type: 'stored', duplicate: false });
      const seq = (a!.recipients as Array<{ deviceId: string; seq: number }>)[0]!.seq;
      seqs.push(seq);
      // The STORED answer names the sequence the envelope really has.
      const d = bySeq.get(seq)!;
      expect([hex(d.envelopeId), text(d.payload)]).toEqual([envelopeId, `${label} #${i}`]);
    }
    // This sender's envelopes got increasing sequences in its send order.
    expect(seqs.every((q, i) => i === 0 || q > seqs[i - 1]!), `${label}: sequences follow send order`).toBe(true);
    // ... and the recipient saw them in that order.
    const seen = reader.delivered.filter((d) => text(d.payload).startsWith(`${label} #`)).map((d) => text(d.payload));
    expect(seen).toEqual(Array.from({ length: PER_SENDER }, (_, i) => `${label} #${i}`));
  }
}

describe.each(DRIVERS)('concurrent senders to one mailbox on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`concurrent senders on ${driver.name}`);
    return;
  }
  let world: World;
  beforeAll(async () => {
    world = await World.start(driver);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it(`${2 * SENDERS_PER_USER} senders × ${PER_SENDER} envelopes: sequences 1..N, gap-free, each sender in its send order`, async () => {
    await concurrentSenders(world, () => 0);
    await world.expectRelaysUp();
  });

  it('one sender pipelining short bursts gets sequences in its send order, burst after burst', async () => {
    // Small bursts are split over two concurrent batches (one SEND alone, the rest
    // together): the later batch must not number the mailbox first.
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    for (let round = 0; round < 40; round++) {
      const answers = await sendMany(sender, bob, 8, `round ${round}`);
      const seqs = answers.sort((a, b) => a.id - b.id).map((a) => (a.recipients as Array<{ seq: number }>)[0]!.seq);
      expect(seqs, `round ${round}`).toEqual(Array.from({ length: 8 }, (_, i) => round * 8 + i + 1));
    }
  });
});

for (const bus of BUSES) describe(`concurrent senders to one mailbox through two relays sharing PostgreSQL, notices over ${bus.name}`, () => {
  if (!bus.available) {
    bus.missing(`concurrent senders through two relays, notices over ${bus.name}`);
    return;
  }
  let world: World;
  beforeAll(async () => {
    world = await World.start(POSTGRES, { relays: 2, env: bus.fleet().env });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('senders on relays A and B, recipient on A: sequences 1..N, gap-free, each sender in its send order', async () => {
    await concurrentSenders(world, (i) => i % 2);
    await world.expectRelaysUp();
  });
});
