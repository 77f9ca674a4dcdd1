/**
 * Authentication against a real relay process: user tokens (JWT against a JWKS file, or
 * the dev-mode issuer), over HTTP and in the WebSocket auth frame, and the device
 * challenge that binds a connection to one device of that user. Every rejection is
 * checked by its stable code, and a failed WebSocket auth closes with 4001.
 */
import { SignJWT, UnsecuredJWT, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { AUTH_TIMEOUT_MS, MAX_DEVICE_ID_LENGTH, MAX_FRAME_BYTES, MAX_ORIGIN_LENGTH, MAX_PREAUTH_FRAME_BYTES, MAX_TOKEN_BYTES } from '../../protocol/limits.js';
import { TestDevice, originOf } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { expectError, refusedUpgrade, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type RelayProcess, killAllRelays, makeTempDir, relayEnv, runCli, startRelay } from '../helpers/relay.js';
import { HandmadeWs, OPCODE, clientFrame } from '../helpers/raw-ws.js';
import { WsClient } from '../helpers/ws.js';

let issuer: TestIssuer;
let relay: RelayProcess; // JWKS mode
let devRelay: RelayProcess; // dev mode

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
  [relay, devRelay] = await Promise.all([startRelay({ env: issuer.env }), startRelay()]);
});

afterAll(async () => {
  await killAllRelays();
});

const nowS = (): number => Math.floor(Date.now() / 1000);

/** Tokens that must be refused, with the code each must be refused with. */
async function badTokens(user: string): Promise<Array<[string, string, string]>> {
  const hsSecret = new TextEncoder().encode('a shared secret the relay must never accept as a signing key');
  const { privateKey: strangerKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  return [
    // Expired an hour ago: well beyond the 30 s clock tolerance.
    ['expired', await issuer.mint(user, { expiresAt: nowS() - 3600 }), 'TOKEN_EXPIRED'],
    ['wrong issuer', await issuer.mint(user, { issuer: 'https://evil.example' }), 'TOKEN_WRONG_ISSUER'],
    ['wrong audience', await issuer.mint(user, { audience: 'another-service' }), 'TOKEN_WRONG_AUDIENCE'],
    [
      'HS256 (alg not allowed)',
      await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256', kid: 'test-1' })
        .setSubject(user)
        .setIssuer(issuer.issuer)
        .setAudience(issuer.audience)
        .setExpirationTime(nowS() + 3600)
        .sign(hsSecret),
      'TOKEN_INVALID',
    ],
    [
      'alg none',
      new UnsecuredJWT({}).setSubject(user).setIssuer(issuer.issuer).setAudience(issuer.audience).setExpirationTime(nowS() + 3600).encode(),
      'TOKEN_INVALID',
    ],
    ['signed by a key not in the JWKS', await issuer.mint(user, { key: strangerKey }), 'TOKEN_INVALID'],
    ['not a JWT', 'not.a.jwt', 'TOKEN_INVALID'],
    ['subject with a space', await issuer.mint('alice smith'), 'TOKEN_INVALID'],
  ];
}

describe('HTTP authentication', () => {
  const path = '/v1/users/someone/devices';

  it('accepts a valid token', async () => {
    const res = await request(relay.baseUrl, 'GET', path, { token: await issuer.mint('alice') });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ userId: 'someone', length: 0, entries: [], devices: [] });
  });

  it('reads the Bearer scheme name in any case', async () => {
    const token = await issuer.mint('alice');
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const res = await request(relay.baseUrl, 'GET', path, { headers: { authorization: `${scheme} ${token}` } });
      expect({ scheme, status: res.status }).toEqual({ scheme, status: 200 });
    }
    expectError(await request(relay.baseUrl, 'GET', path, { headers: { authorization: `Bearer  ${token}` } }), 401, 'UNAUTHENTICATED');
  });

  it('refuses a request without a token (UNAUTHENTICATED)', async () => {
    expectError(await request(relay.baseUrl, 'GET', path), 401, 'UNAUTHENTICATED');
    expectError(await request(relay.baseUrl, 'GET', path, { headers: { authorization: 'Basic YWxpY2U6cHc=' } }), 401, 'UNAUTHENTICATED');
  });

  it('refuses expired, foreign and malformed tokens with their codes', async () => {
    for (const [what, token, code] of await badTokens('alice')) {
      const res = await request(relay.baseUrl, 'GET', path, { token });
      expect({ what, status: res.status, code: res.body?.error?.code }).toEqual({ what, status: 401, code });
    }
  });

  it('refuses a token without a subject (TOKEN_INVALID)', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'EdDSA' })
      .setIssuer(issuer.issuer)
      .setAudience(issuer.audience)
      .setExpirationTime(nowS() + 60)
      .sign((await generateKeyPair('EdDSA', { crv: 'Ed25519' })).privateKey);
    expectError(await request(relay.baseUrl, 'GET', path, { token }), 401, 'TOKEN_INVALID');
  });

  it('refuses credentials in the URL query (TOKEN_IN_QUERY), even beside a valid header', async () => {
    const token = await issuer.mint('alice');
    for (const q of [`access_token=${token}`, `token=${token}`, `x=1&jwt=${token}`, 'Authorization=Bearer']) {
      expectError(await request(relay.baseUrl, 'GET', `${path}?${q}`, { token }), 400, 'TOKEN_IN_QUERY');
    }
    expectError(await request(relay.baseUrl, 'GET', `${path}?access_token=${token}`), 400, 'TOKEN_IN_QUERY');
  });
});

