/**
 * Bad input on the mailbox connection, against a real relay on each driver: SEND or ACK
 * before authentication, unknown binary frame types, too many targets, oversized
 * envelopes and frames, truncated and random SEND frames, out-of-range fields. Each gets
 * its typed error (echoing the request id where one could be read), nothing is stored,
 * the offending connection keeps working where it safely can, the relay keeps running
 * and another device keeps receiving its stream throughout.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { BINARY_FRAME, encodeDeliver, encodeSend } from '../../protocol/envelopes.js';
import { MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES, MAX_TARGETS_PER_SEND, MAX_TTL_SECONDS } from '../../protocol/limits.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { RawClient } from './raw-client.js';
import { DRIVERS, type TestUser, World, driverAvailable, firstDevice, payload, sendMany, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

/** A deterministic byte stream, so a failing random frame can be reproduced. */
function prng(seed: number): (n: number) => Uint8Array {
  let x = seed >>> 0 || 1;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    return out;
  };
}

function sendFrame(recipient: string, targets: Array<{ deviceId: string; payload: Uint8Array }>, over: { id?: number; ttlSeconds?: number } = {}): Uint8Array {
  return encodeSend({ id: over.id ?? 9, envelopeId: systemRandom(16), ttlSeconds: over.ttlSeconds ?? 60, recipientUserId: recipient, targets });
}

