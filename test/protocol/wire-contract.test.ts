/**
 * The wire contract docs/PROTOCOL.md states for a client written from it alone, checked
 * against a real relay process: the ping id's range, which auth failures leave the socket
 * open (malformed fields) and which close it with 4001 (failed verification), the number
 * formats of STORED and DELIVER, the codes for out-of-range SEND fields and oversized
 * tokens (WebSocket and HTTP), the key-upload and bundle answers, the bundle fetch's
 * empty body, and that failed bundle fetches count toward the rate limit.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { BINARY_FRAME, decodeDeliver, encodeSend } from '../../protocol/envelopes.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { BUNDLE_FETCH_BURST, MAX_ENVELOPE_BYTES, MAX_TOKEN_BYTES } from '../../protocol/limits.js';
import { TestDevice, range } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { type JsonResponse, expectError, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { type Frame, WsClient } from '../helpers/ws.js';

let issuer: TestIssuer;
let relay: RelayProcess;
let n = 0;
const uid = (name: string): string => `${name}-${++n}`;

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
  relay = await startRelay({ env: issuer.env });
});

afterAll(async () => {
  await killAllRelays();
});

/** A registered device of a fresh user, and that user's token. */
async function enrolled(name: string): Promise<{ device: TestDevice; token: string }> {
  const device = new TestDevice(uid(name));
  const token = await issuer.mint(device.userId);
  await registerDevice(relay.baseUrl, token, device);
  return { device, token };
}

/** A token whose text is `length` characters: a real token padded in its signature part. */
async function longToken(user: string, length: number): Promise<string> {
  const t = await issuer.mint(user);
  return t + 'A'.repeat(length - t.length);
}

/** Writes one raw HTTP request on a fresh TCP connection; reads until the relay closes it or 5 s pass. */
async function rawExchange(port: number, requestText: string): Promise<{ text: string; closedByRelay: boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let text = '';
  socket.setEncoding('utf8').on('data', (d: string) => (text += d));
  const closed = new Promise<boolean>((resolve) => socket.once('end', () => resolve(true)));
  socket.write(requestText);
  const closedByRelay = await Promise.race([closed, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000))]);
  socket.destroy();
  return { text, closedByRelay };
}

