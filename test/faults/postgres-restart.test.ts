/**
 * PostgreSQL restarted under a running relay, in the middle of a stream of SENDs: a
 * private cluster (the shared server other suites use is never touched) restarted fast,
 * stopped in immediate mode and started again, and killed with SIGKILL. Every envelope
 * answered STORED is delivered to the recipient (still connected through the outage)
 * exactly as stored; SENDs during the outage are answered UNAVAILABLE, and resending them
 * (same envelope ids) stores each exactly once; /readyz says 503
 * while the database is down and 200 once it is back; the LISTEN subscription comes back
 * by itself; and the same relay process, never restarted, stores and delivers again.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url } from '../../protocol/base64url.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { PrivatePg, privatePgAvailable, privatePgMissing } from '../helpers/private-pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { RawClient } from '../mailbox/raw-client.js';
import { POSTGRES, World, firstDevice, hex, metric, payload, text } from '../mailbox/world.js';
import { readyz, waitMetricAbove, waitReady } from './probes.js';
import { SendStream, expectAllStoredDelivered } from './send-stream.js';

afterAll(async () => {
  await killAllRelays();
});

/** STOREDs before the fault, and again after it (the stream really spans it). */
const STORED_BEFORE = 100;
const STORED_AFTER = 100;
/** SENDs answered with an error while the database is down. */
const ERRORS_DURING = 20;
const LISTEN_RECONNECTS = 'hermetic_listen_reconnects_total';

describe('PostgreSQL restarted under a running relay', () => {
  if (!privatePgAvailable) {
    privatePgMissing('PostgreSQL restarted under a running relay');
    return;
  }

  let cluster: PrivatePg;
  let world: World;

  beforeAll(async () => {
    cluster = await PrivatePg.start();
    world = await World.start(POSTGRES, { database: await cluster.createDatabase() });
  });

  afterAll(async () => {
    await world?.stop();
    await cluster?.destroy();
  });

  afterEach(async () => {
    // A test that failed mid-outage leaves the database up for the next.
    if (cluster.postmasterPid() === undefined) await cluster.start();
    world.closeClients();
  });

  type Fault = { name: string; outage: boolean; inject: () => Promise<void>; recover: () => Promise<void> };
  const faults: Fault[] = [
    { name: 'a fast restart (pg_ctl restart -m fast)', outage: false, inject: () => cluster.restart('fast'), recover: async () => undefined },
    { name: 'an immediate-mode stop, then a start', outage: true, inject: () => cluster.stop('immediate'), recover: () => cluster.start() },
    { name: 'kill -9 of the postmaster, then a start', outage: true, inject: () => cluster.kill9(), recover: () => cluster.start() },
  ];

  it.each(faults)('$name: nothing STORED is lost, the relay stays up and recovers', async (fault) => {
    const relay = world.relay;
    const pid = relay.pid;
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const reader: RawClient = await world.connect(bob, undefined, { autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');

    const reconnectsBefore = (await metric(relay, LISTEN_RECONNECTS)) ?? 0;
    const latecomer = await world.user('carol');

    const stream = new SendStream(sender, bob, 'pg');
    stream.start();
    await stream.waitMoreStored(STORED_BEFORE);
    const faultAt = Date.now();
    await fault.inject();
    let readyDuring: number | undefined;
    if (fault.outage) {
      // The database is down: SENDs keep coming and are refused, the relay says so.
      readyDuring = await readyz(relay);
      expect(readyDuring).toBe(503);
      await stream.waitMoreErrors(ERRORS_DURING);
      // A device connecting now cannot be checked: told to come back later, not refused.
      const late = await RawClient.connect(relay.wsUrl, firstDevice(latecomer), latecomer.token, { auth: false });
      const nonce = decodeBase64url(String(late.json.find((f) => f.type === 'challenge')!.nonce))!;
      late.sendJson(firstDevice(latecomer).authFrame(nonce, latecomer.token, relay.wsUrl));
      expect((await late.waitJson((f) => f.type === 'error')).code).toBe('UNAVAILABLE');
      expect(await late.waitClosed()).toBe(CLOSE_CODES.TRY_AGAIN_LATER);
      await fault.recover();
    }
    await waitReady(relay);
    await stream.waitMoreStored(STORED_AFTER);
    await stream.stop();

    const errors = stream.errors();
    expect(errors.filter((e) => e.code !== 'UNAVAILABLE'), 'errors other than UNAVAILABLE').toEqual([]);
    if (fault.outage) expect(errors.length).toBeGreaterThanOrEqual(ERRORS_DURING);
    const report = await expectAllStoredDelivered(reader, stream);

    // The sender resends what was refused, same ids: each is stored once, those whose
    // first try had committed after all are answered as duplicates.
    const resent = await stream.resendFailed(sender);
    expect(resent.filter((f) => f.type !== 'stored')).toEqual([]);
    expect(resent.filter((f) => f.duplicate === true)).toHaveLength(report.committedUnanswered);
    const total = stream.stored().length + errors.length;
    await reader.until(() => new Set(reader.delivered.map((d) => d.seq)).size >= total, `${total} envelopes delivered`);
    const seqsByEnvelope = new Map<string, Set<number>>();
    for (const d of reader.delivered) {
      const id = hex(d.envelopeId);
      seqsByEnvelope.set(id, (seqsByEnvelope.get(id) ?? new Set()).add(d.seq));
    }
    expect(seqsByEnvelope.size).toBe(total);
    expect([...seqsByEnvelope.values()].filter((seqs) => seqs.size !== 1)).toEqual([]);

    // Sending still works on the same relay process, and is delivered.
    const last = await sender.sendAndWait(bob.userId, [{ deviceId: firstDevice(bob).deviceId, payload: payload('after the fault') }]);
    expect(last.type).toBe('stored');
    await reader.until(() => reader.delivered.some((d) => text(d.payload) === 'after the fault'), 'the last envelope');
    expect(relay.pid).toBe(pid);
    expect(relay.proc.exitCode).toBeNull();
    await world.expectRelaysUp();
    expect(reader.closeCode).toBeUndefined();
    // The outage was never mistaken for a bug, and LISTEN was subscribed again.
    expect(relay.logs().filter((l) => l.msg === 'internal error')).toEqual([]);
    await waitMetricAbove(relay, LISTEN_RECONNECTS, reconnectsBefore);
    expect(relay.logs().some((l) => l.msg === 'listen connection restored' && Date.parse(String(l.time)) >= faultAt)).toBe(true);

    console.info(
      `${fault.name}: ${stream.sentCount} SENDs, ${stream.stored().length} STORED, ${errors.length} UNAVAILABLE; ` +
        `${report.delivered} delivered (${report.committedUnanswered} committed without a STORED, ${report.redelivered} redelivered), ${total} after resending the refused; ` +
        `/readyz during the outage: ${readyDuring ?? 'n/a'}`,
    );
    world.closeClients();
  });
});