describe.each(DRIVERS)('bad input on the mailbox connection on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`bad input on ${driver.name}`);
    return;
  }

  let world: World;
  let bob: TestUser;
  let bystander: RawClient;
  let feeder: RawClient;
  let fed = 0;
  let feed: () => Promise<void>;
  let mallory: TestUser;

  beforeAll(async () => {
    world = await World.start(driver);
    // A bystander device receives a steady stream while the bad input goes on.
    const carol = await world.user('carol');
    const dave = await world.user('dave');
    bystander = await world.connect(carol, undefined, { autoAck: true });
    feeder = await world.connect(dave);
    bob = await world.user('bob');
    mallory = await world.user('mallory');
    feed = async () => {
      await sendMany(feeder, carol, 3, `feed ${fed}`);
      fed += 3;
      await bystander.waitDelivered(fed);
    };
  });

  afterAll(async () => {
    // The bystander got every envelope, in order, on its one connection.
    expect(bystander.closeCode).toBeUndefined();
    expect(bystander.delivered.map((d) => d.seq)).toEqual(Array.from({ length: fed }, (_, i) => i + 1));
    await world?.expectRelaysUp();
    await world?.stop();
  });

  /** After each case: the relay is up and the bystander still receives. */
  async function stillFine(): Promise<void> {
    await world.expectRelaysUp();
    await feed();
  }

  /** Sends a raw binary frame and returns the error it gets. */
  async function errorFor(c: RawClient, bytes: Uint8Array): Promise<Record<string, any>> {
    const before = c.errors().length;
    c.sendBinary(bytes);
    await c.until(() => c.errors().length > before, 'an error frame');
    return c.errors()[before]!;
  }

  it('SEND and ACK before authentication are UNAUTHENTICATED; the connection can still authenticate', async () => {
    const c = await RawClient.connect(world.relay.wsUrl, firstDevice(mallory), mallory.token, { auth: false });
    const send = await errorFor(c, sendFrame(bob.userId, [{ deviceId: 'd1', payload: payload('early') }]));
    expect(send).toMatchObject({ type: 'error', code: 'UNAUTHENTICATED', id: 9 });
    c.sendJson({ type: 'ack', seq: 1 });
    await c.until(() => c.errors().length === 2, 'the ACK error');
    expect(c.errors()[1]).toMatchObject({ code: 'UNAUTHENTICATED' });
    c.terminate();

    // Nothing was stored for bob.
    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.stream()).toEqual(['queue_empty 0']);
    reader.close();
    await stillFine();
  });

  it('unknown binary frame types are UNKNOWN_FRAME (a DELIVER from a client included)', async () => {
    const c = await world.connect(mallory);
    const deliver = encodeDeliver({
      seq: 1,
      envelopeId: systemRandom(16),
      senderUserId: mallory.userId,
      senderDeviceId: 'd1',
      storedAtMs: Date.now(),
      expiresAtMs: Date.now() + 1000,
      payload: payload('x'),
    });
    for (const frame of [new Uint8Array(0), Uint8Array.of(0x00), deliver, Uint8Array.of(0x7f, 1, 2, 3), Uint8Array.of(0xff)]) {
      expect(await errorFor(c, frame), `first byte ${frame[0]}`).toMatchObject({ code: 'UNKNOWN_FRAME' });
    }
    expect(deliver[0]).toBe(BINARY_FRAME.DELIVER);
    await c.ping();
    expect(c.closeCode).toBeUndefined();
    await stillFine();
  });

  it(`more than ${MAX_TARGETS_PER_SEND} targets is TOO_MANY_TARGETS, echoing the request id`, async () => {
    const c = await world.connect(mallory);
    const targets = Array.from({ length: MAX_TARGETS_PER_SEND + 1 }, (_, i) => ({ deviceId: `t${i}`, payload: payload('x') }));
    expect(await errorFor(c, sendFrame(bob.userId, targets, { id: 41 }))).toMatchObject({ code: 'TOO_MANY_TARGETS', id: 41 });
    await stillFine();
  });

  it('an envelope over MAX_ENVELOPE_BYTES is ENVELOPE_TOO_LARGE, and so is an empty one; exactly the limit is stored', async () => {
    const c = await world.connect(mallory);
    const big = new Uint8Array(MAX_ENVELOPE_BYTES + 1);
    expect(await errorFor(c, sendFrame(bob.userId, [{ deviceId: 'd1', payload: big }], { id: 42 }))).toMatchObject({ code: 'ENVELOPE_TOO_LARGE', id: 42 });
    expect(await errorFor(c, sendFrame(bob.userId, [{ deviceId: 'd1', payload: new Uint8Array(0) }], { id: 43 }))).toMatchObject({ code: 'ENVELOPE_TOO_LARGE', id: 43 });
    const erin = await world.user('erin');
    const limit = payload('at the limit', MAX_ENVELOPE_BYTES);
    const ok = await c.sendAndWait(erin.userId, [{ deviceId: 'd1', payload: limit }]);
    expect(ok).toMatchObject({ type: 'stored', recipients: [{ deviceId: 'd1', seq: 1 }] });
    const reader = await world.connect(erin, undefined, { autoAck: true });
    await reader.waitDelivered(1);
    expect(reader.delivered[0]!.payload.length).toBe(MAX_ENVELOPE_BYTES);
    expect(text(reader.delivered[0]!.payload)).toBe('at the limit');
    reader.close();
    await stillFine();
  });

  it('a frame over MAX_FRAME_BYTES is FRAME_TOO_LARGE and the connection stays; over 2 MiB the socket is dropped', async () => {
    const c = await world.connect(mallory);
    const over = new Uint8Array(MAX_FRAME_BYTES + 100);
    over[0] = BINARY_FRAME.SEND;
    expect(await errorFor(c, over)).toMatchObject({ code: 'FRAME_TOO_LARGE' });
    c.sendJson({ type: 'ping', pad: 'x'.repeat(MAX_FRAME_BYTES) });
    await c.until(() => c.errors().length === 2, 'the text frame error');
    expect(c.errors()[1]).toMatchObject({ code: 'FRAME_TOO_LARGE' });
    await c.ping();
    await stillFine();

    const huge = new Uint8Array(2 * MAX_FRAME_BYTES + 100);
    huge[0] = BINARY_FRAME.SEND;
    c.sendBinary(huge);
    // uWebSockets.js drops the socket before reading such a message, without a close
    // frame: the client sees 1006 (abnormal closure).
    expect(await c.waitClosed()).toBe(1006);
    await stillFine();
  });

  it('every truncation of a SEND, and trailing bytes after one, are BAD_REQUEST', async () => {
    const c = await world.connect(mallory);
    const whole = sendFrame(bob.userId, [{ deviceId: 'd1', payload: payload('cut me') }], { id: 77 });
    for (let n = 1; n < whole.length; n++) {
      const e = await errorFor(c, whole.slice(0, n));
      expect(e.code, `SEND cut to ${n} bytes`).toBe('BAD_REQUEST');
      // The request id is echoed once it could be read (u8 type + u32 id).
      if (n >= 5) expect(e.id, `SEND cut to ${n} bytes`).toBe(77);
    }
    const trailing = new Uint8Array(whole.length + 1);
    trailing.set(whole);
    expect(await errorFor(c, trailing)).toMatchObject({ code: 'BAD_REQUEST', id: 77 });
    await stillFine();
  });

  it('out-of-range fields are BAD_REQUEST: TTL, no targets, a repeated target, bad ids', async () => {
    const c = await world.connect(mallory);
    const t = [{ deviceId: 'd1', payload: payload('x') }];
    const cases: Array<[string, Uint8Array]> = [
      ['ttl 0', sendFrame(bob.userId, t, { ttlSeconds: 0 })],
      ['ttl over the maximum', sendFrame(bob.userId, t, { ttlSeconds: MAX_TTL_SECONDS + 1 })],
      ['no targets', sendFrame(bob.userId, [])],
      ['a repeated target', sendFrame(bob.userId, [...t, ...t])],
      ['a recipient with a space', sendFrame('bob smith', t)],
      ['a device id with a slash', sendFrame(bob.userId, [{ deviceId: 'd/1', payload: payload('x') }])],
    ];
    for (const [what, frame] of cases) expect(await errorFor(c, frame), what).toMatchObject({ code: 'BAD_REQUEST', id: 9 });
    await stillFine();
  });

  it('random SEND frames each get an error, and none stores anything', async () => {
    const c = await world.connect(mallory);
    const bytes = prng(0x5eed);
    const allowed = new Set(['BAD_REQUEST', 'TOO_MANY_TARGETS', 'ENVELOPE_TOO_LARGE', 'DEVICE_LIST_MISMATCH']);
    const count = 300;
    for (let i = 0; i < count; i++) {
      const len = 1 + (bytes(1)[0]! % 120);
      const frame = bytes(len);
      frame[0] = BINARY_FRAME.SEND;
      c.sendBinary(frame);
    }
    await c.until(() => c.errors().length === count, `${count} errors`);
    expect(c.errors().filter((e) => !allowed.has(e.code))).toEqual([]);
    expect(c.json.filter((f) => f.type === 'stored')).toEqual([]);
    await c.ping();
    await stillFine();
  });

  it('bad JSON frames: not JSON, unknown type, bad ACK, a second auth', async () => {
    const c = await world.connect(mallory);
    const codes: string[] = [];
    for (const raw of ['{not json', '[]', JSON.stringify({ type: 'subscribe_all' }), JSON.stringify({ type: 'ack', seq: 0 }), JSON.stringify({ type: 'ack', seq: 'x' })]) {
      const before = c.errors().length;
      c.ws.send(raw);
      await c.until(() => c.errors().length > before, `the error for ${raw}`);
      codes.push(c.errors()[before]!.code);
    }
    expect(codes).toEqual(['BAD_REQUEST', 'BAD_REQUEST', 'UNKNOWN_FRAME', 'BAD_REQUEST', 'BAD_REQUEST']);
    c.sendJson({ type: 'auth', token: mallory.token, deviceId: 'd1', origin: 'ws://relay', signature: 'A'.repeat(86) });
    await c.until(() => c.errors().length === codes.length + 1, 'the second auth error');
    expect(c.errors().at(-1)).toMatchObject({ code: 'ALREADY_AUTHENTICATED' });
    // The connection still sends.
    expect(await c.sendAndWait(bob.userId, [{ deviceId: 'd1', payload: payload('still here') }])).toMatchObject({ type: 'stored' });
    await stillFine();
  });
});
