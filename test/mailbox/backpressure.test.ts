/**
 * A stalled reader: a connected device stops reading its socket while 10,000 envelopes
 * of 1 KiB are sent to it. The relay must keep its memory bounded (it holds at most the
 * in-flight window for the connection; the rest stays in the database) and must not
 * deliver beyond the window while nothing is acknowledged; once the device reads again
 * it receives all 10,000, in order, nothing lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_INFLIGHT_ENVELOPES } from '../../protocol/limits.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { DRIVERS, World, driverAvailable, metric, sendMany, sleep, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const COUNT = 10_000;
const SIZE = 1024;
const RSS = 'hermetic_process_resident_memory_bytes';
const DELIVERED = 'hermetic_frames_out_total{type="deliver"}';
/** Generous: 10,000 × 1 KiB is 10 MB of payload; the bound is on growth, not a target. */
const RSS_GROWTH_BOUND = 150 * 1024 * 1024;
/** How long the reader stays stalled after the last SEND is stored. */
const STALL_AFTER_SENDS_MS = 2_000;

describe.each(DRIVERS)('a stalled reader on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`a stalled reader on ${driver.name}`);
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(driver);
  });

  afterAll(async () => {
    await world?.stop();
  });

  it(`${COUNT} envelopes of ${SIZE} bytes to a reader that stops reading: bounded memory, window respected, nothing lost`, async () => {
    const relay = world.relay;
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const reader = await world.connect(bob, undefined, { autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');

    const baseline = (await metric(relay, RSS))!;
    const deliveredBefore = (await metric(relay, DELIVERED)) ?? 0;
    expect(baseline).toBeGreaterThan(0);

    reader.pause();
    const samples: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push((await metric(relay, RSS))!);
        await sleep(200);
      }
    })();

    await sendMany(sender, bob, COUNT, 'env', { size: SIZE });
    await sleep(STALL_AFTER_SENDS_MS);
    const deliveredWhileStalled = ((await metric(relay, DELIVERED)) ?? 0) - deliveredBefore;
    sampling = false;
    await sampler;

    // While stalled, the device received (and so acknowledged) nothing: the relay may
    // have written at most one window.
    expect(reader.delivered).toHaveLength(0);
    expect(deliveredWhileStalled).toBeLessThanOrEqual(MAX_INFLIGHT_ENVELOPES);
    expect(deliveredWhileStalled).toBeGreaterThan(0);
    const peak = Math.max(...samples);
    expect(samples.length).toBeGreaterThan(3);
    expect(peak - baseline, `RSS baseline ${baseline}, peak ${peak}`).toBeLessThan(RSS_GROWTH_BOUND);

    const mb = (n: number): string => (n / 1024 / 1024).toFixed(0);
    console.info(`${driver.name}: relay RSS ${mb(baseline)} MB before, peak ${mb(peak)} MB while stalled; ${deliveredWhileStalled} DELIVERs written while stalled`);
    reader.resume();
    await reader.waitDelivered(COUNT, 120_000);
    expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: COUNT }, (_, i) => i + 1));
    expect(reader.delivered.every((d, i) => d.payload.length === SIZE && text(d.payload) === `env ${i}`)).toBe(true);
    expect(reader.closeCode).toBeUndefined();
    await world.expectRelaysUp();
  });
});
