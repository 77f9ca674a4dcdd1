/**
 * The periodic catch-up scan does work in proportion to news, not to connections: with
 * many idle devices connected, an envelope whose notice was lost and a revocation whose
 * notice was missed are what its statements return (two rows), the envelope is
 * delivered and the revoked device's connection is closed (4003); a scan after that
 * returns nothing, while still comparing every connected mailbox.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { pgMissing, pgServer } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { POSTGRES, World, commitUnannounced, firstDevice, metric, sleep, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

const IDLE_DEVICES = 12;
const CHECKED = 'hermetic_catchup_mailboxes_checked_total';
const FOUND = 'hermetic_catchup_mailboxes_found_total';

describe('the catch-up scan returns only mailboxes with news', () => {
  if (!pgServer) {
    pgMissing('the catch-up scan returns only mailboxes with news');
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(POSTGRES);
  });

  afterAll(async () => {
    await world?.stop();
  });

  it('finds the lost envelope and the missed revocation among idle connections, and nothing once they are handled', async () => {
    const relay = world.relay;
    const count = async (series: string): Promise<number> => (await metric(relay, series)) ?? 0;
    const idle = await Promise.all(Array.from({ length: IDLE_DEVICES }, (_, i) => world.user(`idle-${i}`)));
    const bob = await world.user('bob');
    const carol = await world.user('carol');
    const clients = await Promise.all([...idle, bob, carol].map((u) => world.connect(u, undefined, { autoAck: true })));
    await Promise.all(clients.map((c) => c.waitJson((f) => f.type === 'queue_empty')));
    const reader = clients[IDLE_DEVICES]!;
    const revoked = clients[IDLE_DEVICES + 1]!;
    const found0 = await count(FOUND);

    // What the relay misses when notices are lost: an envelope committed for bob with
    // no NOTIFY, and carol's mailbox gone (her device revoked) with no notice either.
    await commitUnannounced(world, bob, 'no notice', async (sql) => {
      await sql.query('DELETE FROM mailboxes WHERE user_id = $1 AND device_id = $2', [carol.userId, firstDevice(carol).deviceId]);
    });

    // The periodic scan (every CATCHUP_INTERVAL_MS) recovers both.
    await reader.waitDelivered(1, 15_000);
    expect(reader.delivered.map((d) => [d.seq, text(d.payload)])).toEqual([[1, 'no notice']]);
    expect(await revoked.waitClosed(15_000)).toBe(CLOSE_CODES.DEVICE_REVOKED);
    expect((await count(FOUND)) - found0).toBe(2);

    // The next full scan compares every remaining connection and returns no row.
    const checked1 = await count(CHECKED);
    for (let i = 0; i < 300 && (await count(CHECKED)) - checked1 < IDLE_DEVICES + 1; i++) await sleep(50);
    expect((await count(CHECKED)) - checked1).toBeGreaterThanOrEqual(IDLE_DEVICES + 1);
    expect((await count(FOUND)) - found0).toBe(2);
    await reader.ping();
    expect(reader.delivered).toHaveLength(1);
    for (const c of clients.slice(0, IDLE_DEVICES)) expect(c.closeCode).toBeUndefined();
  });
});