describe('WebSocket control frames', () => {
  it('ping ids are integers 0..2^32-1, echoed; anything else is BAD_REQUEST without an id, and the socket stays open', async () => {
    const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
    for (const id of [0, 1, 0xffff_ffff]) {
      ws.send({ type: 'ping', id });
      expect(await ws.reply()).toEqual({ type: 'pong', id });
    }
    for (const id of [-1, 0x1_0000_0000, 1.5, '7', null, true, [1]]) {
      ws.send({ type: 'ping', id });
      const r = await ws.reply();
      expect({ id, type: r.type, code: r.code, echoed: 'id' in r }).toEqual({ id, type: 'error', code: 'BAD_REQUEST', echoed: false });
    }
    ws.send({ type: 'ping' });
    expect(await ws.reply()).toEqual({ type: 'pong' });
    expect(ws.isOpen).toBe(true);
    ws.close();
  });

  it('malformed auth fields are BAD_REQUEST and leave the socket open; the same socket then authenticates', async () => {
    const { device, token } = await enrolled('malformed-auth');
    const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
    const good = device.authFrame(challenge, token, relay.wsUrl);
    const malformed: Array<[string, Record<string, unknown>]> = [
      ['token not a string', { ...good, token: 5 }],
      ['token missing', { ...good, token: undefined }],
      [`token over ${MAX_TOKEN_BYTES} characters`, { ...good, token: await longToken(device.userId, MAX_TOKEN_BYTES + 1) }],
      ['device id with a slash', { ...good, deviceId: 'a/b' }],
      ['origin missing', { ...good, origin: undefined }],
      ['signature of 63 bytes', { ...good, signature: encodeBase64url(new Uint8Array(63)) }],
      ['signature not base64url', { ...good, signature: '!'.repeat(86) }],
    ];
    for (const [what, frame] of malformed) {
      ws.send(frame);
      const r = await ws.reply();
      expect({ what, type: r.type, code: r.code }).toEqual({ what, type: 'error', code: 'BAD_REQUEST' });
    }
    ws.send(good);
    expect(await ws.reply()).toEqual({ type: 'auth_ok', userId: device.userId, deviceId: device.deviceId, expiresAt: expect.any(Number) });
    ws.close();
  });

  it('failed verification answers its code and closes with 4001', async () => {
    const { device, token } = await enrolled('refused-auth');
    const stranger = new TestDevice(device.userId, device.deviceId);
    const unknown = new TestDevice(device.userId);
    const cases: Array<[string, (c: Uint8Array) => Record<string, unknown>, string]> = [
      ['signature by another key', (c) => stranger.authFrame(c, token, relay.wsUrl), 'CHALLENGE_FAILED'],
      ['another origin signed', (c) => device.authFrame(c, token, 'ws://elsewhere.example/v1/ws'), 'CHALLENGE_FAILED'],
      ['unknown device', (c) => unknown.authFrame(c, token, relay.wsUrl), 'DEVICE_NOT_FOUND'],
      ['not a JWT', (c) => device.authFrame(c, 'not.a.jwt', relay.wsUrl), 'TOKEN_INVALID'],
    ];
    const expired = await issuer.mint(device.userId, { expiresAt: Math.floor(Date.now() / 1000) - 3600 });
    cases.push(['expired token', (c) => device.authFrame(c, expired, relay.wsUrl), 'TOKEN_EXPIRED']);
    for (const [what, frame, code] of cases) {
      const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
      ws.send(frame(challenge));
      const r = await ws.reply();
      expect({ what, type: r.type, code: r.code }).toEqual({ what, type: 'error', code });
      expect({ what, close: (await ws.waitClosed()).code }).toEqual({ what, close: CLOSE_CODES.AUTH_FAILED });
    }
  });

  it('a token frame with an oversized token is BAD_REQUEST and the connection keeps its token', async () => {
    const { device, token } = await enrolled('renew-long');
    const ws = await connectAuthenticated(relay.wsUrl, token, device);
    ws.send({ type: 'token', token: await longToken(device.userId, MAX_TOKEN_BYTES + 1) });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'BAD_REQUEST' });
    ws.send({ type: 'token', token: await issuer.mint(device.userId) });
    expect(await ws.reply()).toEqual({ type: 'token_ok', expiresAt: expect.any(Number) });
    ws.close();
  });
});

