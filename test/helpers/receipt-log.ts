/**
 * Receipt log test helpers: receipts for envelopes a test device really received, signed
 * the way a client signs them (crypto/evidence), and clients of the log's HTTP API that
 * verify what the relay serves with the crypto/tlog verifiers.
 */
import { expect } from 'vitest';
import { signReceipt, type ReceiptPayload } from '../../crypto/evidence/receipt.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { openCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { NoteVerifier } from '../../crypto/tlog/note.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import { decodeLogKeyAnswer, decodeSubmitReceiptsAnswer, type SubmitReceiptsAnswer } from '../../protocol/log.js';
import type { TestDevice } from './device.js';
import { type JsonResponse, request } from './http.js';

/** The receipt `device` would sign for envelopes delivered to it. */
export function receiptPayload(device: TestDevice, delivered: readonly DeliverFrame[], overrides: { seq?: (d: DeliverFrame) => number } = {}): ReceiptPayload {
  return {
    v: 1,
    recipient: { user: device.userId, device: device.deviceId },
    issuedAt: Date.now(),
    entries: delivered.map((d) => ({
      envelopeId: encodeBase64url(d.envelopeId),
      sha256: encodeBase64url(defaultBackend.sha256(d.payload)),
      seq: overrides.seq ? overrides.seq(d) : d.seq,
      sender: { user: d.senderUserId, device: d.senderDeviceId },
      storedAt: d.storedAtMs,
      receivedAt: Date.now(),
      disposition: 'processed' as const,
      flags: [],
    })),
  };
}

/** A receipt signed by `signer` (by default the recipient device itself). */
export function signedReceipt(device: TestDevice, delivered: readonly DeliverFrame[], signer: TestDevice = device): string {
  return signReceipt(signer.identity, receiptPayload(device, delivered));
}

export async function submitReceipts(baseUrl: string, token: string, receipts: readonly unknown[], checkpoint = false): Promise<JsonResponse> {
  return request(baseUrl, 'POST', `/v1/log/receipts${checkpoint ? '?checkpoint=1' : ''}`, { token, json: { receipts } });
}

/** Submits and expects success; the decoded answer. */
export async function submitOk(baseUrl: string, token: string, receipts: readonly string[], checkpoint = false): Promise<SubmitReceiptsAnswer> {
  const res = await submitReceipts(baseUrl, token, receipts, checkpoint);
  expect(res.status, res.text).toBe(200);
  return decodeSubmitReceiptsAnswer(res.body);
}

export interface LogIdentity {
  readonly origin: string;
  readonly verifier: NoteVerifier;
}

export async function logIdentity(baseUrl: string): Promise<LogIdentity> {
  const res = await request(baseUrl, 'GET', '/v1/log/key');
  expect(res.status, res.text).toBe(200);
  const key = decodeLogKeyAnswer(res.body);
  return { origin: key.origin, verifier: NoteVerifier.parse(key.verifierKey) };
}

export interface VerifiedCheckpoint {
  readonly size: number;
  readonly root: Uint8Array;
}

/** Opens a checkpoint note with the log's key (throws when it does not verify). */
export function verifyCheckpoint(note: string, id: LogIdentity): VerifiedCheckpoint {
  const { checkpoint } = openCheckpoint(note, id.origin, [id.verifier]);
  return { size: checkpoint.size, root: checkpoint.rootHash };
}

/** GET /v1/log/checkpoint, verified. */
export async function latestCheckpoint(baseUrl: string, id: LogIdentity): Promise<VerifiedCheckpoint> {
  const res = await fetch(`${baseUrl}/v1/log/checkpoint`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
  return verifyCheckpoint(await res.text(), id);
}

export const fromB64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
