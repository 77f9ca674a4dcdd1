/**
 * Two relay processes on one PostgreSQL database lose their notice bus mid-stream and
 * get it back: on PostgreSQL NOTIFY, the LISTEN backends are terminated; on NATS, relay
 * B's connection to the NATS server (through a TCP proxy) is cut and refused for a
 * while. Throughout, everything sent from A to a device on B is delivered in order; once
 * the bus is back (each relay counts its resubscription and runs a catch-up scan at
 * once), wake-ups are live by notice again, and a device still has one live connection
 * across the fleet: connecting on one relay closes its older connection on the other.
 * The NATS password in the relays' URL appears in none of their output.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { CATCHUP_INTERVAL_MS } from '../../server/limits.js';
import { NATS_BUS, NOTIFY_BUS } from '../helpers/buses.js';
import { natsEnv, natsPrefix, natsUrl } from '../helpers/nats.js';
import { killAllRelays } from '../helpers/relay.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import type { RawClient } from '../mailbox/raw-client.js';
import { POSTGRES, type TestUser, World, firstDevice, metric, payload, text } from '../mailbox/world.js';
import { waitMetricAbove } from '../faults/probes.js';

afterAll(async () => {
  await killAllRelays();
});

/**
 * Sends `rounds` envelopes one at a time from `sender` to `to` (read by `reader`), each
 * waiting for its delivery, and returns the median time from send to delivery.
 */
async function liveRounds(sender: RawClient, reader: RawClient, to: TestUser, rounds: number, label: string): Promise<number> {
  const latencies: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const before = reader.delivered.length;
    const t0 = performance.now();
    expect((await sender.sendAndWait(to.userId, [{ deviceId: firstDevice(to).deviceId, payload: payload(`${label} ${i}`) }])).type).toBe('stored');
    await reader.waitDelivered(before + 1);
    latencies.push(performance.now() - t0);
  }
  latencies.sort((x, y) => x - y);
  return latencies[Math.floor(rounds / 2)]!;
}

/** Connecting `user`'s device on relay `on` closes its connection `old` on the other relay. */
async function expectReplaced(world: World, user: TestUser, old: RawClient, on: number): Promise<RawClient> {
  const fresh = await world.connect(user, undefined, { relay: on, autoAck: true });
  expect(await old.waitClosed()).toBe(CLOSE_CODES.REPLACED);
  await fresh.waitJson((f) => f.type === 'queue_empty');
  await fresh.ping();
  expect(fresh.closeCode).toBeUndefined();
  return fresh;
}