describe('SEND and DELIVER', () => {
  /** The next binary frame (a DELIVER), skipping control frames. */
  async function nextBinary(ws: WsClient): Promise<Uint8Array> {
    for (;;) {
      const f: Frame = await ws.next();
      if (f.type === '(binary)') return f.data as Uint8Array;
    }
  }

  it('STORED and DELIVER carry storedAt and expiresAt as integer ms since the epoch, expiresAt = storedAt + TTL; DEVICE_LIST_MISMATCH details', async () => {
    const alice = await enrolled('fmt-alice');
    const bob = await enrolled('fmt-bob');
    const sender = await connectAuthenticated(relay.wsUrl, alice.token, alice.device);
    const reader = await connectAuthenticated(relay.wsUrl, bob.token, bob.device);
    expect(await reader.next()).toEqual({ type: 'queue_empty', through: 0 });
    const before = Date.now();
    const envelopeId = systemRandom(16);
    const ttlSeconds = 3600;
    sender.socket.send(encodeSend({ id: 12, envelopeId, ttlSeconds, recipientUserId: bob.device.userId, targets: [{ deviceId: bob.device.deviceId, payload: Uint8Array.of(1, 2, 3) }] }));
    const stored = await sender.reply();
    const after = Date.now();
    expect(stored).toEqual({
      type: 'stored',
      id: 12,
      envelopeId: encodeBase64url(envelopeId),
      duplicate: false,
      storedAt: expect.any(Number),
      expiresAt: expect.any(Number),
      recipients: [{ deviceId: bob.device.deviceId, seq: 1 }],
    });
    expect(Number.isSafeInteger(stored.storedAt) && Number.isSafeInteger(stored.expiresAt)).toBe(true);
    // Relay and test share one clock here; the relay's time is between the two readings.
    expect(stored.storedAt).toBeGreaterThanOrEqual(before - 1000);
    expect(stored.storedAt).toBeLessThanOrEqual(after + 1000);
    expect(stored.expiresAt - stored.storedAt).toBe(ttlSeconds * 1000);

    // A wrong target list: the error names the request and lists what to target, as sets.
    sender.socket.send(encodeSend({ id: 13, envelopeId: systemRandom(16), ttlSeconds, recipientUserId: bob.device.userId, targets: [{ deviceId: 'ghost', payload: Uint8Array.of(1) }] }));
    expect(await sender.reply()).toEqual({
      type: 'error',
      code: 'DEVICE_LIST_MISMATCH',
      message: expect.any(String),
      id: 13,
      details: { userId: bob.device.userId, devices: [bob.device.deviceId], missing: [bob.device.deviceId], extra: ['ghost'] },
    });

    const deliver = decodeDeliver(await nextBinary(reader));
    expect(deliver).toMatchObject({ seq: 1, senderUserId: alice.device.userId, senderDeviceId: alice.device.deviceId, storedAtMs: stored.storedAt, expiresAtMs: stored.expiresAt });
    expect(deliver.envelopeId).toEqual(envelopeId);
    sender.close();
    reader.close();
  });

  it(`a target length over ${MAX_ENVELOPE_BYTES} is ENVELOPE_TOO_LARGE before the payload is read; a length past the frame's end is BAD_REQUEST`, async () => {
    const alice = await enrolled('len-alice');
    const bob = await enrolled('len-bob');
    const ws = await connectAuthenticated(relay.wsUrl, alice.token, alice.device);
    const frame = encodeSend({ id: 31, envelopeId: systemRandom(16), ttlSeconds: 60, recipientUserId: bob.device.userId, targets: [{ deviceId: bob.device.deviceId, payload: Uint8Array.of(9) }] });
    // The target's u32 length sits just before its 1-byte payload, at the end.
    const lengthAt = frame.length - 1 - 4;
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    const cases: Array<[number, string]> = [
      [0xffff_ffff, 'ENVELOPE_TOO_LARGE'],
      [MAX_ENVELOPE_BYTES + 1, 'ENVELOPE_TOO_LARGE'],
      [0, 'ENVELOPE_TOO_LARGE'],
      [2, 'BAD_REQUEST'],
    ];
    for (const [length, code] of cases) {
      view.setUint32(lengthAt, length);
      ws.socket.send(frame);
      const r = await ws.reply();
      expect({ length, type: r.type, code: r.code, id: r.id }).toEqual({ length, type: 'error', code, id: 31 });
    }
    expect(frame[0]).toBe(BINARY_FRAME.SEND);
    ws.close();
  });
});