describe('WebSocket authentication', () => {
  const alice = new TestDevice('ws-alice');
  const bob = new TestDevice('ws-bob');
  let aliceToken: string;

  beforeAll(async () => {
    aliceToken = await issuer.mint(alice.userId);
    await registerDevice(relay.baseUrl, aliceToken, alice);
    await registerDevice(relay.baseUrl, await issuer.mint(bob.userId), bob);
  });

  /** Sends an auth frame and expects an error with `code`, then a 4001 close. */
  async function expectAuthRefused(frame: (challenge: Uint8Array) => object, code: string): Promise<void> {
    const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
    ws.send(frame(challenge));
    const reply = await ws.reply();
    expect({ type: reply.type, code: reply.code }).toEqual({ type: 'error', code });
    expect((await ws.waitClosed()).code).toBe(4001);
  }

  it('sends a fresh 32-byte challenge on every connection', async () => {
    const a = await WsClient.connectWithChallenge(relay.wsUrl);
    const b = await WsClient.connectWithChallenge(relay.wsUrl);
    expect(a.challenge).toHaveLength(32);
    expect(b.challenge).toHaveLength(32);
    expect(a.challenge).not.toEqual(b.challenge);
    a.ws.close();
    b.ws.close();
  });

  it('binds the device with a valid token and challenge signature (auth_ok)', async () => {
    const ws = await connectAuthenticated(relay.wsUrl, aliceToken, alice);
    ws.send({ type: 'ping', id: 5 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 5 });
    // A second auth frame on a bound connection is refused, and the connection stays.
    ws.send({ type: 'auth', token: aliceToken, deviceId: alice.deviceId, origin: originOf(relay.wsUrl), signature: encodeBase64url(new Uint8Array(64)) });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'ALREADY_AUTHENTICATED' });
    ws.send({ type: 'ping', id: 6 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 6 });
    ws.close();
    await ws.waitClosed();
  });

  it('refuses expired, foreign and malformed tokens in the auth frame and closes with 4001', async () => {
    for (const [what, token, code] of await badTokens(alice.userId)) {
      try {
        await expectAuthRefused((c) => alice.authFrame(c, token, relay.wsUrl), code);
      } catch (err) {
        throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      }
    }
  });

  it('refuses a challenge signed with the wrong key (CHALLENGE_FAILED, 4001)', async () => {
    const impostor = new TestDevice(alice.userId, alice.deviceId);
    await expectAuthRefused(
      (c) => impostor.authFrame(c, aliceToken, relay.wsUrl),
      'CHALLENGE_FAILED',
    );
  });

  it("refuses a signature over another connection's challenge (CHALLENGE_FAILED, 4001)", async () => {
    const { ws: other, challenge: otherChallenge } = await WsClient.connectWithChallenge(relay.wsUrl);
    other.close();
    await expectAuthRefused(
      () => alice.authFrame(otherChallenge, aliceToken, relay.wsUrl),
      'CHALLENGE_FAILED',
    );
  });

  it("never binds another user's device with one's own valid token, even with that device's signature (DEVICE_NOT_FOUND, 4001)", async () => {
    // Bob's device signs whatever Bob would sign for this connection, and also the
    // transcript naming Alice: neither lets Alice's token bind Bob's device.
    await expectAuthRefused(
      (c) => bob.authFrame(c, aliceToken, relay.wsUrl),
      'DEVICE_NOT_FOUND',
    );
    await expectAuthRefused(
      (c) => ({ ...bob.authFrame(c, aliceToken, relay.wsUrl), signature: encodeBase64url(bob.authSignature(c, originOf(relay.wsUrl), alice.userId)) }),
      'DEVICE_NOT_FOUND',
    );
  });

  it('a newer connection for the same device closes the older one with 4002', async () => {
    const first = await connectAuthenticated(relay.wsUrl, aliceToken, alice);
    const second = await connectAuthenticated(relay.wsUrl, aliceToken, alice);
    expect((await first.waitClosed()).code).toBe(4002);
    second.send({ type: 'ping', id: 1 });
    expect(await second.reply()).toEqual({ type: 'pong', id: 1 });
    second.close();
    await second.waitClosed();
  });

  it(`closes a connection that does not authenticate within ${AUTH_TIMEOUT_MS} ms (AUTH_TIMEOUT, ${CLOSE_CODES.AUTH_FAILED})`, { timeout: AUTH_TIMEOUT_MS + 20_000 }, async () => {
    const opened = Date.now();
    const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
    // Pings keep nothing alive: only authenticating does.
    ws.send({ type: 'ping', id: 1 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 1 });
    expect(await ws.reply(AUTH_TIMEOUT_MS + 10_000)).toMatchObject({ type: 'error', code: 'AUTH_TIMEOUT' });
    expect(await ws.waitClosed()).toMatchObject({ code: CLOSE_CODES.AUTH_FAILED });
    expect(Date.now() - opened).toBeGreaterThanOrEqual(AUTH_TIMEOUT_MS - 50);
  });

  it('before auth, answers ping with pong and refuses unknown or malformed frames without closing', async () => {
    const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
    ws.send({ type: 'ping', id: 77 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 77 });
    ws.send({ type: 'ping' });
    expect(await ws.reply()).toEqual({ type: 'pong' });
    ws.send({ type: 'no-such-frame', to: 'someone' });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'UNKNOWN_FRAME' });
    ws.send('{not json');
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'BAD_REQUEST' });
    ws.send({ type: 'auth', id: 9, token: 5 });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'BAD_REQUEST', id: 9 });
    // Still usable, and still able to authenticate after all that.
    ws.send({ type: 'ping', id: 78 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 78 });
    expect(ws.isOpen).toBe(true);
    ws.close();
    await ws.waitClosed();
  });

  it(`before auth, a frame over MAX_PREAUTH_FRAME_BYTES (${MAX_PREAUTH_FRAME_BYTES}) is FRAME_TOO_LARGE and closes the socket with ${CLOSE_CODES.AUTH_FAILED}`, async () => {
    // Exactly at the limit: answered.
    const { ws: atLimit } = await WsClient.connectWithChallenge(relay.wsUrl);
    const prefix = '{"type":"ping","id":5,"pad":"';
    const exact = `${prefix}${'x'.repeat(MAX_PREAUTH_FRAME_BYTES - prefix.length - 2)}"}`;
    expect(exact.length).toBe(MAX_PREAUTH_FRAME_BYTES);
    atLimit.send(exact);
    expect(await atLimit.reply()).toEqual({ type: 'pong', id: 5 });
    atLimit.close();
    await atLimit.waitClosed();

    // One byte over, as text and as binary: refused and closed.
    const oversized: Array<string | Uint8Array> = [`${prefix}${'x'.repeat(MAX_PREAUTH_FRAME_BYTES - prefix.length - 1)}"}`, new Uint8Array(MAX_PREAUTH_FRAME_BYTES + 1).fill(1)];
    for (const frame of oversized) {
      const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
      ws.socket.send(frame);
      expect(await ws.reply()).toMatchObject({ type: 'error', code: 'FRAME_TOO_LARGE' });
      expect(await ws.waitClosed()).toMatchObject({ code: CLOSE_CODES.AUTH_FAILED });
    }

    // While the auth frame is being verified the connection is still unauthenticated. The
    // auth frame and an oversized one go out in one write, so the relay reads the second
    // before the (asynchronous) verification of the first can have finished.
    const pending = await HandmadeWs.connect(relay.port);
    const challenge = decodeBase64url(String((await pending.waitJson((f) => f.type === 'challenge')).nonce))!;
    const text = (v: string): Buffer => clientFrame(OPCODE.text, new TextEncoder().encode(v));
    await pending.write(Buffer.concat([text(JSON.stringify(alice.authFrame(challenge, aliceToken, pending.url))), text(`{"type":"ping","pad":"${'x'.repeat(MAX_PREAUTH_FRAME_BYTES)}"}`)]));
    expect(await pending.waitJson((f) => f.type === 'error' || f.type === 'auth_ok')).toMatchObject({ type: 'error', code: 'FRAME_TOO_LARGE' });
    for (const deadline = Date.now() + 10_000; !pending.closed && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    expect(pending.closed).toBe(true);

    // After auth, frames up to MAX_FRAME_BYTES are read as before.
    const bound = await connectAuthenticated(relay.wsUrl, aliceToken, alice);
    bound.send(`{"type":"ping","id":6,"pad":"${'x'.repeat(4 * MAX_PREAUTH_FRAME_BYTES)}"}`);
    expect(await bound.reply()).toEqual({ type: 'pong', id: 6 });
    // Between the frame limit and the transport limit: refused with a code, connection kept.
    bound.send(`{"type":"ping","pad":"${'x'.repeat(MAX_FRAME_BYTES)}"}`);
    expect(await bound.reply()).toMatchObject({ type: 'error', code: 'FRAME_TOO_LARGE' });
    bound.send({ type: 'ping', id: 7 });
    expect(await bound.reply()).toEqual({ type: 'pong', id: 7 });
    bound.close();
    await bound.waitClosed();
  });

  it('the largest legitimate auth frame (a token of MAX_TOKEN_BYTES, a 64-character device id, an origin of MAX_ORIGIN_LENGTH) fits before auth', async () => {
    const device = new TestDevice('ws-big-token', `big-${'d'.repeat(MAX_DEVICE_ID_LENGTH - 4)}`);
    await registerDevice(relay.baseUrl, await issuer.mint(device.userId), device);
    // Pad a claim until the token is exactly MAX_TOKEN_BYTES long.
    let token = await issuer.mint(device.userId);
    let pad = Math.floor(((MAX_TOKEN_BYTES - token.length) * 3) / 4) - 16;
    for (;;) {
      const next = await issuer.mint(device.userId, { claims: { pad: 'p'.repeat(pad + 1) } });
      if (next.length > MAX_TOKEN_BYTES) break;
      token = next;
      pad++;
    }
    expect(token.length).toBeGreaterThan(MAX_TOKEN_BYTES - 4);
    const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
    const auth = device.authFrame(challenge, token, relay.wsUrl);
    // This relay's origin is short: an unknown field makes up the rest of the longest
    // origin a frame may carry, so the frame is as large as a legitimate one can be.
    const frame = JSON.stringify({ ...auth, filler: 'f'.repeat(MAX_ORIGIN_LENGTH - auth.origin.length - ',"filler":""'.length) });
    expect(frame.length).toBeGreaterThanOrEqual(MAX_TOKEN_BYTES - 4 + MAX_DEVICE_ID_LENGTH + MAX_ORIGIN_LENGTH + 86);
    expect(frame.length).toBeLessThanOrEqual(MAX_PREAUTH_FRAME_BYTES);
    ws.send(frame);
    expect(await ws.reply()).toEqual({ type: 'auth_ok', userId: device.userId, deviceId: device.deviceId, expiresAt: expect.any(Number) });
    ws.close();
    await ws.waitClosed();
  });

  it('refuses credentials in the upgrade URL (TOKEN_IN_QUERY)', async () => {
    const res = await refusedUpgrade(relay.baseUrl, `/v1/ws?access_token=${aliceToken}`);
    expect(res.status).toBe(400);
    expect(res.body?.error?.code).toBe('TOKEN_IN_QUERY');
    // The relay is still serving.
    expect((await request(relay.baseUrl, 'GET', '/healthz')).status).toBe(200);
  });
});