/** Live, lost, restored: the common course of both buses; `lose` and `restore` act on the bus. */
async function lossAndRecovery(world: World, bus: 'pg' | 'nats', lose: () => Promise<void>, restore: () => Promise<void>): Promise<void> {
  const [a, b] = world.relays as [typeof world.relay, typeof world.relay];
  const RESUBSCRIBED = `hermetic_notifier_resubscriptions_total{notifier="${bus}"}`;
  const CATCHUP = 'hermetic_catchup_runs_total{reason="resubscribed"}';
  const alice = await world.user('alice');
  const bob = await world.user('bob');
  const sender = await world.connect(alice, undefined, { relay: 0 });
  const reader = await world.connect(bob, undefined, { relay: 1, autoAck: true });
  await reader.waitJson((f) => f.type === 'queue_empty');
  const before = { resubscribed: (await metric(b, RESUBSCRIBED)) ?? 0, catchUp: (await metric(b, CATCHUP)) ?? 0 };

  // Live by notice: far below the catch-up scan's CATCHUP_INTERVAL_MS / 2 on average.
  expect(await liveRounds(sender, reader, bob, 5, 'before')).toBeLessThan(CATCHUP_INTERVAL_MS / 5);

  await lose();
  // Stored while B cannot hear A: delivered all the same (by a catch-up scan).
  const during = 5;
  for (let i = 0; i < during; i++) {
    expect((await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload(`during ${i}`) }])).type).toBe('stored');
  }
  await restore();
  await waitMetricAbove(b, RESUBSCRIBED, before.resubscribed);
  await waitMetricAbove(b, CATCHUP, before.catchUp);
  await reader.waitDelivered(5 + during);

  // Live by notice again.
  expect(await liveRounds(sender, reader, bob, 5, 'after')).toBeLessThan(CATCHUP_INTERVAL_MS / 5);
  expect(reader.delivered.map((d) => d.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
  expect(reader.delivered.map((d) => text(d.payload))).toEqual([
    ...Array.from({ length: 5 }, (_, i) => `before ${i}`),
    ...Array.from({ length: during }, (_, i) => `during ${i}`),
    ...Array.from({ length: 5 }, (_, i) => `after ${i}`),
  ]);

  // One live connection per device, both ways, over the restored bus.
  const onA = await expectReplaced(world, bob, reader, 0);
  await expectReplaced(world, bob, onA, 1);
  for (const r of [a, b]) expect(r.proc.exitCode).toBeNull();
  await world.expectRelaysUp();
}

describe('two relays whose LISTEN backends are terminated mid-stream', () => {
  if (!NOTIFY_BUS.available) {
    NOTIFY_BUS.missing('two relays whose LISTEN backends are terminated');
    return;
  }
  let world: World | undefined;
  afterAll(async () => {
    world?.closeClients();
    await world?.stop();
  });

  it('delivery across relays goes on, wake-ups are live again, and a newer connection still closes the older one', async () => {
    world = await World.start(POSTGRES, { relays: 2 });
    const admin = new pg.Client({ connectionString: world.db!.url });
    await admin.connect();
    try {
      await lossAndRecovery(
        world,
        'pg',
        async () => {
          const r = await admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'",
          );
          // One LISTEN connection per relay.
          expect(r.rowCount).toBe(2);
        },
        async () => undefined, // the relays connect again by themselves
      );
    } finally {
      await admin.end();
    }
  });
});

describe('two relays on NATS, B\'s connection to NATS cut and refused for a while', () => {
  if (!NATS_BUS.available) {
    NATS_BUS.missing('two relays on NATS with a lost connection');
    return;
  }
  let world: World | undefined;
  let proxy: TcpProxy | undefined;
  afterAll(async () => {
    world?.closeClients();
    await world?.stop();
    await proxy?.close();
  });

  it('delivery across relays goes on, wake-ups are live again, and a newer connection still closes the older one', async () => {
    const u = new URL(natsUrl);
    proxy = await TcpProxy.start({ host: u.hostname, port: Number(u.port || 4222) });
    const p = proxy;
    const prefix = natsPrefix();
    // A reaches NATS directly, B through the proxy; both with a password in the URL (the
    // test server has no users and ignores it), which must never reach a log.
    const password = `pw-${prefix.slice(-12)}`;
    const withPassword = (url: string): string => url.replace('nats://', `nats://hermetic:${password}@`);
    world = await World.start(POSTGRES, { relays: 1, env: natsEnv(prefix, withPassword(natsUrl)) });
    await world.startRelay({ env: natsEnv(prefix, withPassword(`nats://127.0.0.1:${p.port}`)) });
    const b = world.relays[1]!;
    await lossAndRecovery(
      world,
      'nats',
      async () => {
        p.refuse();
        p.cut();
        // B has noticed (its reconnection attempts are refused).
        for (let i = 0; i < 200 && !b.logs().some((l) => l.msg === 'NATS connection lost; reconnecting'); i++) await new Promise((r) => setTimeout(r, 25));
        expect(b.logs().some((l) => l.msg === 'NATS connection lost; reconnecting')).toBe(true);
      },
      async () => {
        p.open();
      },
    );
    for (const r of world.relays) expect(r.stdout() + r.stderr()).not.toContain(password);
  });
});
