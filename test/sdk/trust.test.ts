/**
 * Trust in the SDK: identities pinned on first use, a changed account root flagged and,
 * under the blocking policy (or once verified), blocking; device lists the relay forged
 * or rolled back refused; prekeys kept topped up and rotated. Against a relay on a
 * PostgreSQL database the test can reach into, to reset an account the way an operator
 * (or a lying relay) would.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock, MemoryStore, SdkError, limits } from '../../client-sdk/node.js';
import { DeviceChain } from '../../crypto/devices/chain.js';
import { createLinkRequest, linkEntry } from '../../crypto/devices/link.js';
import { NS, decodeRecord, encodeRecord } from '../../client-sdk/stores/store.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, sdkError, startWorld, waitFor } from './helpers.js';

/**
 * A fetch for a client that records the last bundle the relay served and, once `replay`
 * is set, answers bundle requests with that text instead (a relay replaying old keys).
 */
function bundleTap() {
  const tap = {
    captured: undefined as string | undefined,
    replay: undefined as string | undefined,
    fetch: async (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      const replay = tap.replay;
      if (/\/bundle$/.test(url) && replay !== undefined) return { status: 200, text: async () => replay };
      const res = await fetch(url, init);
      const text = await res.text();
      if (/\/bundle$/.test(url)) tap.captured = text;
      return { status: res.status, text: async () => text };
    },
  };
  return tap;
}

