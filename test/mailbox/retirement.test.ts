/**
 * Retirement in a real relay process, with the shortest retirement age (1 s: partitions
 * of 500 ms, a pass every 125 ms), so an offline recipient's whole backlog is carried
 * forward several times a second:
 * - the relay is killed with SIGKILL while it retires (three times, at random moments):
 *   after the restart the recipient gets every envelope exactly once, at its sequence,
 *   with its bytes;
 * - once acknowledged, the envelopes are gone from the database within the documented
 *   bound (retirement age + a partition width + the receipt window + a tick).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, World, driverAvailable, metric, sendMany, sleep, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const COUNT = 2_000;
const KILLS = 3;

describe('SIGKILL during retirement on PostgreSQL', () => {
  if (!driverAvailable(POSTGRES)) {
    pgMissing('SIGKILL during retirement');
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(POSTGRES, { env: { HERMETIC_RETIREMENT_AGE_S: '1', HERMETIC_RECEIPT_WINDOW_S: '1' } });
  });

  afterAll(async () => {
    await world?.stop();
  });

  const carried = async (): Promise<number> => (await metric(world.relay, 'hermetic_retired_total{kind="carried"}')) ?? 0;

  it('an offline backlog carried forward by retirements survives kill -9 mid-retirement, and is gone soon after its ACK', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    await sendMany(sender, bob, COUNT, 'kept', { size: 300 });
    sender.close();

    for (let k = 0; k < KILLS; k++) {
      // Wait until this relay has carried the backlog forward at least once (so passes are
      // running), then kill it at a random moment of the next passes.
      const deadline = Date.now() + 20_000;
      while ((await carried()) < COUNT && Date.now() < deadline) await sleep(50);
      expect(await carried(), 'the backlog was carried forward').toBeGreaterThanOrEqual(COUNT);
      await sleep(Math.floor(Math.random() * 250));
      const killed = await world.relay.stop('SIGKILL');
      expect(killed.signal).toBe('SIGKILL');
      await world.restartRelay(0);
    }

    const recipient = await world.connect(bob, undefined, { autoAck: true });
    const got = await recipient.waitDelivered(COUNT, 60_000);
    expect(got.map((d) => d.seq)).toEqual(Array.from({ length: COUNT }, (_, i) => i + 1));
    expect(got.map((d) => text(d.payload))).toEqual(Array.from({ length: COUNT }, (_, i) => `kept ${i}`));
    expect(new Set(got.map((d) => Buffer.from(d.envelopeId).toString('hex'))).size).toBe(COUNT);

    // Gone within age + width + receipt window + tick (2.5 s + 125 ms); the ACK batch and
    // a pass of slack.
    const rows = async (): Promise<number> => {
      const c = new pg.Client({ connectionString: world.db!.url });
      await c.connect();
      try {
        const r = await c.query<{ n: string }>('SELECT count(*) AS n FROM envelopes WHERE user_id = $1', [bob.userId]);
        return Number(r.rows[0]!.n);
      } finally {
        await c.end();
      }
    };
    const until = Date.now() + 10_000;
    while ((await rows()) > 0 && Date.now() < until) await sleep(100);
    expect(await rows()).toBe(0);
    // Nothing more arrives after the backlog.
    await sleep(300);
    expect(recipient.delivered.length).toBe(COUNT);
    await world.expectRelaysUp();
  });
});
