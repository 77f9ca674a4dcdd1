/**
 * The network between a relay and PostgreSQL fails: relay A reaches the database through
 * a TCP proxy the test controls, relay B directly. A cut resets every connection (and
 * new ones are refused for a while); a blackhole lets nothing through, so statements
 * and connection attempts hang until the relay's bound (HERMETIC_DB_TIMEOUT_MS).
 * Throughout, every envelope answered STORED is delivered as stored, SENDs that cannot
 * be written are answered UNAVAILABLE (and stored once when resent), /readyz on A says
 * 503 without hanging, and A recovers by itself. After a cut, A's LISTEN subscription
 * comes back, so wake-ups for envelopes committed on B reach A by NOTIFY again rather
 * than by the periodic catch-up scan; and a revocation whose notice A missed still
 * closes the revoked device's connection on A.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import type { TestDevice } from '../helpers/device.js';
import { fetchChain } from '../helpers/flows.js';
import { request } from '../helpers/http.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays } from '../helpers/relay.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import type { RawClient } from '../mailbox/raw-client.js';
import { POSTGRES, World, firstDevice, metric, payload, sleep, text } from '../mailbox/world.js';
import { readyz, waitMetricAbove, waitReady } from './probes.js';
import { SendStream, expectAllStoredDelivered } from './send-stream.js';

afterAll(async () => {
  await killAllRelays();
});

/** The relays' database bound: short, so that a blackhole is noticed quickly. */
const DB_TIMEOUT_MS = 2_000;
const STORED_BEFORE = 100;
const STORED_AFTER = 100;
const ERRORS_DURING = 20;
const NOTICES = 'hermetic_notices_total';
const LISTEN_RECONNECTS = 'hermetic_listen_reconnects_total';

