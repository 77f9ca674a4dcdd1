/**
 * Multi-step client flows used by several relay tests: register a device over HTTP,
 * and open a WebSocket bound to a device by the challenge signature.
 */
import { expect } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import type { DeviceChain } from '../../crypto/devices/chain.js';
import { decodeDeviceListAnswer } from '../../protocol/directory.js';
import { type TestDevice, verifiedChain } from './device.js';
import { request } from './http.js';
import { WsClient } from './ws.js';

/** The user's device list as the relay serves it, verified from its root. */
export async function fetchChain(baseUrl: string, token: string, userId: string): Promise<DeviceChain> {
  const res = await request(baseUrl, 'GET', `/v1/users/${encodeURIComponent(userId)}/devices`, { token });
  expect(res.status, res.text).toBe(200);
  const answer = decodeDeviceListAnswer(res.body);
  return verifiedChain(userId, answer.entries);
}

/** Enrols a device into its user's list: the root, or linked by an enrolled device. */
export async function registerDevice(baseUrl: string, token: string, device: TestDevice, linker?: TestDevice): Promise<void> {
  const chain = await fetchChain(baseUrl, token, device.userId);
  const res = await request(baseUrl, 'POST', '/v1/devices', { token, json: device.enrolBody(chain, linker) });
  expect(res.status, res.text).toBe(201);
  device.markEnrolled();
}

/** Opens a connection, answers the challenge and waits for auth_ok. */
export async function connectAuthenticated(wsUrl: string, token: string, device: TestDevice): Promise<WsClient> {
  const { ws, challenge } = await WsClient.connectWithChallenge(wsUrl);
  ws.send(device.authFrame(challenge, token, wsUrl));
  const reply = await ws.reply();
  expect(reply).toEqual({ type: 'auth_ok', userId: device.userId, deviceId: device.deviceId, expiresAt: expect.any(Number) });
  return ws;
}
