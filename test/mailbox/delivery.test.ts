/**
 * DELIVER and ACK through a real relay, on each storage driver: the backlog after the
 * last ACK in order, then QUEUE_EMPTY, then live envelopes; cumulative ACKs remove what
 * they cover and a reconnect resumes after them; at most MAX_INFLIGHT_ENVELOPES are
 * unacknowledged at once; a second connection for a device replaces the first; expired
 * envelopes are announced as ranges, never skipped silently.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MAX_INFLIGHT_ENVELOPES } from '../../protocol/limits.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import type { RawClient } from './raw-client.js';
import { DRIVERS, type TestUser, World, driverAvailable, payload, sendMany, sleep, targetsFor, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

/** How long a test waits to see that nothing more arrives (a settle time, not a bound). */
const SETTLE_MS = 300;

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function delivers(from: number, to: number): string[] {
  return range(from, to).map((s) => `deliver ${s}`);
}

/** Every sequence 1..n is either delivered or inside an announced expired range, once. */
function coverage(c: RawClient): number[] {
  const seen: number[] = [];
  for (const r of c.received) {
    if (r.kind === 'deliver') seen.push(r.frame.seq);
    else if (r.frame.type === 'expired') seen.push(...range(Number(r.frame.from), Number(r.frame.to)));
  }
  return seen;
}

