/**
 * The SDK when things go wrong around it: a store that fails or returns garbage, a relay
 * whose HTTP answers fail for a while, a relay (or anyone on the line) that claims the
 * device was revoked, envelopes that expired unread, concurrent first sends, and calls
 * on a closed client. Nothing may be acknowledged that was not handled, and nothing may
 * end the device on the relay's word alone.
 */
import { WebSocket as NodeWebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore, SdkError, type StoreWrite, type Transport, type WebSocketConstructor, webSocketTransport } from '../../client-sdk/node.js';
import { rootEntry } from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, sdkError, startWorld, waitFor } from './helpers.js';

/** A store whose next commits that write to the inbox fail, and whose session records
 * for one sender can be made to read as garbage. */
class FaultyStore extends MemoryStore {
  failInboxCommits = 0;
  corruptSessionsOf: string | undefined;

  override async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    if (this.corruptSessionsOf !== undefined && ns === 'sessions' && key.startsWith(`${this.corruptSessionsOf} `)) return new TextEncoder().encode('{"v":1,"current":');
    return super.get(ns, key);
  }

  override async commit(writes: readonly StoreWrite[]): Promise<void> {
    if (this.failInboxCommits > 0 && writes.some((w) => w.ns === 'inbox')) {
      this.failInboxCommits--;
      throw new Error('disk full');
    }
    return super.commit(writes);
  }
}

