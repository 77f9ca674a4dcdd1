/**
 * Logs never carry secrets: a relay at the most verbose level, driven through
 * registration, key upload, failed and successful WebSocket authentication and a
 * rejected token, prints none of the tokens, signatures or the dev issuer's private key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { TestDevice } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { request } from '../helpers/http.js';
import { type RelayProcess, killAllRelays, runCli, startRelay } from '../helpers/relay.js';
import { WsClient } from '../helpers/ws.js';

let relay: RelayProcess;

beforeAll(async () => {
  relay = await startRelay({ logLevel: 'trace' });
});

afterAll(async () => {
  await killAllRelays();
});

describe('relay logs', () => {
  it('contain no token, signature or private key material', async () => {
    const minted = await runCli(['token', 'log-user'], relay.env);
    const token = minted.stdout.trim();
    expect(token.split('.')).toHaveLength(3);

    const device = new TestDevice('log-user');
    await registerDevice(relay.baseUrl, token, device);
    const upload = device.fullUpload({ oneTime: 2, oneTimeKem: 1 });
    const up = await request(relay.baseUrl, 'PUT', `/v1/devices/${device.deviceId}/keys`, { token, json: upload });
    expect(up.status, up.text).toBe(200);

    // A token the relay must reject (tampered signature) and one in a query string.
    const tampered = `${token.slice(0, -4)}AAAA`;
    expect((await request(relay.baseUrl, 'GET', '/v1/users/log-user/devices', { token: tampered })).status).toBe(401);
    expect((await fetch(`${relay.baseUrl}/v1/users/log-user/devices?access_token=${token}`)).status).toBe(400);

    // A failed and a successful WebSocket authentication.
    const { ws: bad, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
    const wrong = new TestDevice('log-user', device.deviceId).authFrame(challenge, token, relay.wsUrl);
    bad.send(wrong);
    expect((await bad.reply()).code).toBe('CHALLENGE_FAILED');
    const good = await connectAuthenticated(relay.wsUrl, token, device);
    good.close();
    await relay.stop();

    const logs = relay.stdout() + relay.stderr();
    expect(relay.logs().length).toBeGreaterThan(3); // the relay did log, at trace level
    const secrets = [
      token,
      token.split('.')[2]!, // the JWT signature alone
      tampered,
      wrong.signature,
      upload.signedPrekey.signature,
      JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'dev-issuer.jwk.json'), 'utf8')).d as string,
    ];
    for (const s of secrets) expect(logs).not.toContain(s);
  });
});
