/**
 * Durability of STORED: the relay is killed with SIGKILL (no shutdown of any kind) in the
 * middle of a stream of 5,000 pipelined SENDs. Every envelope the sender got a STORED
 * for was committed: after a restart on the same storage, the recipient receives each of
 * them, with the bytes that were sent for its id, at gap-free sequences. Envelopes
 * committed without their STORED reaching the sender may be delivered too; resending
 * every unanswered SEND then stores each exactly once (idempotency survives the crash).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { DRIVERS, World, driverAvailable, firstDevice, hex, payload, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const COUNT = 5_000;
/** The kill comes once this many STOREDs have arrived: mid-stream, with SENDs queued. */
const KILL_AFTER_STORED = 1_500;

describe.each(DRIVERS)('SIGKILL during a stream of SENDs on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`SIGKILL during a stream on ${driver.name}`);
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(driver);
  });

  afterAll(async () => {
    await world?.stop();
  });

  it(`every STORED envelope survives kill -9 and is delivered after a restart`, async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const to = firstDevice(bob).deviceId;
    const sender = await world.connect(alice);

    // What was sent for each envelope id, and which ids got a STORED.
    const sent = new Map<string, { envelopeId: Uint8Array; label: string }>();
    const byRequest = new Map<number, string>();
    const sentIndexes = new Set<number>();
    // A stream of pipelined SENDs (within the client's send window), killed mid-way.
    const streaming = sender.sendWindowed(
      COUNT,
      (i) => ({ recipientUserId: bob.userId, targets: [{ deviceId: to, payload: payload(`crash ${i}`, 200) }] }),
      256,
      (i, { id, envelopeId }) => {
        sentIndexes.add(i);
        sent.set(hex(envelopeId), { envelopeId, label: `crash ${i}` });
        byRequest.set(id, hex(envelopeId));
      },
    );
    const storedCount = (): number => sender.json.filter((f) => f.type === 'stored').length;
    await sender.until(() => storedCount() >= KILL_AFTER_STORED, `${KILL_AFTER_STORED} STOREDs`, 60_000);
    const killed = await world.relay.stop('SIGKILL');
    expect(killed.signal).toBe('SIGKILL');
    await sender.waitClosed();
    await streaming;

    const storedIds = new Set<string>();
    const storedSeq = new Map<string, number>();
    for (const f of sender.json) {
      if (f.type === 'error') throw new Error(`unexpected error before the kill: ${JSON.stringify(f)}`);
      if (f.type !== 'stored') continue;
      const id = byRequest.get(f.id as number)!;
      storedIds.add(id);
      storedSeq.set(id, (f.recipients as Array<{ seq: number }>)[0]!.seq);
    }
    // The kill really was mid-stream.
    expect(storedIds.size).toBeGreaterThanOrEqual(KILL_AFTER_STORED);
    expect(storedIds.size).toBeLessThan(COUNT);

    await world.restartRelay(0);
    const reader = await world.connect(bob, undefined, { autoAck: true });
    const empty = await reader.waitJson((f) => f.type === 'queue_empty', 60_000);
    const tail = Number(empty.through);
    await reader.waitDelivered(tail);

    // Gap-free: 1..tail, nothing expired, every delivered envelope one that was sent,
    // with the bytes sent for its id, at the sequence its STORED named.
    expect(reader.stream().filter((s) => s.startsWith('expired'))).toEqual([]);
    expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: tail }, (_, i) => i + 1));
    const deliveredIds = new Set<string>();
    for (const d of reader.delivered) {
      const id = hex(d.envelopeId);
      const s = sent.get(id);
      expect(s, `delivered envelope ${id} was sent`).toBeDefined();
      expect(text(d.payload), `payload of ${id}`).toBe(s!.label);
      if (storedSeq.has(id)) expect(d.seq, `seq of ${id}`).toBe(storedSeq.get(id));
      deliveredIds.add(id);
    }
    // Nothing STORED is missing; deduplicated by id, nothing is delivered twice.
    const lost = [...storedIds].filter((id) => !deliveredIds.has(id));
    expect(lost, `${lost.length} STORED envelopes lost`).toEqual([]);
    expect(deliveredIds.size).toBe(reader.delivered.length);
    // Committed, but the STORED never reached the sender (killed after the commit).
    const unanswered = reader.delivered.filter((d) => !storedIds.has(hex(d.envelopeId))).length;

    // The sender resends every SEND it got no answer for (same envelope id): those already
    // committed are answered as duplicates at their original sequence, the rest are
    // stored once; then it sends the rest of the stream it never got to.
    const resender = await world.connect(alice);
    const pending = [...sent.entries()].filter(([id]) => !storedIds.has(id)).map(([, s]) => s);
    for (let i = 0; i < COUNT; i++) if (!sentIndexes.has(i)) pending.push({ envelopeId: systemRandom(16), label: `crash ${i}` });
    await resender.sendWindowed(pending.length, (i) => ({
      recipientUserId: bob.userId,
      targets: [{ deviceId: to, payload: payload(pending[i]!.label, 200) }],
      opts: { envelopeId: pending[i]!.envelopeId },
    }));
    await resender.until(() => resender.answeredCount() === pending.length, 'answers to the resends', 60_000);
    const answers = resender.json.filter((f) => f.type === 'stored' || f.type === 'error');
    expect(answers.filter((a) => a.type !== 'stored')).toEqual([]);
    expect(answers.filter((a) => a.duplicate === true)).toHaveLength(unanswered);
    await reader.waitDelivered(COUNT);
    const finalIds = reader.delivered.map((d) => hex(d.envelopeId));
    expect(new Set(finalIds).size).toBe(COUNT);
    expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: COUNT }, (_, i) => i + 1));
    console.info(
      `${driver.name}: killed after ${storedIds.size} STOREDs; ${tail} envelopes were committed (${unanswered} without a STORED); after resending, ${COUNT} delivered once each`,
    );
  });
});
