/**
 * Key-directory wire decoders and signed transcripts: counts are checked before any key
 * is decoded, every failure is a ProtocolError naming the field, and transcripts are
 * unambiguous (domain-separated and length-prefixed).
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { parseJsonObject } from '../../protocol/decode.js';
import { decodeDeviceEntryRequest, decodeDeviceListAnswer, decodeKeyUpload, encodeDeviceListAnswer } from '../../protocol/directory.js';
import { ERROR_CODES, ProtocolError } from '../../protocol/errors.js';
import { codeOf } from '../helpers/protocol-error.js';
import { MAX_KEYS_PER_UPLOAD } from '../../protocol/limits.js';
import { deviceAuthTranscript, deviceRegistrationTranscript } from '../../protocol/transcripts.js';

const key32 = { keyId: 1, publicKey: encodeBase64url(new Uint8Array(32)), signature: encodeBase64url(new Uint8Array(64)) };

describe('decodeKeyUpload', () => {
  it(`refuses more than ${MAX_KEYS_PER_UPLOAD} one-time keys before decoding any of them`, () => {
    // The entries are garbage: a count check that ran after decoding would say BAD_REQUEST.
    const half = Math.ceil((MAX_KEYS_PER_UPLOAD + 1) / 2);
    const upload = { oneTimePrekeys: Array(half).fill('garbage'), oneTimeKemPrekeys: Array(MAX_KEYS_PER_UPLOAD + 1 - half).fill(null) };
    expect(codeOf(() => decodeKeyUpload(upload))).toBe('TOO_MANY_KEYS');
    expect(codeOf(() => decodeKeyUpload({ oneTimePrekeys: Array(MAX_KEYS_PER_UPLOAD).fill(key32) }))).toBe('no error');
  });

  it('refuses an empty upload and names the bad field', () => {
    expect(codeOf(() => decodeKeyUpload({}))).toBe('BAD_REQUEST');
    try {
      decodeKeyUpload({ oneTimePrekeys: [key32, { ...key32, publicKey: encodeBase64url(new Uint8Array(31)) }] });
      expect.unreachable();
    } catch (err) {
      expect((err as ProtocolError).code).toBe('BAD_REQUEST');
      expect((err as ProtocolError).message).toContain('oneTimePrekeys[1].publicKey');
    }
  });

  test.prop([fc.json()])('throws nothing but ProtocolError on arbitrary JSON', (text) => {
    for (const decode of [decodeKeyUpload, decodeDeviceEntryRequest, decodeDeviceListAnswer]) {
      try {
        decode(parseJsonObject(text));
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
      }
    }
  });
});

describe('device list answer', () => {
  it('round-trips, and refuses more entries than the list holds', () => {
    const a = { userId: 'alice', length: 3, head: new Uint8Array(32).fill(9), entries: [new Uint8Array([1, 2]), new Uint8Array([3])], devices: [{ deviceId: 'phone', identityKey: new Uint8Array(32).fill(1) }] };
    expect(decodeDeviceListAnswer(JSON.parse(JSON.stringify(encodeDeviceListAnswer(a))))).toEqual(a);
    const empty = { userId: 'bob', length: 0, head: undefined, entries: [], devices: [] };
    expect(decodeDeviceListAnswer(JSON.parse(JSON.stringify(encodeDeviceListAnswer(empty))))).toEqual(empty);
    expect(codeOf(() => decodeDeviceListAnswer({ ...JSON.parse(JSON.stringify(encodeDeviceListAnswer(a))), length: 1 }))).toBe('BAD_REQUEST');
  });
});

describe('transcripts', () => {
  const ik = new Uint8Array(32).fill(1);
  const nonce = new Uint8Array(32).fill(2);

  it('length-prefix fields, so different splits of the same characters differ', () => {
    expect(deviceRegistrationTranscript('ab', 'c', ik)).not.toEqual(deviceRegistrationTranscript('a', 'bc', ik));
    expect(deviceAuthTranscript(nonce, 'ab', 'c', 'ws://r')).not.toEqual(deviceAuthTranscript(nonce, 'a', 'bc', 'ws://r'));
    expect(deviceAuthTranscript(nonce, 'a', 'b', 'ws://r1')).not.toEqual(deviceAuthTranscript(nonce, 'a', 'b', 'ws://r2'));
  });

  it('are domain-separated: a registration transcript is never an auth transcript', () => {
    const reg = new TextDecoder().decode(deviceRegistrationTranscript('u', 'd', ik));
    const auth = new TextDecoder().decode(deviceAuthTranscript(nonce, 'u', 'd', 'wss://relay.example'));
    expect(reg.startsWith('hermetic/v1/device-registration\0')).toBe(true);
    expect(auth.startsWith('hermetic/v1/device-auth/2\0')).toBe(true);
  });
});

describe('error codes', () => {
  it('map to HTTP error statuses and serialize code, message and details', () => {
    for (const [code, { http }] of Object.entries(ERROR_CODES)) {
      expect(http, code).toBeGreaterThanOrEqual(400);
      expect(http, code).toBeLessThan(600);
    }
    const e = new ProtocolError('RATE_LIMITED', 'slow down', { retryAfterMs: 100 });
    expect(e.httpStatus).toBe(429);
    expect(JSON.parse(JSON.stringify(e))).toEqual({ code: 'RATE_LIMITED', message: 'slow down', details: { retryAfterMs: 100 } });
  });
});