describe('SDK trust', () => {
  if (!pgServer) {
    pgMissing('SDK trust');
    return;
  }
  let db: TestDatabase;
  let world: SdkWorld;
  let sql: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    // maintainKeys below drains one device's one-time keys past the default per-device
    // hand-out budget (server/limits.ts), which this test is not about.
    world = await startWorld({ databaseUrl: db.url, env: { HERMETIC_PREKEY_HANDOUT_BURST: '1000' } });
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });

  afterAll(async () => {
    await sql?.end();
    await killAllRelays();
    await db?.drop();
  });

  /** What an operator does for a user who lost every device (SECURITY.md), or a lying relay. */
  async function resetAccount(userId: string): Promise<void> {
    await sql.query('DELETE FROM device_list_entries WHERE user_id = $1', [userId]);
    await sql.query('DELETE FROM devices WHERE user_id = $1', [userId]);
  }

  it('blocks sending after a changed identity under the blocking policy, until accepted', async () => {
    const alice = observe(await newClient(world, 'tr-alice', { trustPolicy: 'block' }));
    const bob1 = observe(await newClient(world, 'tr-bob'));
    await alice.client.send('tr-bob', 'hello old bob');
    await bob1.received(1);
    await bob1.client.close();
    await resetAccount('tr-bob');
    const bob2 = observe(await newClient(world, 'tr-bob'));
    // The relay refuses the stale device list; the repair finds a new root and stops.
    const refused = await sdkError(alice.client.send('tr-bob', 'to whom?'));
    expect(refused.code).toBe('IDENTITY_BLOCKED');
    const flag = await alice.flagged('IDENTITY_CHANGED');
    expect(flag).toMatchObject({ userId: 'tr-bob', evidence: { blocked: true } });
    expect(flag.evidence?.previousRoot).not.toBe(flag.evidence?.newRoot);
    expect((await sdkError(alice.client.send('tr-bob', 'still?'))).code).toBe('IDENTITY_BLOCKED');
    expect(await alice.client.trust.status('tr-bob')).toEqual({ verified: false, blocked: true });
    await alice.client.trust.accept('tr-bob');
    await alice.client.send('tr-bob', 'accepted');
    expect((await bob2.received(1)).map((m) => m.body)).toEqual(['accepted']);
    await alice.client.close();
    await bob2.client.close();
  });

  it('warns and goes on under the default policy; a verified identity that changes always blocks', async () => {
    const carol = observe(await newClient(world, 'tr-carol'));
    const dave1 = await newClient(world, 'tr-dave');
    await carol.client.send('tr-dave', 'first');
    // Safety numbers agree on both sides, and change with the identity.
    const before = await carol.client.safetyNumber('tr-dave');
    expect((await dave1.safetyNumber('tr-carol')).digits).toBe(before.digits);
    await dave1.close();
    await resetAccount('tr-dave');
    const dave2 = observe(await newClient(world, 'tr-dave'));
    await carol.client.send('tr-dave', 'after the change');
    expect((await carol.flagged('IDENTITY_CHANGED')).evidence).toMatchObject({ blocked: false });
    expect((await dave2.received(1))[0]!.body).toBe('after the change');
    expect((await carol.client.safetyNumber('tr-dave')).digits).not.toBe(before.digits);
    // Now verified, then changed again: blocked although the policy warns.
    await carol.client.trust.verify('tr-dave');
    await dave2.client.close();
    await resetAccount('tr-dave');
    const dave3 = await newClient(world, 'tr-dave');
    expect((await sdkError(carol.client.send('tr-dave', 'verified change'))).code).toBe('IDENTITY_BLOCKED');
    await carol.client.close();
    await dave3.close();
  });

  it('checks the trust policy after refreshing a stale list: a verified contact reset meanwhile gets nothing', async () => {
    // A clock the test moves past DEVICE_LIST_REFRESH_MS, so the next send re-fetches the list.
    let offset = 0;
    const clock = {
      now: () => Date.now() + offset,
      setTimeout: (fn: () => void, ms: number) => ({ id: setTimeout(fn, ms) }),
      clearTimeout: (h: { id: unknown }) => clearTimeout(h.id as ReturnType<typeof setTimeout>),
    };
    const alice = observe(await newClient(world, 'tr-stale-a', { clock }));
    const bob1 = observe(await newClient(world, 'tr-stale-b'));
    await alice.client.send('tr-stale-b', 'before');
    await bob1.received(1);
    await alice.client.trust.verify('tr-stale-b');
    await bob1.client.close();
    await resetAccount('tr-stale-b');
    const bob2 = observe(await newClient(world, 'tr-stale-b'));
    offset = limits.DEVICE_LIST_REFRESH_MS + 60_000;
    expect((await sdkError(alice.client.send('tr-stale-b', 'must not reach the new root'))).code).toBe('IDENTITY_BLOCKED');
    expect((await alice.flagged('IDENTITY_CHANGED')).evidence).toMatchObject({ wasVerified: true, blocked: true });
    // Nothing was stored for the new root's device: after a round trip from it, still nothing.
    await bob2.client.send('tr-stale-a', 'ping');
    await alice.received(1);
    expect(bob2.messages).toHaveLength(0);
    await alice.client.close();
    await bob2.client.close();
  });

  it('sees an account reset that left a shorter list as a changed identity, not as a broken list', async () => {
    const alice = observe(await newClient(world, 'tr-short-a'));
    const bob1 = observe(await newClient(world, 'tr-short-b'));
    const bobPhone = await newClient(world, 'tr-short-b', { deviceId: 'phone' });
    await bob1.client.linkDevice(bobPhone.linkCode!);
    await bobPhone.linked;
    await alice.client.send('tr-short-b', 'to both of the old devices');
    await bob1.received(1);
    await bob1.client.close();
    await bobPhone.close();
    await resetAccount('tr-short-b');
    const bob2 = observe(await newClient(world, 'tr-short-b'));
    // The old list had 2 entries, the new one 1: under the default 'warn' policy the new
    // root is flagged and sending goes on.
    await alice.client.send('tr-short-b', 'after the reset');
    expect((await alice.flagged('IDENTITY_CHANGED')).userId).toBe('tr-short-b');
    expect((await bob2.received(1))[0]!.body).toBe('after the reset');
    await bob2.client.send('tr-short-a', 'from the new root');
    expect((await alice.received(1))[0]!.body).toBe('from the new root');
    await alice.client.close();
    await bob2.client.close();
  });

  it('refuses a device list the relay forged or rolled back (DEVICE_LIST_INVALID), and says so', async () => {
    let forge: ((answer: Record<string, unknown>) => Record<string, unknown>) | undefined;
    const lyingFetch = async (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      const res = await fetch(url, init);
      const text = await res.text();
      if (forge && init.method === 'GET' && /\/v1\/users\/tr-erin\/devices/.test(url) && res.status === 200) {
        return { status: 200, text: async () => JSON.stringify(forge!(JSON.parse(text) as Record<string, unknown>)) };
      }
      return { status: res.status, text: async () => text };
    };
    const frank = observe(await newClient(world, 'tr-frank', { fetch: lyingFetch }));
    const erin = observe(await newClient(world, 'tr-erin'));
    await frank.client.send('tr-erin', 'pinned');
    await erin.received(1);
    // The relay adds a device of its own to Erin's list, "signed" by her phone.
    forge = (answer) => {
      const entries = (answer.entries as string[]).map((e) => decodeBase64url(e)!);
      const all = [...entries];
      const chain = DeviceChain.verify('tr-erin', all);
      if (!chain.ok) throw new Error('the real list does not verify');
      const evil = IdentityKeyPair.generate();
      const forged = linkEntry(chain.chain, erin.client.deviceId, evil, createLinkRequest(evil, 'tr-erin', 'relay-device'));
      return { ...answer, length: (answer.length as number) + 1, entries: [...(answer.entries as string[]), encodeBase64url(forged)] };
    };
    const err = await sdkError(frank.client.devices('tr-erin'));
    expect(err.code).toBe('DEVICE_LIST_INVALID');
    expect((await frank.flagged('DEVICE_LIST_INVALID')).userId).toBe('tr-erin');
    // A list shorter than the one pinned (a hidden revocation, a rollback).
    forge = (answer) => ({ ...answer, length: 0, entries: [] });
    expect((await sdkError(frank.client.devices('tr-erin'))).code).toBe('DEVICE_LIST_INVALID');
    // Never encrypted to the forged device: the verified list is unchanged.
    forge = undefined;
    expect((await frank.client.devices('tr-erin')).map((d) => d.deviceId)).toEqual([erin.client.deviceId]);
    await frank.client.close();
    await erin.client.close();
  });

  it('refuses a bundle whose keys go back to ones seen before (a replayed old bundle)', async () => {
    const tap = bundleTap();
    const kimStore = new MemoryStore();
    const kim = observe(await newClient(world, 'tr-kim', { fetch: tap.fetch, store: kimStore }));
    const leo = observe(await newClient(world, 'tr-leo'));
    await kim.client.send('tr-leo', 'first session');
    await leo.received(1);
    expect(tap.captured).toBeDefined();
    // Kim loses her session and fetches Leo's bundle again; the relay serves the old one,
    // whose one-time keys Kim has seen (and used) before.
    const sessions = await kimStore.list('sessions');
    await kimStore.commit(sessions.map(([key]) => ({ ns: 'sessions', key, delete: true as const })));
    tap.replay = tap.captured;
    const err = await sdkError(kim.client.send('tr-leo', 'again'));
    expect(err.code).toBe('DEVICE_LIST_INVALID');
    expect((await kim.flagged('DEVICE_LIST_INVALID')).detail).toMatch(/seen before/);
    await kim.client.close();
    await leo.client.close();
  });

  it('refuses a bundle whose signed prekey or last-resort key goes back to an older one (a relay serving rotated-out keys)', async () => {
    const clock = new ManualClock(Date.now());
    const tap = bundleTap();
    const monaStore = new MemoryStore();
    const mona = observe(await newClient(world, 'tr-mona', { fetch: tap.fetch, store: monaStore }));
    const ned = observe(await newClient(world, 'tr-ned', { clock }));
    // Bundles of Ned's carry his last-resort ML-KEM key once his one-time ones are gone.
    const spendKemKeys = () => sql.query('DELETE FROM one_time_prekeys WHERE user_id = $1 AND kind = 2', ['tr-ned']);
    const forgetSessions = async () => {
      const sessions = await monaStore.list('sessions');
      await monaStore.commit(sessions.map(([key]) => ({ ns: 'sessions', key, delete: true as const })));
    };
    // Ned's client tops its prekeys up whenever it comes online; let that finish first
    // (maintainKeys runs after it), or it could refill the keys spent after it.
    const settled = async () => {
      await waitFor('ned online', () => (ned.client.state.state === 'online' ? true : undefined));
      await ned.client.maintainKeys();
    };
    await settled();
    await spendKemKeys();
    await mona.client.send('tr-ned', 'one');
    await ned.received(1);
    const old = JSON.parse(tap.captured!) as Record<string, any>;
    expect(old.kemLastResort).toBe(true);

    // Ned rotates both signed keys; Mona starts again and sees the new ones.
    // (The jump also times out Ned's connection heartbeat: he reconnects, and tops up again.)
    clock.advance(limits.SIGNED_PREKEY_ROTATION_MS + 1);
    await settled();
    await spendKemKeys();
    await forgetSessions();
    await mona.client.send('tr-ned', 'two');
    await ned.received(2);
    const current = JSON.parse(tap.captured!) as Record<string, any>;
    expect(current.signedPrekey.keyId).toBeGreaterThan(old.signedPrekey.keyId);
    expect(current.kemLastResort).toBe(true);
    expect(current.kemPrekey.keyId).toBeGreaterThan(old.kemPrekey.keyId);

    // The relay serves the old signed prekey again...
    await forgetSessions();
    tap.replay = JSON.stringify(old);
    expect((await sdkError(mona.client.send('tr-ned', 'three'))).code).toBe('DEVICE_LIST_INVALID');
    expect((await mona.flagged('DEVICE_LIST_INVALID')).detail).toMatch(/signed prekey \d+ is older than/);
    // ...or the current one with the old last-resort key.
    const { oneTimePrekey: _seen, ...withoutOneTime } = current;
    tap.replay = JSON.stringify({ ...withoutOneTime, kemPrekey: old.kemPrekey });
    const err = await sdkError(mona.client.send('tr-ned', 'four'));
    expect(err.code).toBe('DEVICE_LIST_INVALID');
    expect(err.message).toMatch(/ML-KEM prekey \d+ was seen before/);
    await mona.client.close();
    await ned.client.close();
  });

  it('maintainKeys refills one-time prekeys others used below the low-water mark, and rotates the signed prekey when due', async () => {
    const clock = new ManualClock(Date.now());
    const store = new MemoryStore();
    const gina = await newClient(world, 'tr-gina', { clock, store });
    let requester = 0;
    const counts = async () => {
      const res = await fetch(`${world.relay.baseUrl}/v1/devices/${gina.deviceId}/keys`, { headers: { authorization: `Bearer ${await world.issuer.mint('tr-gina')}` } });
      return (await res.json()) as { oneTimePrekeys: number; oneTimeKemPrekeys: number };
    };
    expect(await counts()).toMatchObject({ oneTimePrekeys: limits.PREKEY_HIGH_WATER, oneTimeKemPrekeys: limits.PREKEY_HIGH_WATER });
    // Each fetch by another user: no requester's rate limit is in the way.
    const bundle = async () => {
      const token = await world.issuer.mint(`tr-harry-${requester++}`);
      const res = await fetch(`${world.relay.baseUrl}/v1/users/tr-gina/devices/${gina.deviceId}/bundle`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      return (await res.json()) as { signedPrekey: { keyId: number } };
    };
    const drain = limits.PREKEY_HIGH_WATER - limits.PREKEY_LOW_WATER + 1;
    for (let i = 0; i < drain; i++) await bundle();
    expect((await counts()).oneTimePrekeys).toBe(limits.PREKEY_LOW_WATER - 1);
    await gina.maintainKeys();
    expect(await counts()).toMatchObject({ oneTimePrekeys: limits.PREKEY_HIGH_WATER, oneTimeKemPrekeys: limits.PREKEY_HIGH_WATER });
    const spkBefore = (await bundle()).signedPrekey.keyId;
    clock.advance(limits.SIGNED_PREKEY_ROTATION_MS + 1);
    await gina.maintainKeys();
    expect((await bundle()).signedPrekey.keyId).toBeGreaterThan(spkBefore);
    await gina.close();
  });

  it('catches up when its store is behind what it published (restored from a backup): KEY_ID_REUSED moves its key ids on', async () => {
    const clock = new ManualClock(Date.now());
    const store = new MemoryStore();
    const pia = await newClient(world, 'tr-pia', { clock, store, connect: false });
    const spk = async () => {
      const token = await world.issuer.mint(`tr-quinn-${Math.random().toString(36).slice(2)}`);
      const res = await fetch(`${world.relay.baseUrl}/v1/users/tr-pia/devices/${pia.deviceId}/bundle`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      return ((await res.json()) as { signedPrekey: { keyId: number } }).signedPrekey.keyId;
    };
    const published = await spk();
    // The store goes back to before anything was published, and the signed keys are due.
    const raw = (await store.get(NS.meta, 'device'))!;
    const record = decodeRecord<{ nextId: { otk: number; spk: number; kem: number } }>(raw);
    await store.commit([{ ns: NS.meta, key: 'device', value: encodeRecord({ ...record, nextId: { otk: 1, spk: 1, kem: 1 } }) }]);
    clock.advance(limits.SIGNED_PREKEY_ROTATION_MS + 1);
    await pia.maintainKeys();
    expect(await spk()).toBeGreaterThan(published);
    await pia.close();
  });

  it('key ids keep growing across restarts and concurrent top-ups, so the relay never answers KEY_ID_REUSED', async () => {
    const clock = new ManualClock(Date.now());
    const store = new MemoryStore();
    const first = await newClient(world, 'tr-hugo', { clock, store, connect: false });
    const deviceId = first.deviceId;
    const bundle = async () => {
      const token = await world.issuer.mint(`tr-iris-${Math.random().toString(36).slice(2)}`);
      const res = await fetch(`${world.relay.baseUrl}/v1/users/tr-hugo/devices/${deviceId}/bundle`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      return (await res.json()) as { signedPrekey: { keyId: number }; kemPrekey: { keyId: number }; kemLastResort: boolean };
    };
    const before = await bundle();
    await first.close();
    // The same store, opened again (an app restart), with both signed keys due.
    clock.advance(limits.SIGNED_PREKEY_ROTATION_MS + 1);
    const again = await newClient(world, 'tr-hugo', { clock, store, connect: false });
    expect(again.deviceId).toBe(deviceId);
    // Top-ups asked for at once run one after the other; each upload is accepted.
    await Promise.all([again.maintainKeys(), again.maintainKeys(), again.maintainKeys()]);
    const after = await bundle();
    expect(after.signedPrekey.keyId).toBeGreaterThan(before.signedPrekey.keyId);
    await again.close();
  });
});