describe('dev mode', () => {
  it('accepts tokens minted by `hermetic token` with its data directory, over HTTP and WebSocket', async () => {
    const device = new TestDevice('dev-alice');
    const minted = await runCli(['token', device.userId], devRelay.env);
    expect(minted.code, minted.stderr).toBe(0);
    const token = minted.stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    await registerDevice(devRelay.baseUrl, token, device);
    const ws = await connectAuthenticated(devRelay.wsUrl, token, device);
    ws.close();
    await ws.waitClosed();
    expect(devRelay.logs().some((l) => l.level === 40 && String(l.msg).startsWith('DEV MODE'))).toBe(true);
  });

  it('refuses tokens from another issuer, and a dev token is refused by a JWKS-mode relay', async () => {
    // Neither relay holds the other's signing key, so the signature check fails first.
    expectError(await request(devRelay.baseUrl, 'GET', '/v1/users/x/devices', { token: await issuer.mint('alice') }), 401, 'TOKEN_INVALID');
    const dev = await runCli(['token', 'alice'], devRelay.env);
    expect(dev.code).toBe(0);
    expectError(await request(relay.baseUrl, 'GET', '/v1/users/x/devices', { token: dev.stdout.trim() }), 401, 'TOKEN_INVALID');
  });

  it('`hermetic token` refuses to mint when a JWKS is configured (exit 2)', async () => {
    const r = await runCli(['token', 'alice'], relay.env);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('dev mode');
  });

  it('refuses to start with NODE_ENV=production and no JWKS (exit 2, naming the variables)', async () => {
    const dir = makeTempDir();
    const r = await runCli(['serve'], relayEnv({ env: { NODE_ENV: 'production' } }, dir));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('HERMETIC_JWKS_URL');
    expect(r.stderr).toContain('HERMETIC_JWKS_FILE');
    expect(r.stderr).toContain('NODE_ENV=production');
    expect(r.stdout).not.toContain('relay listening');
  });
});
