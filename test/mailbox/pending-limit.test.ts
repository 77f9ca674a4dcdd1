/**
 * A connection cannot pipeline SENDs without bound: while its SENDs wait for a commit
 * (here: the recipient's mailbox row is held locked by another transaction), at most
 * MAX_PENDING_SENDS frames or MAX_PENDING_SEND_BYTES bytes are accepted; the excess is
 * answered RATE_LIMITED, each with its request id. Once the database moves again, every
 * accepted SEND is stored and delivered, and the connection keeps working; answered
 * SENDs give their bytes back, so a long stream through one connection never hits it.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSend } from '../../protocol/envelopes.js';
import { MAX_ENVELOPE_BYTES, MAX_PENDING_SEND_BYTES, MAX_PENDING_SENDS } from '../../protocol/limits.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, type TestUser, World, driverAvailable, firstDevice, payload, text } from './world.js';
import type { RawClient } from './raw-client.js';

afterAll(async () => {
  await killAllRelays();
});

describe('pending SENDs per connection (PostgreSQL)', () => {
  if (!driverAvailable(POSTGRES)) {
    pgMissing('pending SEND limits');
    return;
  }

  let world: World;
  beforeAll(async () => {
    world = await World.start(POSTGRES);
  });
  afterAll(async () => {
    await world?.stop();
  });

  /** Holds bob's mailbox row locked, so no SEND to bob can commit, until released. */
  async function lockMailbox(user: TestUser): Promise<() => Promise<void>> {
    const client = new pg.Client({ connectionString: world.db!.url });
    await client.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 FROM mailboxes WHERE user_id = $1 FOR UPDATE', [user.userId]);
    return async () => {
      await client.query('ROLLBACK');
      await client.end();
    };
  }

  async function answersFor(sender: RawClient, ids: readonly number[]): Promise<Map<number, Record<string, any>>> {
    const want = new Set(ids);
    const got = new Map<number, Record<string, any>>();
    await sender.until(() => {
      for (const f of sender.json) if ((f.type === 'stored' || f.type === 'error') && want.has(f.id as number)) got.set(f.id as number, f);
      return got.size === ids.length;
    }, `${ids.length} answers`, 60_000);
    return got;
  }

  /** Sends `extra` SENDs more than the limit allows; `accepted(frameBytes)` is that limit. */
  async function overflow(size: number, accepted: (frameBytes: number) => number, extra: number): Promise<void> {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    // Every frame has the same length: payloads are padded to `size`, labels fit in it.
    const frameBytes = encodeSend({
      id: 1,
      envelopeId: new Uint8Array(16),
      ttlSeconds: 3600,
      recipientUserId: bob.userId,
      targets: [{ deviceId: firstDevice(bob).deviceId, payload: new Uint8Array(size) }],
    }).length;
    const expectedAccepted = accepted(frameBytes);
    const count = expectedAccepted + extra;
    const sender = await world.connect(alice);
    const release = await lockMailbox(bob);
    const ids: number[] = [];
    for (let i = 0; i < count; i++) ids.push(sender.send(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload(`p ${i}`, size) }]).id);
    // The refusals come back while the accepted SENDs are still blocked.
    await sender.until(() => sender.errors().length >= count - expectedAccepted, 'the refusals', 60_000);
    const refused = sender.errors();
    expect(refused.every((e) => e.code === 'RATE_LIMITED')).toBe(true);
    expect(sender.json.filter((f) => f.type === 'stored')).toHaveLength(0);
    await release();

    const answers = await answersFor(sender, ids);
    const stored = ids.filter((id) => answers.get(id)!.type === 'stored');
    expect(stored).toHaveLength(expectedAccepted);
    // The first ones were accepted, in order; every later one was refused with its id.
    expect(stored).toEqual(ids.slice(0, expectedAccepted));
    expect(refused.map((e) => e.id)).toEqual(ids.slice(expectedAccepted));

    const reader = await world.connect(bob, undefined, { autoAck: true });
    const got = await reader.waitDelivered(expectedAccepted, 60_000);
    expect(got.map((d) => text(d.payload))).toEqual(Array.from({ length: expectedAccepted }, (_, i) => `p ${i}`));
    // The connection still works once answers have come back.
    expect((await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload('after') }])).type).toBe('stored');
  }

  it('returns the byte budget as SENDs are answered: three times the budget, a few at a time, is never refused', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const count = Math.ceil((3 * MAX_PENDING_SEND_BYTES) / MAX_ENVELOPE_BYTES);
    await sender.sendWindowed(count, (i) => ({ recipientUserId: bob.userId, targets: [{ deviceId: firstDevice(bob).deviceId, payload: payload(`big ${i}`, MAX_ENVELOPE_BYTES) }] }), 8);
    await sender.until(() => sender.answeredCount() >= count, 'every answer', 60_000);
    expect(sender.errors()).toEqual([]);
    expect(sender.json.filter((f) => f.type === 'stored')).toHaveLength(count);
  });

  it(`refuses SENDs beyond ${MAX_PENDING_SENDS} awaiting commit`, async () => {
    await overflow(16, () => MAX_PENDING_SENDS, 50);
  });

  it(`refuses SENDs beyond ${MAX_PENDING_SEND_BYTES} bytes awaiting commit`, async () => {
    await overflow(
      MAX_ENVELOPE_BYTES,
      (frameBytes) => {
        const fit = Math.floor(MAX_PENDING_SEND_BYTES / frameBytes);
        expect(fit).toBeLessThan(MAX_PENDING_SENDS); // the byte bound is the one that bites
        return fit;
      },
      8,
    );
  });
});
