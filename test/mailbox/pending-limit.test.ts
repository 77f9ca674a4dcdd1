/**
 * A device cannot pipeline SENDs without bound: while its SENDs wait for a commit (here:
 * the recipient's mailbox row is held locked by another transaction), at most
 * MAX_PENDING_SENDS frames or MAX_PENDING_SEND_BYTES bytes are accepted; the excess is
 * answered RATE_LIMITED, each with its request id. The budget is the device's, not its
 * connection's: a device that reconnects while its SENDs are queued finds it still used.
 * Once the database moves again, every accepted SEND is stored and delivered, and the
 * connection keeps working; answered SENDs give their bytes back, so a long stream
 * through one connection never hits it. Over the whole relay, SENDs awaiting their answer
 * hold at most HERMETIC_MAX_PENDING_SEND_BYTES; beyond that, RELAY_BUSY. And a SEND that
 * would take a mailbox past its quota is answered MAILBOX_FULL.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSend } from '../../protocol/envelopes.js';
import { MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES, MAX_PENDING_SEND_BYTES, MAX_PENDING_SENDS } from '../../protocol/limits.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, type TestUser, World, driverAvailable, firstDevice, metric, payload, text } from './world.js';
import type { RawClient } from './raw-client.js';

afterAll(async () => {
  await killAllRelays();
});

/** Holds `user`'s mailbox row locked, so no SEND to them can commit, until released. */
async function lockMailbox(world: World, user: TestUser): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: world.db!.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('SELECT 1 FROM mailboxes WHERE user_id = $1 FOR UPDATE', [user.userId]);
  return async () => {
    await client.query('ROLLBACK');
    await client.end();
  };
}

describe('pending SENDs per device (PostgreSQL)', () => {
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
    const release = await lockMailbox(world, bob);
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

  it('a device that reconnects finds its budget still used by the SENDs it left queued', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const to = [{ deviceId: firstDevice(bob).deviceId, payload: payload('queued', 16) }];
    const first = await world.connect(alice);
    const release = await lockMailbox(world, bob);
    for (let i = 0; i < MAX_PENDING_SENDS; i++) first.send(bob.userId, to);
    await first.ping(); // the relay has read them all
    expect(first.errors()).toEqual([]);
    first.close();
    await first.waitClosed();

    const second = await world.connect(alice);
    expect(await second.answer(second.send(bob.userId, to).id)).toMatchObject({ type: 'error', code: 'RATE_LIMITED' });
    await release();
    // The queued SENDs were stored (the closed connection just never heard), and their
    // answers gave the budget back.
    const reader = await world.connect(bob, undefined, { autoAck: true });
    await reader.waitDelivered(MAX_PENDING_SENDS, 60_000);
    expect(await second.sendAndWait(bob.userId, to)).toMatchObject({ type: 'stored' });
  });
});

describe('relay-wide pending bytes and mailbox quotas (PostgreSQL)', () => {
  if (!driverAvailable(POSTGRES)) {
    pgMissing('relay-wide pending bytes and mailbox quotas');
    return;
  }

  const MAILBOX_MAX = 3;
  let world: World;
  beforeAll(async () => {
    world = await World.start(POSTGRES, {
      env: { HERMETIC_MAX_PENDING_SEND_BYTES: String(MAX_FRAME_BYTES), HERMETIC_MAILBOX_MAX_ENVELOPES: String(MAILBOX_MAX) },
    });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('refuses a SEND with RELAY_BUSY once the SENDs awaiting their answer hold the relay\'s total, whoever sent them', async () => {
    const alice = await world.user('alice');
    const carol = await world.user('carol');
    const bob = await world.user('bob');
    const to = (label: string) => [{ deviceId: firstDevice(bob).deviceId, payload: payload(label, MAX_ENVELOPE_BYTES) }];
    const frameBytes = encodeSend({ id: 1, envelopeId: new Uint8Array(16), ttlSeconds: 3600, recipientUserId: bob.userId, targets: to('x') }).length;
    const fit = Math.floor(MAX_FRAME_BYTES / frameBytes);
    expect(fit).toBe(MAILBOX_MAX); // each device's own budget is far from spent

    const a = await world.connect(alice);
    const c = await world.connect(carol);
    const release = await lockMailbox(world, bob);
    const fromAlice = Array.from({ length: fit - 1 }, (_, i) => a.send(bob.userId, to(`a ${i}`)).id);
    await a.ping();
    const accepted = c.send(bob.userId, to('c 0')).id;
    const refused = c.send(bob.userId, to('c 1')).id;
    const busy = await c.answer(refused);
    expect(busy).toMatchObject({ type: 'error', code: 'RELAY_BUSY', id: refused });
    expect(await metric(world.relay, 'hermetic_pending_send_bytes')).toBe(fit * frameBytes);
    await release();
    for (const id of fromAlice) expect(await a.answer(id)).toMatchObject({ type: 'stored' });
    expect(await c.answer(accepted)).toMatchObject({ type: 'stored' });
    expect(await metric(world.relay, 'hermetic_pending_send_bytes')).toBe(0);
  });

  it(`refuses a SEND that would put more than the quota (${MAILBOX_MAX} envelopes) in a mailbox with MAILBOX_FULL, until the device catches up`, async () => {
    const alice = await world.user('alice');
    const dave = await world.user('dave');
    const to = (label: string) => [{ deviceId: firstDevice(dave).deviceId, payload: payload(label) }];
    const sender = await world.connect(alice);
    for (let i = 0; i < MAILBOX_MAX; i++) expect(await sender.sendAndWait(dave.userId, to(`m ${i}`))).toMatchObject({ type: 'stored' });
    const { id } = sender.send(dave.userId, to('one too many'));
    expect(await sender.answer(id)).toEqual({
      type: 'error',
      code: 'MAILBOX_FULL',
      id,
      message: expect.any(String),
      details: { userId: dave.userId, devices: [firstDevice(dave).deviceId], maxEnvelopes: MAILBOX_MAX, maxBytes: expect.any(Number) },
    });
    const reader = await world.connect(dave, undefined, { autoAck: true });
    await reader.waitDelivered(MAILBOX_MAX);
    // Acknowledged envelopes leave the mailbox once the ACK batch is written.
    const db = new pg.Client({ connectionString: world.db!.url });
    await db.connect();
    try {
      const acked = async () => Number((await db.query('SELECT acked_seq FROM mailbox_cursors WHERE user_id = $1', [dave.userId])).rows[0]?.acked_seq ?? 0);
      for (let i = 0; i < 200 && (await acked()) < MAILBOX_MAX; i++) await new Promise((r) => setTimeout(r, 25));
      expect(await acked()).toBe(MAILBOX_MAX);
    } finally {
      await db.end();
    }
    const answer = await sender.sendAndWait(dave.userId, to('after the ACK'));
    expect(answer).toMatchObject({ type: 'stored' });
  });
});
