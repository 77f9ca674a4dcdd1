/**
 * The SDK when things go wrong: a recipient offline for the whole send, a relay that goes
 * down with messages in the outbox, envelopes the relay delivers twice or alters, a
 * session lost on one side (it heals), and API misuse (typed errors).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore, SdkError, limits } from '../../client-sdk/node.js';
import { decodeRecord } from '../../client-sdk/stores/store.js';
import { decodeDeliver, encodeDeliver } from '../../protocol/envelopes.js';
import { killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { type SdkWorld, newClient, observe, sdkError, startWorld, tappedTransport, waitFor } from './helpers.js';

let world: SdkWorld;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await killAllRelays();
});

const online = (c: { client: { state: { state: string } } }) => waitFor('online', () => (c.client.state.state === 'online' ? true : undefined));

describe('SDK resilience', () => {
  it('a recipient offline for the whole send gets everything once it connects', async () => {
    const alice = await newClient(world, 'res-alice');
    const bob = observe(await newClient(world, 'res-bob', { connect: false }));
    for (let i = 0; i < 5; i++) await alice.send('res-bob', `offline ${i}`);
    expect(bob.messages).toEqual([]);
    bob.client.connect();
    expect((await bob.received(5)).map((m) => m.body)).toEqual([0, 1, 2, 3, 4].map((i) => `offline ${i}`));
    await alice.close();
    await bob.client.close();
  });

  it('messages sent while the relay is down wait in the outbox and arrive once it is back', { timeout: 120_000 }, async () => {
    const dataDir = makeTempDir();
    const first = await startRelay({ dataDir, env: world.issuer.env });
    // The clients reach the relay through a fixed address, so that the restarted relay can
    // listen wherever it gets a port (its old one may be held by closed connections).
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: first.port });
    const w = { relay: first, issuer: world.issuer };
    const url = proxy.via(first.baseUrl);
    const alice = observe(await newClient(w, 'down-alice', { url }));
    const bob = observe(await newClient(w, 'down-bob', { url }));
    await alice.client.send('down-bob', 'before');
    expect((await bob.received(1))[0]!.body).toBe('before');
    await first.stop('SIGTERM');
    await waitFor('alice offline', () => (alice.client.state.state !== 'online' ? true : undefined));
    const pending = alice.client.send('down-bob', 'while down');
    let settled = false;
    void pending.then(() => (settled = true), () => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    // The same relay comes back on the same data.
    const second = await startRelay({ dataDir, env: world.issuer.env });
    proxy.retarget({ host: '127.0.0.1', port: second.port });
    const stored = await pending;
    expect(stored.recipient).toBe('down-bob');
    expect((await bob.received(2))[1]!.body).toBe('while down');
    await alice.client.close();
    await bob.client.close();
    await second.stop('SIGTERM');
    await proxy.close();
  });

  it('an envelope delivered again (its ACK lost) is offered once', async () => {
    const alice = await newClient(world, 'dup-alice');
    let dropped = false;
    const bobClient = await newClient(world, 'dup-bob', {
      faultHook: (point) => {
        // The first time: lose the connection after storing, before the ACK goes out.
        if (point === 'persisted' && !dropped) {
          dropped = true;
          bobClient.disconnect();
          setTimeout(() => bobClient.connect(), 50);
        }
      },
    });
    const bob = observe(bobClient);
    await online(bob);
    await alice.send('dup-bob', 'once');
    await alice.send('dup-bob', 'twice?');
    await bob.received(2);
    await new Promise((r) => setTimeout(r, 500));
    expect(dropped).toBe(true);
    expect(bob.messages.map((m) => m.body)).toEqual(['once', 'twice?']);
    await alice.close();
    await bobClient.close();
  });

  it('envelopes the relay altered are flagged and acknowledged; the session stays usable', async () => {
    const tap = tappedTransport();
    const alice = observe(await newClient(world, 'tamper-alice'));
    const bob = observe(await newClient(world, 'tamper-bob', { transport: tap.transport }));
    await online(bob);
    await alice.client.send('tamper-bob', 'clean');
    await bob.received(1);
    // The relay rewrites the next four envelopes' payloads.
    const rewrites: Array<(p: Uint8Array) => Uint8Array> = [
      (p) => p.subarray(0, 7), // truncated
      (p) => Uint8Array.of(0x71, ...p.subarray(1)), // unknown version
      (p) => Uint8Array.from(p, (x, i) => (i >= p.length - 64 ? x ^ 0x5a : x)), // garbage ciphertext
      () => new Uint8Array(300 * 1024).fill(0x11), // oversized: the frame does not decode
    ];
    let n = 0;
    tap.tamper = (frame) => {
      const d = decodeDeliver(frame);
      const rewrite = rewrites[n++];
      if (rewrite === undefined) return frame;
      const payload = rewrite(d.payload);
      if (payload.length <= 256 * 1024) return encodeDeliver({ ...d, payload });
      // Too large for the codec: build the frame by hand with the big payload.
      const head = encodeDeliver({ ...d, payload: new Uint8Array(0) });
      const out = new Uint8Array(head.length + payload.length);
      out.set(head);
      new DataView(out.buffer).setUint32(head.length - 4, payload.length);
      out.set(payload, head.length);
      return out;
    };
    for (let i = 0; i < 4; i++) await alice.client.send('tamper-bob', `tampered ${i}`);
    await waitFor('four flags', () => (bob.flags.filter((f) => f.code === 'MALFORMED_ENVELOPE' || f.code === 'DECRYPT_FAILED').length >= 4 ? true : undefined));
    const codes = bob.flags.filter((f) => f.userId === 'tamper-alice').map((f) => f.code);
    expect(codes).toEqual(['MALFORMED_ENVELOPE', 'MALFORMED_ENVELOPE', 'DECRYPT_FAILED', 'MALFORMED_ENVELOPE']);
    for (const f of bob.flags) expect(f.envelopeId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    // Nothing was offered for them, and the next message decrypts.
    await alice.client.send('tamper-bob', 'after');
    expect((await bob.received(2)).map((m) => m.body)).toEqual(['clean', 'after']);
    await alice.client.close();
    await bob.client.close();
  });

  it('a replayed initial message goes to the session it started, and is refused as a replay', async () => {
    const tap = tappedTransport();
    const bobStore = new MemoryStore();
    const alice = await newClient(world, 'replay-alice');
    const bob = observe(await newClient(world, 'replay-bob', { transport: tap.transport, store: bobStore }));
    await online(bob);
    await alice.send('replay-bob', 'first');
    await bob.received(1);
    const firstPayload = decodeDeliver(tap.received[0]!).payload;
    expect(firstPayload[0]).toBe(0x12);
    // The relay delivers the first initial message again, as the second envelope.
    tap.tamper = (frame) => encodeDeliver({ ...decodeDeliver(frame), payload: firstPayload });
    await alice.send('replay-bob', 'second');
    const flag = await bob.flagged('REPLAY');
    expect(flag.evidence).toMatchObject({ error: 'REPLAYED_MESSAGE' });
    expect(bob.flags.map((f) => f.code)).not.toContain('DECRYPT_FAILED');
    // No second session was started from it.
    const sessions = await bobStore.list('sessions');
    expect(sessions.length).toBe(1);
    expect(decodeRecord<{ archived: unknown[] }>(sessions[0]![1]).archived).toEqual([]);
    expect(bob.messages.map((m) => m.body)).toEqual(['first']);
    await alice.close();
    await bob.client.close();
  });

  it('a session lost on one side heals: DECRYPT_FAILED is flagged, the sender gets a new session, later messages decrypt', async () => {
    const bobStore = new MemoryStore();
    const aliceStore = new MemoryStore();
    const alice = observe(await newClient(world, 'heal-alice', { store: aliceStore }));
    const bob = observe(await newClient(world, 'heal-bob', { store: bobStore }));
    await alice.client.send('heal-bob', 'one');
    await bob.received(1);
    await bob.client.send('heal-alice', 'reply');
    await alice.received(1);
    // Bob loses his session with Alice's device (a restored backup, a corrupted store).
    const sessions = await bobStore.list('sessions');
    expect(sessions.length).toBe(1);
    await bobStore.commit(sessions.map(([key]) => ({ ns: 'sessions', key, delete: true as const })));
    await alice.client.send('heal-bob', 'lost');
    const flag = await bob.flagged('DECRYPT_FAILED');
    expect(flag).toMatchObject({ userId: 'heal-alice', deviceId: alice.client.deviceId });
    // Bob's SDK started a new session with Alice's device; once she has accepted it (her
    // old one archived behind it), her next message uses it.
    const accepted = async (): Promise<boolean> => {
      const [entry] = await aliceStore.list('sessions', `heal-bob ${bob.client.deviceId}`);
      return entry !== undefined && (decodeRecord<{ archived: unknown[] }>(entry[1]).archived.length ?? 0) >= 1;
    };
    for (let i = 0; i < 200 && !(await accepted()); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await accepted()).toBe(true);
    await alice.client.send('heal-bob', 'healed');
    const got = await bob.received(2);
    expect(got.map((m) => m.body)).toEqual(['one', 'healed']);
    await alice.client.close();
    await bob.client.close();
  });

  it('misuse gets typed errors', async () => {
    const alice = await newClient(world, 'misuse-alice');
    await newClient(world, 'misuse-bob').then((c) => c.close());
    expect((await sdkError(alice.send('misuse-bob', new Uint8Array(limits.MAX_BODY_BYTES + 1)))).code).toBe('BODY_TOO_LARGE');
    expect((await sdkError(alice.send('nobody-here', 'x'))).code).toBe('UNKNOWN_USER');
    expect((await sdkError(alice.send('bad user id', 'x'))).code).toBe('INVALID_ARGUMENT');
    expect((await sdkError(alice.send('misuse-bob', () => 1))).code).toBe('INVALID_ARGUMENT');
    const second = await newClient(world, 'misuse-alice');
    expect(second.state.state).toBe('awaiting-link');
    expect((await sdkError(second.send('misuse-bob', 'x'))).code).toBe('NOT_LINKED');
    await second.close();
    await alice.close();
    expect((await sdkError(alice.send('misuse-bob', 'x'))).code).toBe('CLIENT_CLOSED');
    expect((await sdkError(newClient(world, 'misuse-carol', { deviceId: 'bad id' }))).code).toBe('INVALID_ARGUMENT');
  });
});
