/**
 * Multi-step client flows used by several relay tests: register a device over HTTP,
 * and open a WebSocket bound to a device by the challenge signature.
 */
import { expect } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import type { TestDevice } from './device.js';
import { request } from './http.js';
import { WsClient } from './ws.js';

export async function registerDevice(baseUrl: string, token: string, device: TestDevice): Promise<void> {
  const res = await request(baseUrl, 'POST', '/v1/devices', { token, json: device.registration() });
  expect(res.status, res.text).toBe(201);
}

/** Opens a connection, answers the challenge and waits for auth_ok. */
export async function connectAuthenticated(wsUrl: string, token: string, device: TestDevice): Promise<WsClient> {
  const { ws, challenge } = await WsClient.connectWithChallenge(wsUrl);
  ws.send({ type: 'auth', token, deviceId: device.deviceId, signature: encodeBase64url(device.authSignature(challenge)) });
  const reply = await ws.reply();
  expect(reply).toEqual({ type: 'auth_ok', userId: device.userId, deviceId: device.deviceId });
  return ws;
}
