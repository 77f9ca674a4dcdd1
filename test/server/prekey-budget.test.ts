/**
 * One-time prekey hand-outs are limited per TARGET device, in the database, so the limit
 * holds across relays: requests spread over two relay processes on one PostgreSQL
 * database share one budget. Beyond it bundles are still served, without one-time keys,
 * each counted in hermetic_one_time_prekeys_withheld_total, and a session still begins
 * from such a bundle (signed prekey and last-resort ML-KEM key).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore, createClient } from '../../client-sdk/node.js';
import { TestDevice, range } from '../helpers/device.js';
import { registerDevice } from '../helpers/flows.js';
import { metricSample, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { observe } from '../sdk/helpers.js';

/** A small budget that does not refill, so the counts below do not depend on time. */
const BURST = 6;

const WITHHELD = (kind: string, reason: string) => `hermetic_one_time_prekeys_withheld_total{kind="${kind}",reason="${reason}"}`;

async function withheld(relay: RelayProcess, kind: string, reason: string): Promise<number> {
  const res = await request(relay.baseUrl, 'GET', '/metrics');
  expect(res.status).toBe(200);
  return metricSample(res.text, WITHHELD(kind, reason)) ?? 0;
}

describe('one-time prekey budget per target device, shared by two relays', () => {
  if (!pgServer) {
    pgMissing('one-time prekey budget across relays');
    return;
  }

  let issuer: TestIssuer;
  let db: TestDatabase;
  let relays: [RelayProcess, RelayProcess];

  beforeAll(async () => {
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    db = await createTestDatabase();
    const env = { ...issuer.env, HERMETIC_PREKEY_HANDOUT_BURST: String(BURST), HERMETIC_PREKEY_HANDOUTS_PER_HOUR: '0' };
    const a = await startRelay({ env, databaseUrl: db.url });
    const b = await startRelay({ env, databaseUrl: db.url });
    relays = [a, b];
  });

  afterAll(async () => {
    await killAllRelays();
    await db?.drop();
  });

  it('bundles fetched through either relay draw on one budget; beyond it they come without one-time keys, counted per reason', async () => {
    const owner = new TestDevice('pb-owner');
    const ownerToken = await issuer.mint(owner.userId);
    await registerDevice(relays[0].baseUrl, ownerToken, owner);
    const upload = owner.fullUpload({ oneTime: 20, oneTimeKem: 20 });
    expect((await request(relays[0].baseUrl, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json: upload })).status).toBe(200);

    const before = await Promise.all(relays.map((r) => withheld(r, 'x25519', 'target_budget')));
    const peer = await issuer.mint('pb-peer');
    const path = `/v1/users/${owner.userId}/devices/${owner.deviceId}/bundle`;
    const fetched = [];
    // Alternating relays: each alone serves fewer than the burst.
    for (const i of range(0, 2 * BURST)) {
      const res = await request(relays[i % 2]!.baseUrl, 'POST', path, { token: peer });
      expect(res.status, res.text).toBe(200);
      fetched.push(res.body);
    }
    const withOtk = fetched.filter((b) => b.oneTimePrekey !== undefined);
    expect(withOtk).toHaveLength(BURST);
    expect(fetched.filter((b) => b.kemLastResort === false)).toHaveLength(BURST);
    // The rest still carry a usable bundle: the signed prekey and the last-resort key.
    for (const b of fetched.filter((x) => x.oneTimePrekey === undefined)) {
      expect(b.signedPrekey).toEqual(upload.signedPrekey);
      expect(b.kemLastResort).toBe(true);
      expect(b.kemPrekey).toEqual(upload.lastResortKemPrekey);
    }
    const counts = await request(relays[1].baseUrl, 'GET', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken });
    expect(counts.body).toMatchObject({ oneTimePrekeys: 20 - BURST, oneTimeKemPrekeys: 20 - BURST });

    const after = await Promise.all(relays.map((r) => withheld(r, 'x25519', 'target_budget')));
    expect(after[0]! - before[0]! + (after[1]! - before[1]!)).toBe(BURST);
    expect(after[0]! - before[0]!, 'relay A withheld some').toBeGreaterThan(0);
    expect(after[1]! - before[1]!, 'relay B withheld some').toBeGreaterThan(0);
  });

  it('a session begins from a bundle without one-time keys (signed prekey and last-resort key)', async () => {
    const zoe = observe(await createClient({ url: relays[1].baseUrl, userId: 'pb-zoe', token: () => issuer.mint('pb-zoe'), store: new MemoryStore() }));
    // Someone spends Zoe's budget.
    const drainer = await issuer.mint('pb-drainer');
    for (const i of range(0, BURST)) {
      const res = await request(relays[i % 2]!.baseUrl, 'POST', `/v1/users/pb-zoe/devices/${zoe.client.deviceId}/bundle`, { token: drainer });
      expect(res.body.oneTimePrekey, `fetch ${i}`).toBeDefined();
    }
    const before = await withheld(relays[0], 'x25519', 'target_budget');
    const yan = observe(await createClient({ url: relays[0].baseUrl, userId: 'pb-yan', token: () => issuer.mint('pb-yan'), store: new MemoryStore() }));
    await yan.client.send('pb-zoe', 'hello without a one-time key');
    const [m] = await zoe.received(1);
    expect(m!.body).toBe('hello without a one-time key');
    expect(await withheld(relays[0], 'x25519', 'target_budget')).toBe(before + 1);
    await yan.client.close();
    await zoe.client.close();
  });
});