describe.each(DRIVERS)('delivery on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`delivery on ${driver.name}`);
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

  async function pair(): Promise<{ alice: TestUser; bob: TestUser; sender: RawClient }> {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    return { alice, bob, sender: await world.connect(alice) };
  }

  /** Reconnects `bob` and waits for the end of the backlog. */
  async function reconnect(bob: TestUser, opts: { autoAck?: boolean } = {}): Promise<RawClient> {
    const c = await world.connect(bob, bob.devices[0], opts);
    await c.waitJson((f) => f.type === 'queue_empty');
    return c;
  }

  it('streams the backlog in order, then QUEUE_EMPTY, then live envelopes', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 5, 'backlog');
    const reader = await reconnect(bob);
    expect(reader.stream()).toEqual([...delivers(1, 5), 'queue_empty 5']);
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(range(0, 4).map((i) => `backlog ${i}`));

    await sendMany(sender, bob, 2, 'live');
    await reader.waitDelivered(7);
    expect(reader.stream()).toEqual([...delivers(1, 5), 'queue_empty 5', 'deliver 6', 'deliver 7']);
    expect(reader.delivered.slice(5).map((d) => text(d.payload))).toEqual(['live 0', 'live 1']);
  });

  it('an empty mailbox answers QUEUE_EMPTY through 0, then delivers live', async () => {
    const { bob, sender } = await pair();
    const reader = await reconnect(bob);
    expect(reader.stream()).toEqual(['queue_empty 0']);
    await sendMany(sender, bob, 1, 'first');
    await reader.waitDelivered(1);
    expect(reader.stream()).toEqual(['queue_empty 0', 'deliver 1']);
  });

  it('a cumulative ACK removes what it covers: a reconnect resumes after it, unacked ones come again', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 6, 'm');
    const first = await reconnect(bob);
    expect(first.stream()).toEqual([...delivers(1, 6), 'queue_empty 6']);
    first.ack(2);
    first.ack(4);
    first.ack(3); // lower than what was acked: ignored, not an error
    await first.ping();
    first.close();
    await first.waitClosed();

    const second = await reconnect(bob);
    expect(second.stream()).toEqual([...delivers(5, 6), 'queue_empty 6']);
    expect(second.delivered.map((d) => text(d.payload))).toEqual(['m 4', 'm 5']);
    expect(second.errors()).toEqual([]);
    second.ack(6);
    await second.ping();
    second.close();
    await second.waitClosed();

    const third = await reconnect(bob);
    expect(third.stream()).toEqual(['queue_empty 6']);
    await sendMany(sender, bob, 1, 'after');
    await third.waitDelivered(1);
    expect(third.stream()).toEqual(['queue_empty 6', 'deliver 7']);
  });

  it(`delivers at most ${MAX_INFLIGHT_ENVELOPES} unacknowledged envelopes; an ACK opens the window`, async () => {
    const { bob, sender } = await pair();
    const total = MAX_INFLIGHT_ENVELOPES * 2 + 50;
    await sendMany(sender, bob, total, 'w');
    const reader = await world.connect(bob);
    await reader.waitDelivered(MAX_INFLIGHT_ENVELOPES);
    await sleep(SETTLE_MS);
    await reader.ping();
    expect(reader.delivered).toHaveLength(MAX_INFLIGHT_ENVELOPES);
    expect(reader.stream()).toEqual(delivers(1, MAX_INFLIGHT_ENVELOPES));

    // Acking 100 lets exactly 100 more out.
    reader.ack(100);
    await reader.waitDelivered(MAX_INFLIGHT_ENVELOPES + 100);
    await sleep(SETTLE_MS);
    await reader.ping();
    expect(reader.delivered).toHaveLength(MAX_INFLIGHT_ENVELOPES + 100);

    reader.ack(MAX_INFLIGHT_ENVELOPES + 100);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.stream()).toEqual([...delivers(1, total), `queue_empty ${total}`]);
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(range(0, total - 1).map((i) => `w ${i}`));
  });

  it('the window holds for live envelopes too, and nothing is lost behind it', async () => {
    const { bob, sender } = await pair();
    const reader = await reconnect(bob);
    const total = MAX_INFLIGHT_ENVELOPES + 100;
    await sendMany(sender, bob, total, 'live');
    await reader.waitDelivered(MAX_INFLIGHT_ENVELOPES);
    await sleep(SETTLE_MS);
    await reader.ping();
    expect(reader.delivered).toHaveLength(MAX_INFLIGHT_ENVELOPES);
    reader.ack(MAX_INFLIGHT_ENVELOPES);
    await reader.waitDelivered(total);
    expect(reader.stream()).toEqual(['queue_empty 0', ...delivers(1, total)]);
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(range(0, total - 1).map((i) => `live ${i}`));
  });

  it('an ACK beyond what was delivered is ACK_BEYOND_DELIVERED and the connection goes on', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 3, 'a');
    const reader = await reconnect(bob);
    reader.ack(4);
    const err = await reader.waitJson((f) => f.type === 'error');
    expect(err).toMatchObject({ code: 'ACK_BEYOND_DELIVERED' });
    reader.ack(3);
    await reader.ping();
    expect(reader.errors()).toHaveLength(1);
    await sendMany(sender, bob, 1, 'b');
    await reader.waitDelivered(4);
    reader.close();
    await reader.waitClosed();
    // The valid ACK took effect.
    const again = await reconnect(bob);
    expect(again.stream()).toEqual(['deliver 4', 'queue_empty 4']);
  });

  it('a second connection for the device replaces the first (4002) and continues the stream', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 4, 'r');
    const first = await reconnect(bob);
    first.ack(2);
    await first.ping();
    const second = await world.connect(bob);
    expect(await first.waitClosed()).toBe(CLOSE_CODES.REPLACED);
    await second.waitJson((f) => f.type === 'queue_empty');
    expect(second.stream()).toEqual([...delivers(3, 4), 'queue_empty 4']);
    await sendMany(sender, bob, 1, 'r');
    await second.waitDelivered(3);
    expect(second.stream().at(-1)).toBe('deliver 5');
    expect(first.delivered).toHaveLength(4);
  });

  it('resumes after a reconnect with everything sent while the device was away', async () => {
    const { bob, sender } = await pair();
    const reader = await reconnect(bob, { autoAck: true });
    await sendMany(sender, bob, 10, 'x');
    await reader.waitDelivered(10);
    await reader.until(() => reader.ackedThrough === 10, 'the auto ACK');
    await reader.ping();
    reader.terminate(); // an abrupt drop, not a clean close
    await reader.waitClosed();
    await sendMany(sender, bob, 10, 'y');
    const back = await reconnect(bob);
    expect(back.stream()).toEqual([...delivers(11, 20), 'queue_empty 20']);
    expect(back.delivered.map((d) => text(d.payload))).toEqual(range(0, 9).map((i) => `y ${i}`));
  });

  it('announces envelopes that expired while the device was offline, before the next envelope', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 1, 'long');
    await sendMany(sender, bob, 3, 'short', { ttlSeconds: 1 });
    await sleep(1_300);
    await sendMany(sender, bob, 1, 'later');
    const reader = await reconnect(bob);
    expect(reader.stream()).toEqual(['deliver 1', 'expired 2-4', 'deliver 5', 'queue_empty 5']);
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(['long 0', 'later 0']);
    // ACK through the expired range works, and they never come back.
    reader.ack(4);
    await reader.ping();
    expect(reader.errors()).toEqual([]);
    reader.ack(5);
    await reader.ping();
    reader.close();
    await reader.waitClosed();
    const again = await reconnect(bob);
    expect(again.stream()).toEqual(['queue_empty 5']);
  });

  it('announces an expired tail (nothing after it) and QUEUE_EMPTY through it', async () => {
    const { bob, sender } = await pair();
    await sendMany(sender, bob, 2, 'short', { ttlSeconds: 1 });
    await sleep(1_300);
    const reader = await reconnect(bob);
    expect(reader.stream()).toEqual(['expired 1-2', 'queue_empty 2']);
    reader.ack(2);
    await reader.ping();
    expect(reader.errors()).toEqual([]);
    await sendMany(sender, bob, 1, 'next');
    await reader.waitDelivered(1);
    expect(reader.stream().at(-1)).toBe('deliver 3');
  });

  it('envelopes that expire while held back by the window are announced, never skipped', async () => {
    const { bob, sender } = await pair();
    const reader = await reconnect(bob);
    await sendMany(sender, bob, MAX_INFLIGHT_ENVELOPES, 'fill');
    await reader.waitDelivered(MAX_INFLIGHT_ENVELOPES);
    await sendMany(sender, bob, 5, 'short', { ttlSeconds: 1 });
    await sendMany(sender, bob, 1, 'long');
    await sleep(1_300);
    reader.ack(MAX_INFLIGHT_ENVELOPES);
    const last = MAX_INFLIGHT_ENVELOPES + 6;
    await reader.until(() => coverage(reader).includes(last), 'the last envelope');
    expect(coverage(reader)).toEqual(range(1, last));
    expect(reader.delivered.at(-1)).toMatchObject({ seq: last });
    expect(text(reader.delivered.at(-1)!.payload)).toBe('long 0');
    expect(reader.delivered.filter((d) => text(d.payload).startsWith('short'))).toEqual([]);
  });

  it('fan-out: every device of the recipient receives its own copy at its own sequence', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 3);
    const sender = await world.connect(alice);
    const readers = await Promise.all(bob.devices.map((d) => world.connect(bob, d)));
    const stored = await sender.sendAndWait(bob.userId, targetsFor(bob, (d) => payload(`copy for ${d.deviceId}`)));
    expect(stored.type).toBe('stored');
    for (const [i, r] of readers.entries()) {
      await r.waitDelivered(1);
      expect(r.delivered.map((d) => [d.seq, text(d.payload)])).toEqual([[1, `copy for ${bob.devices[i]!.deviceId}`]]);
    }
  });
});
