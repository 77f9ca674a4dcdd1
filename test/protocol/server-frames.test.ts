/**
 * What the relay sends a client, decoded by the one decoder the SDK uses: every server
 * frame round-trips through the relay's encoder, DELIVER through its binary codec, and
 * anything malformed is a ProtocolError, never a crash or a half-typed object.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { encodeDeliver } from '../../protocol/envelopes.js';
import { ProtocolError, decodeErrorBody } from '../../protocol/errors.js';
import { codeOf } from '../helpers/protocol-error.js';
import { type ServerFrame, decodeServerFrame, encodeServerFrame } from '../../protocol/frames.js';
import {
  decodeBundleAnswer,
  decodeDeviceEntryAnswer,
  decodeKeyCountsAnswer,
  encodeBundleAnswer,
  encodeKeyCountsAnswer,
} from '../../protocol/directory.js';

const bytes = (n: number, v = 1) => new Uint8Array(n).fill(v);

const FRAMES: ServerFrame[] = [
  { type: 'challenge', nonce: bytes(32, 7) },
  { type: 'auth_ok', userId: 'alice', deviceId: 'phone', expiresAt: 1_800_000_000_000 },
  { type: 'token_ok', expiresAt: 1_800_000_000_000 },
  { type: 'pong', id: 5 },
  { type: 'pong', id: undefined },
  { type: 'stored', id: 9, envelopeId: 'AAAAAAAAAAAAAAAAAAAAAA', duplicate: false, storedAt: 1, expiresAt: 2, recipients: [{ deviceId: 'phone', seq: 3 }] },
  { type: 'queue_empty', through: 0 },
  { type: 'expired', from: 3, to: 7 },
  { type: 'error', code: 'DEVICE_LIST_MISMATCH', message: 'm', id: 4, details: { devices: ['a'] } },
  { type: 'error', code: 'RATE_LIMITED', message: 'slow down' },
];

describe('decodeServerFrame', () => {
  it('decodes every frame the relay encodes', () => {
    for (const f of FRAMES) expect(decodeServerFrame(encodeServerFrame(f))).toEqual(f);
  });

  it('decodes a binary DELIVER', () => {
    const d = { seq: 4, envelopeId: bytes(16, 2), senderUserId: 'bob', senderDeviceId: 'laptop', storedAtMs: 10, expiresAtMs: 20, payload: bytes(100, 3) };
    expect(decodeServerFrame(encodeDeliver(d))).toEqual({ type: 'deliver', ...d });
  });

  it('refuses malformed frames with a code', () => {
    expect(codeOf(() => decodeServerFrame('{"type":"challenge","nonce":"AA"}'))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeServerFrame('{"type":"stored","id":1}'))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeServerFrame('{"type":"expired","from":5,"to":4}'))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeServerFrame('{"type":"error","code":"NOT_A_CODE","message":"x"}'))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeServerFrame('{"type":"surprise"}'))).toBe('UNKNOWN_FRAME');
    expect(codeOf(() => decodeServerFrame(new Uint8Array([0x01, 0, 0])))).toBe('UNKNOWN_FRAME');
    expect(codeOf(() => decodeServerFrame(new Uint8Array([0x02, 0, 0])))).toBe('BAD_REQUEST');
  });

  test.prop([fc.json()])('throws nothing but ProtocolError on arbitrary JSON', (text) => {
    try {
      decodeServerFrame(text);
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
    }
  });

  test.prop([fc.uint8Array({ maxLength: 300 })])('throws nothing but ProtocolError on arbitrary bytes', (b) => {
    try {
      decodeServerFrame(b, true);
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
    }
  });
});

describe('HTTP answers', () => {
  const key = (n: number, id: number) => ({ keyId: id, publicKey: bytes(n, id), signature: bytes(64, 9) });

  it('round-trip a bundle, with and without a one-time prekey', () => {
    const b = { userId: 'bob', deviceId: 'd1', identityKey: bytes(32), signedPrekey: key(32, 1), oneTimePrekey: key(32, 2), kemPrekey: key(1184, 3), kemLastResort: false };
    expect(decodeBundleAnswer(JSON.parse(JSON.stringify(encodeBundleAnswer(b))))).toEqual(b);
    const noOtk = { ...b, oneTimePrekey: undefined, kemLastResort: true };
    expect(decodeBundleAnswer(JSON.parse(JSON.stringify(encodeBundleAnswer(noOtk))))).toEqual(noOtk);
    expect(codeOf(() => decodeBundleAnswer({ ...JSON.parse(JSON.stringify(encodeBundleAnswer(b))), kemPrekey: key(32, 3) }))).toBe('BAD_REQUEST');
  });

  it('round-trip key counts and read a device-list answer', () => {
    const c = { oneTimePrekeys: 3, oneTimeKemPrekeys: 0, hasSignedPrekey: true, hasLastResortKemPrekey: false };
    expect(decodeKeyCountsAnswer(JSON.parse(JSON.stringify(encodeKeyCountsAnswer(c))))).toEqual(c);
    expect(decodeDeviceEntryAnswer({ userId: 'a', seq: 0, kind: 'root', deviceId: 'd', created: true })).toEqual({ userId: 'a', seq: 0, kind: 'root', deviceId: 'd', created: true });
    expect(codeOf(() => decodeDeviceEntryAnswer({ userId: 'a', seq: 0, kind: 'grant', deviceId: 'd', created: true }))).toBe('BAD_REQUEST');
  });

  it('reads an error answer, keeping its code, id and details', () => {
    const e = decodeErrorBody({ code: 'RATE_LIMITED', message: 'later', details: { retryAfterMs: 5 } });
    expect({ code: e.code, details: e.details }).toEqual({ code: 'RATE_LIMITED', details: { retryAfterMs: 5 } });
    expect(decodeErrorBody({ code: 'NOPE', message: 'x' }).code).toBe('BAD_REQUEST');
    expect(decodeErrorBody('junk').code).toBe('BAD_REQUEST');
  });
});