describe('the connection between a relay and PostgreSQL cut or blackholed by a proxy', () => {
  if (!pgServer) {
    pgMissing('database connection faults through a proxy');
    return;
  }
  const server = pgServer;

  let proxy: TcpProxy;
  let db: TestDatabase;
  let world: World;
  let a: RelayProcess;
  let b: RelayProcess;

  beforeAll(async () => {
    const target = new URL(server.adminUrl);
    proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 5432) });
    db = await createTestDatabase();
    world = await World.start(POSTGRES, {
      relays: 2,
      database: db,
      databaseUrlFor: (i, url) => (i === 0 ? proxy.via(url) : url),
      env: { HERMETIC_DB_TIMEOUT_MS: String(DB_TIMEOUT_MS) },
    });
    [a, b] = world.relays as [RelayProcess, RelayProcess];
  });

  afterAll(async () => {
    await world?.stop();
    await proxy?.close();
  });

  afterEach(() => {
    // A test that failed mid-fault leaves the network healed for the next.
    proxy.open();
    world.closeClients();
  });

  type Fault = { name: string; inject: () => void };
  const faults: Fault[] = [
    {
      name: 'every connection cut, new ones refused for a while',
      inject: () => {
        proxy.refuse();
        proxy.cut();
      },
    },
    { name: 'a blackhole (nothing passes, nothing closes)', inject: () => proxy.blackhole() },
  ];

  it.each(faults)('$name: nothing STORED is lost, SENDs are refused UNAVAILABLE, A recovers', async (fault) => {
    const pid = a.pid;
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 0 });
    const reader: RawClient = await world.connect(bob, undefined, { relay: 0, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');

    const stream = new SendStream(sender, bob, 'proxy');
    stream.start();
    await stream.waitMoreStored(STORED_BEFORE);
    fault.inject();
    // A answers that it is not ready (and does not hang doing so); B, unaffected, is.
    const readyDuring = await readyz(a);
    expect(readyDuring).toBe(503);
    await waitReady(b);
    await stream.waitMoreErrors(ERRORS_DURING);
    proxy.open();
    await waitReady(a);
    await stream.waitMoreStored(STORED_AFTER);
    await stream.stop();

    const errors = stream.errors();
    expect(errors.filter((e) => e.code !== 'UNAVAILABLE'), 'errors other than UNAVAILABLE').toEqual([]);
    const report = await expectAllStoredDelivered(reader, stream);
    const resent = await stream.resendFailed(sender);
    expect(resent.filter((f) => f.type !== 'stored')).toEqual([]);
    expect(resent.filter((f) => f.duplicate === true)).toHaveLength(report.committedUnanswered);

    const last = await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload('after the fault') }]);
    expect(last.type).toBe('stored');
    await reader.until(() => reader.delivered.some((d) => text(d.payload) === 'after the fault'), 'the last envelope');
    expect(a.pid).toBe(pid);
    await world.expectRelaysUp();
    expect(a.logs().filter((l) => l.msg === 'internal error')).toEqual([]);
    console.info(
      `${fault.name}: ${stream.sentCount} SENDs, ${stream.stored().length} STORED, ${errors.length} UNAVAILABLE; ` +
        `${report.delivered} delivered (${report.committedUnanswered} committed without a STORED, ${report.redelivered} redelivered); ` +
        `resent ${resent.length}: ${resent.filter((f) => f.duplicate === true).length} duplicates`,
    );
    world.closeClients();
  });

  it('after a cut, A hears B\'s commits by NOTIFY again: LISTEN is restored and wake-ups come from notices', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice, undefined, { relay: 1 });
    const reader = await world.connect(bob, undefined, { relay: 0, autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    const to = [{ deviceId: firstDevice(bob).deviceId, payload: payload('before') }];
    expect((await sender.sendAndWait(bob.userId, to)).type).toBe('stored');
    await reader.waitDelivered(1);

    const reconnects = (await metric(a, LISTEN_RECONNECTS)) ?? 0;
    proxy.refuse();
    proxy.cut();
    // Refused long enough for several reconnect attempts to fail first.
    await sleep(1_000);
    proxy.open();
    await waitMetricAbove(a, LISTEN_RECONNECTS, reconnects);
    expect(a.logs().some((l) => l.msg === 'listen connection restored')).toBe(true);

    // Each envelope committed on B is delivered on A, and A heard a notice for each.
    const rounds = 5;
    const noticesBefore = (await metric(a, NOTICES)) ?? 0;
    for (let i = 0; i < rounds; i++) {
      const stored = await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload(`after ${i}`) }]);
      expect(stored.type).toBe('stored');
      await reader.waitDelivered(2 + i);
    }
    expect(reader.delivered.map((d) => text(d.payload))).toEqual(['before', ...Array.from({ length: rounds }, (_, i) => `after ${i}`)]);
    expect(((await metric(a, NOTICES)) ?? 0) - noticesBefore).toBeGreaterThanOrEqual(rounds);
    await world.expectRelaysUp();
    world.closeClients();
  });

  it('a revocation A could not hear (its LISTEN was down) still closes the device on A (4003) once A is back', async () => {
    const victor = await world.user('victor', 2);
    const [phone, laptop] = victor.devices as [TestDevice, TestDevice];
    const onA = await world.connect(victor, laptop, { relay: 0 });
    await onA.waitJson((f) => f.type === 'queue_empty');

    // A's connections are cut and refused while the phone revokes the laptop through B:
    // the revocation's NOTIFY reaches B but not A.
    const reconnects = (await metric(a, LISTEN_RECONNECTS)) ?? 0;
    proxy.refuse();
    proxy.cut();
    const chain = await fetchChain(b.baseUrl, victor.token, victor.userId);
    const res = await request(b.baseUrl, 'POST', '/v1/devices', { token: victor.token, json: { entry: encodeBase64url(phone.revokeEntry(chain, laptop.deviceId)) } });
    expect(res.status, res.text).toBe(201);
    await sleep(500);
    expect(onA.closeCode).toBeUndefined();
    proxy.open();
    await waitMetricAbove(a, LISTEN_RECONNECTS, reconnects);
    expect(await onA.waitClosed()).toBe(CLOSE_CODES.DEVICE_REVOKED);
  });
});