describe('SDK under faults', () => {
  let world: SdkWorld;

  beforeAll(async () => {
    world = await startWorld();
  });

  afterAll(async () => {
    await killAllRelays();
  });

  it('acknowledges nothing after a batch it could not store: the relay delivers it again', async () => {
    const store = new FaultyStore();
    const bob = observe(await newClient(world, 'ho-bob1', { store }));
    const errors: SdkError[] = [];
    bob.client.on('error', (e) => errors.push(e));
    const alice = observe(await newClient(world, 'ho-alice1'));
    const carol = observe(await newClient(world, 'ho-carol1'));
    await alice.client.send('ho-bob1', 'm1');
    await bob.received(1);
    store.failInboxCommits = 1;
    await alice.client.send('ho-bob1', 'm2');
    await carol.client.send('ho-bob1', 'm3');
    const got = await bob.received(3, 30_000);
    expect(got.map((m) => m.body).sort()).toEqual(['m1', 'm2', 'm3']);
    expect(errors.some((e) => /disk full/.test(e.message))).toBe(true);
    for (const c of [alice, bob, carol]) await c.client.close();
  });

  it('flags an envelope whose stored session does not read (DECRYPT_FAILED) and heals, without losing later ones', async () => {
    const store = new FaultyStore();
    const bob = observe(await newClient(world, 'ho-bob2', { store }));
    const alice = observe(await newClient(world, 'ho-alice2'));
    const carol = observe(await newClient(world, 'ho-carol2'));
    await alice.client.send('ho-bob2', 'm1');
    await bob.received(1);
    store.corruptSessionsOf = 'ho-alice2';
    const sent = await alice.client.send('ho-bob2', 'm2');
    const flag = await bob.flagged('DECRYPT_FAILED');
    expect(flag).toMatchObject({ userId: 'ho-alice2', envelopeId: sent.envelopeId, evidence: { error: 'STORE_CORRUPT' } });
    store.corruptSessionsOf = undefined;
    await carol.client.send('ho-bob2', 'm3');
    await waitFor('m3', () => bob.messages.find((m) => m.body === 'm3'));
    // Later messages from the same sender still decrypt.
    await alice.client.send('ho-bob2', 'm4');
    await waitFor('m4', () => bob.messages.find((m) => m.body === 'm4'));
    for (const c of [alice, bob, carol]) await c.client.close();
  });

  it('does not drop a message while the sender\'s device list cannot be fetched; it arrives once the relay answers', async () => {
    let failures = 2;
    const flakyFetch = async (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      if (failures > 0 && init.method === 'GET' && /\/v1\/users\/ho-alice3\/devices/.test(url)) {
        failures--;
        return { status: 503, text: async () => '{"error":{"code":"UNAVAILABLE","message":"the database is not answering"}}' };
      }
      const res = await fetch(url, init);
      const text = await res.text();
      return { status: res.status, text: async () => text };
    };
    const bob = observe(await newClient(world, 'ho-bob3', { fetch: flakyFetch }));
    const alice = observe(await newClient(world, 'ho-alice3'));
    await alice.client.send('ho-bob3', 'first message');
    expect((await bob.received(1, 30_000))[0]!.body).toBe('first message');
    expect(failures).toBe(0);
    expect(bob.flags.filter((f) => f.code === 'UNKNOWN_SENDER')).toEqual([]);
    for (const c of [alice, bob]) await c.client.close();
  });

  it('is not revoked on the relay\'s word alone: it checks its own verified list and reconnects', async () => {
    const real = webSocketTransport(NodeWebSocket as unknown as WebSocketConstructor);
    let lie = 0;
    const transport: Transport = {
      open(url, h) {
        if (lie === 0) return real.open(url, h);
        lie--;
        setTimeout(() => {
          h.onOpen();
          h.onMessage('{"type":"error","code":"DEVICE_NOT_FOUND","message":"no such device"}');
          h.onClose(4001, '');
        }, 10);
        return { send: () => undefined, close: () => undefined };
      },
    };
    const store = new MemoryStore();
    const alice = observe(await newClient(world, 'ho-alice4', { store, transport }));
    const bob = observe(await newClient(world, 'ho-bob4'));
    const errors: SdkError[] = [];
    alice.client.on('error', (e) => errors.push(e));
    await waitFor('online', () => (alice.client.state.state === 'online' ? true : undefined));
    lie = 1;
    alice.client.disconnect();
    alice.client.connect();
    await waitFor('the relay-protocol error', () => errors.find((e) => e.code === 'RELAY_PROTOCOL_ERROR'));
    await waitFor('online again', () => (alice.client.state.state === 'online' ? true : undefined), 30_000);
    await alice.client.send('ho-bob4', 'still here');
    expect((await bob.received(1))[0]!.body).toBe('still here');
    await alice.client.close();
    // And after a restart from the same store.
    const again = observe(await newClient(world, 'ho-alice4', { store }));
    await again.client.send('ho-bob4', 'after restart');
    await bob.received(2);
    for (const c of [again, bob]) await c.client.close();
  });

  it('flags envelopes that expired before delivery (ENVELOPES_EXPIRED)', async () => {
    const store = new MemoryStore();
    const bob = observe(await newClient(world, 'ho-bob5', { store }));
    const alice = observe(await newClient(world, 'ho-alice5', { ttlSeconds: 1 }));
    await alice.client.send('ho-bob5', 'warm-up');
    await bob.received(1);
    await bob.client.close();
    await alice.client.send('ho-bob5', 'expires unread');
    await new Promise((r) => setTimeout(r, 2_200));
    const bob2 = observe(await newClient(world, 'ho-bob5', { store }));
    const flag = await bob2.flagged('ENVELOPES_EXPIRED');
    expect(flag.evidence).toMatchObject({ from: 2, to: 2 });
    expect(bob2.messages).toHaveLength(0);
    for (const c of [alice, bob2]) await c.client.close();
  });

  it('sets up one session per device for concurrent first sends (no false replay alarm)', async () => {
    const alice = observe(await newClient(world, 'ho-alice6'));
    const bob = observe(await newClient(world, 'ho-bob6'));
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map((i) => alice.client.send('ho-bob6', `hi ${i}`)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect((await bob.received(5)).map((m) => m.body).sort()).toEqual(['hi 1', 'hi 2', 'hi 3', 'hi 4', 'hi 5']);
    expect(alice.flags).toEqual([]);
    for (const c of [alice, bob]) await c.client.close();
  });

  it('links only a confirmed key, and tells every device whom a message was for', async () => {
    const alice = observe(await newClient(world, 'ho-alice8'));
    const laptop = observe(await newClient(world, 'ho-alice8', { deviceId: 'laptop' }));
    const bob = observe(await newClient(world, 'ho-bob8'));
    const code = laptop.client.linkCode!;
    const shown = alice.client.inspectLinkCode(code);
    expect(shown).toEqual({ userId: 'ho-alice8', deviceId: 'laptop', fingerprint: laptop.client.fingerprint });
    // A code carrying another key than the one the person confirmed signs nothing.
    expect((await sdkError(alice.client.linkDevice(code, { fingerprint: alice.client.fingerprint }))).code).toBe('INVALID_LINK_CODE');
    expect((await alice.client.devices()).map((d) => d.deviceId)).toEqual([alice.client.deviceId]);
    await alice.client.linkDevice(code, { fingerprint: shown.fingerprint });
    await laptop.client.linked;
    await alice.client.send('ho-bob8', 'for bob');
    const [atBob] = await bob.received(1);
    const [copy] = await laptop.received(1);
    expect(atBob).toMatchObject({ body: 'for bob', to: 'ho-bob8', from: { userId: 'ho-alice8', deviceId: alice.client.deviceId } });
    expect(copy).toMatchObject({ body: 'for bob', to: 'ho-bob8', from: { userId: 'ho-alice8', deviceId: alice.client.deviceId } });
    for (const c of [alice, laptop, bob]) await c.client.close();
  });

  it('refuses its own list restarted from a root the relay made, and copies nothing to the relay\'s device', async () => {
    const evil = IdentityKeyPair.generate();
    const forgedRoot = encodeBase64url(rootEntry(evil, 'ho-alice9', 'relay-device'));
    let forge = false;
    const asked: string[] = [];
    const lyingFetch = async (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      if (forge) asked.push(`${init.method} ${new URL(url).pathname}`);
      if (forge && init.method === 'GET' && /\/v1\/users\/ho-alice9\/devices/.test(url)) {
        return { status: 200, text: async () => JSON.stringify({ userId: 'ho-alice9', length: 1, entries: [forgedRoot], devices: [] }) };
      }
      const res = await fetch(url, init);
      const text = await res.text();
      return { status: res.status, text: async () => text };
    };
    const alice = observe(await newClient(world, 'ho-alice9', { fetch: lyingFetch }));
    const bob = observe(await newClient(world, 'ho-bob9'));
    await alice.client.send('ho-bob9', 'before');
    await bob.received(1);
    forge = true;
    expect((await sdkError(alice.client.devices())).code).toBe('DEVICE_LIST_INVALID');
    expect((await alice.flagged('DEVICE_LIST_INVALID')).userId).toBe('ho-alice9');
    expect(alice.flags.filter((f) => f.code === 'IDENTITY_CHANGED')).toEqual([]);
    expect(asked.filter((a) => a.includes('relay-device'))).toEqual([]);
    forge = false;
    expect((await alice.client.devices()).map((d) => d.deviceId)).toEqual([alice.client.deviceId]);
    for (const c of [alice, bob]) await c.client.close();
  });

  it('drops an outbox entry its TTL ran out on before the relay stored it (SEND_EXPIRED)', async () => {
    const bob = observe(await newClient(world, 'ho-bob10'));
    const alice = observe(await newClient(world, 'ho-alice10', { ttlSeconds: 1 }));
    await alice.client.send('ho-bob10', 'warm-up');
    await bob.received(1);
    alice.client.disconnect();
    const late = alice.client.send('ho-bob10', 'too late');
    await new Promise((r) => setTimeout(r, 1_200));
    alice.client.connect();
    expect((await sdkError(late)).code).toBe('SEND_EXPIRED');
    await alice.client.send('ho-bob10', 'after');
    await waitFor('after', () => bob.messages.find((m) => m.body === 'after'));
    expect(bob.messages.map((m) => m.body)).toEqual(['warm-up', 'after']);
    for (const c of [alice, bob]) await c.client.close();
  });

  it('refuses calls on a closed client and ends its message iterators', async () => {
    const alice = await newClient(world, 'ho-alice7');
    expect((await sdkError(alice.send('ho-alice7', Number.NaN))).code).toBe('INVALID_ARGUMENT');
    expect((await sdkError(alice.send('ho-alice7', { n: Number.POSITIVE_INFINITY }))).code).toBe('INVALID_ARGUMENT');
    expect((await sdkError(alice.devices('not a user id'))).code).toBe('INVALID_ARGUMENT');
    const it = alice.messages();
    const next = it.next();
    await alice.close();
    expect(await next).toEqual({ value: undefined, done: true });
    expect((await sdkError(alice.pending())).code).toBe('CLIENT_CLOSED');
    expect((await sdkError(alice.trust.status('ho-bob7'))).code).toBe('CLIENT_CLOSED');
    expect((await sdkError(alice.trust.verify('ho-bob7'))).code).toBe('CLIENT_CLOSED');
  });
});
