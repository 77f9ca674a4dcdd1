/**
 * What binds a WebSocket to a device, besides its key: the relay's origin (a phishing
 * relay that forwards the real relay's challenge gets a signature naming itself) and the
 * token's lifetime (the connection closes when the token expires, unless renewed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { TestDevice } from '../helpers/device.js';
import { registerDevice } from '../helpers/flows.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { WsClient } from '../helpers/ws.js';

const PUBLIC_URL = 'wss://Relay.Test.Example:443/v1/ws';
const PUBLIC_ORIGIN = 'wss://relay.test.example';

let issuer: TestIssuer;
let relay: RelayProcess;
const alice = new TestDevice('binding-alice');
let token: string;

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
  // No clock tolerance, so a token's expiry closes its connection exactly then.
  relay = await startRelay({ env: { ...issuer.env, HERMETIC_PUBLIC_URL: PUBLIC_URL, HERMETIC_JWT_CLOCK_TOLERANCE: '0' } });
  token = await issuer.mint(alice.userId);
  await registerDevice(relay.baseUrl, token, alice);
});

afterAll(async () => {
  await killAllRelays();
});

function frame(challenge: Uint8Array, t: string, signedOrigin: string, claimedOrigin = signedOrigin) {
  return { type: 'auth', token: t, deviceId: alice.deviceId, origin: claimedOrigin, signature: encodeBase64url(alice.authSignature(challenge, signedOrigin)) };
}

async function authenticate(t: string): Promise<{ ws: WsClient; expiresAt: number }> {
  const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
  ws.send(frame(challenge, t, PUBLIC_ORIGIN));
  const ok = await ws.reply();
  expect(ok).toMatchObject({ type: 'auth_ok', userId: alice.userId, deviceId: alice.deviceId });
  return { ws, expiresAt: ok.expiresAt as number };
}

describe('channel binding', () => {
  it('accepts a signature naming the configured public origin, however the client reached the relay', async () => {
    const { ws } = await authenticate(token);
    ws.close();
    await ws.waitClosed();
  });

  it('refuses a signature made for another relay: a phishing relay forwarding the challenge (CHALLENGE_FAILED, 4001)', async () => {
    for (const [signed, claimed] of [
      ['wss://phish.example', 'wss://phish.example'],
      ['wss://phish.example', PUBLIC_ORIGIN],
      // With a public URL configured, the address the test connected to is not accepted.
      [`ws://127.0.0.1:${relay.port}`, `ws://127.0.0.1:${relay.port}`],
    ] as const) {
      const { ws, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
      ws.send(frame(challenge, token, signed, claimed));
      expect(await ws.reply(), `${signed} / ${claimed}`).toMatchObject({ type: 'error', code: 'CHALLENGE_FAILED' });
      expect((await ws.waitClosed()).code).toBe(CLOSE_CODES.AUTH_FAILED);
    }
  });
});

describe('token lifetime', () => {
  it('closes the connection with TOKEN_EXPIRED when its token expires', { timeout: 20_000 }, async () => {
    const exp = Math.floor(Date.now() / 1000) + 3;
    const { ws, expiresAt } = await authenticate(await issuer.mint(alice.userId, { expiresAt: exp }));
    expect(expiresAt).toBe(exp * 1000);
    expect(await ws.reply(10_000)).toMatchObject({ type: 'error', code: 'TOKEN_EXPIRED' });
    expect((await ws.waitClosed()).code).toBe(CLOSE_CODES.AUTH_FAILED);
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
  });

  it('a token frame for the same user renews it; one for another user or an invalid one changes nothing', { timeout: 30_000 }, async () => {
    const exp = Math.floor(Date.now() / 1000) + 6;
    const later = exp + 3600;
    const [first, renewal, foreign] = await Promise.all([
      issuer.mint(alice.userId, { expiresAt: exp }),
      issuer.mint(alice.userId, { expiresAt: later }),
      issuer.mint('somebody-else'),
    ]);
    const { ws } = await authenticate(first);
    ws.send({ type: 'token', token: renewal });
    expect(await ws.reply()).toEqual({ type: 'token_ok', expiresAt: later * 1000 });
    ws.send({ type: 'token', token: foreign });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'TOKEN_INVALID' });
    ws.send({ type: 'token', token: 'not.a.token' });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'TOKEN_INVALID' });
    // Past the first token's expiry the connection is still there.
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 1500));
    ws.send({ type: 'ping', id: 1 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 1 });
    ws.close();
    await ws.waitClosed();
  });

  it('refuses a token frame before authentication (UNAUTHENTICATED)', async () => {
    const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
    ws.send({ type: 'token', token });
    expect(await ws.reply()).toMatchObject({ type: 'error', code: 'UNAUTHENTICATED' });
    ws.close();
    await ws.waitClosed();
  });
});