describe('HTTP', () => {
  it(`a bearer token over ${MAX_TOKEN_BYTES} characters is TOKEN_INVALID (401)`, async () => {
    const user = uid('long-bearer');
    const res = await request(relay.baseUrl, 'GET', `/v1/users/${user}/devices`, { token: await longToken(user, MAX_TOKEN_BYTES + 1) });
    expectError(res, 401, 'TOKEN_INVALID');
    // At the limit the token is read (and here refused for its padded signature).
    expectError(await request(relay.baseUrl, 'GET', `/v1/users/${user}/devices`, { token: await longToken(user, MAX_TOKEN_BYTES) }), 401, 'TOKEN_INVALID');
  });

  it('the key upload answers 200 with the counts; the bundle carries {keyId, publicKey, signature} objects', async () => {
    const { device, token } = await enrolled('upload');
    const upload = device.fullUpload({ oneTime: 2, oneTimeKem: 1 });
    const put = await request(relay.baseUrl, 'PUT', `/v1/devices/${device.deviceId}/keys`, { token, json: upload });
    expect(put.status, put.text).toBe(200);
    expect(put.body).toEqual({ oneTimePrekeys: 2, oneTimeKemPrekeys: 1, hasSignedPrekey: true, hasLastResortKemPrekey: true });

    const peer = await issuer.mint(uid('peer'));
    const res = await request(relay.baseUrl, 'POST', `/v1/users/${device.userId}/devices/${device.deviceId}/bundle`, { token: peer });
    expect(res.status, res.text).toBe(200);
    const key = { keyId: expect.any(Number), publicKey: expect.any(String), signature: expect.any(String) };
    expect(res.body).toEqual({
      userId: device.userId,
      deviceId: device.deviceId,
      identityKey: encodeBase64url(device.identityKey),
      signedPrekey: key,
      oneTimePrekey: key,
      kemPrekey: key,
      kemLastResort: false,
    });
    expect(decodeBase64url(res.body.kemPrekey.publicKey)).toHaveLength(1184);
    expect(decodeBase64url(res.body.signedPrekey.signature)).toHaveLength(64);
  });

  it('the bundle fetch takes no body: one that is sent is BAD_REQUEST and consumes nothing', async () => {
    const { device, token } = await enrolled('bundle-body');
    await request(relay.baseUrl, 'PUT', `/v1/devices/${device.deviceId}/keys`, { token, json: device.fullUpload({ oneTime: 1, oneTimeKem: 1 }) });
    const peer = await issuer.mint(uid('peer'));
    const path = `/v1/users/${device.userId}/devices/${device.deviceId}/bundle`;
    expectError(await request(relay.baseUrl, 'POST', path, { token: peer, json: {} }), 400, 'BAD_REQUEST');
    expectError(await request(relay.baseUrl, 'POST', path, { token: peer, body: 'x', contentType: 'text/plain' }), 400, 'BAD_REQUEST');
    // The unread body is not left in front of a next request: the relay closes.
    const raw = await rawExchange(relay.port, `POST ${path} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer ${peer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`);
    expect(raw.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(raw.text).toContain('"code":"BAD_REQUEST"');
    expect(raw.closedByRelay).toBe(true);
    const counts = await request(relay.baseUrl, 'GET', `/v1/devices/${device.deviceId}/keys`, { token });
    expect(counts.body).toMatchObject({ oneTimePrekeys: 1, oneTimeKemPrekeys: 1 });
    // An empty body (Content-Length: 0) is no body.
    const ok = await request(relay.baseUrl, 'POST', path, { token: peer, body: '', contentType: 'application/json' });
    expect(ok.status, ok.text).toBe(200);
  });

  it('failed bundle fetches count toward the rate limit', async () => {
    const requester = await issuer.mint(uid('prober'));
    const ghost = uid('ghost');
    const answers: JsonResponse[] = [];
    // In rounds of concurrent fetches, under the per-user in-flight cap (not what is
    // tested): each round takes more than the bucket refills meanwhile, however slow the
    // machine, so the limit must be met within a bounded number of rounds.
    const round = 30;
    for (let r = 0; r < 10 && !answers.some((a) => a.status === 429); r++) {
      const base = answers.length;
      answers.push(...(await Promise.all(range(base, round).map((i) => request(relay.baseUrl, 'POST', `/v1/users/${ghost}/devices/d${i}/bundle`, { token: requester })))));
    }
    const codes = answers.map((a) => a.body?.error?.code as string);
    expect(new Set(codes)).toEqual(new Set(['DEVICE_NOT_FOUND', 'RATE_LIMITED']));
    expect(codes.filter((c) => c === 'DEVICE_NOT_FOUND').length).toBeGreaterThanOrEqual(BUNDLE_FETCH_BURST);
    // The bucket's refusal (the in-flight cap's has no retry hint).
    const limited = answers.find((a) => a.status === 429)!;
    expectError(limited, 429, 'RATE_LIMITED');
    expect(limited.body.error.details.retryAfterMs).toBeGreaterThan(0);
  });
});
