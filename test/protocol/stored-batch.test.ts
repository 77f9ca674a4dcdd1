/**
 * The STORED_BATCH codec (docs/PROTOCOL.md, "STORED_BATCH"): what the relay encodes the
 * client decodes to the answers the JSON `stored` frames would have carried, and every
 * malformed frame — truncated anywhere, oversized, of another version, with a count or
 * a field out of range, or random bytes — is a ProtocolError with a code, never a crash.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { BinaryWriter } from '../../protocol/binary.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { ProtocolError } from '../../protocol/errors.js';
import { codeOf } from '../helpers/protocol-error.js';
import { decodeServerFrame, encodeClientFrame, decodeClientFrame } from '../../protocol/frames.js';
import { MAX_DEVICE_ID_LENGTH, MAX_FRAME_BYTES, MAX_STORED_PER_BATCH, MAX_TARGETS_PER_SEND } from '../../protocol/limits.js';
import {
  FEATURE_STORED_BATCH,
  MAX_STORED_BATCH_BYTES,
  type StoredAnswer,
  decodeStoredBatch,
  encodeStoredBatch,
} from '../../protocol/stored-batch.js';

const answer = (id: number, over: Partial<StoredAnswer> = {}): StoredAnswer => ({
  id,
  envelopeId: new Uint8Array(16).fill(id & 0xff),
  duplicate: id % 2 === 0,
  storedAt: 1_800_000_000_000 + id,
  expiresAt: 1_800_003_600_000 + id,
  recipients: [{ deviceId: 'phone', seq: id + 1 }, { deviceId: 'laptop_2', seq: 2 ** 40 + id }],
  ...over,
});

const deviceId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
const storedAnswer = fc.record({
  id: fc.integer({ min: 0, max: 0xffff_ffff }),
  envelopeId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  duplicate: fc.boolean(),
  storedAt: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  expiresAt: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  recipients: fc.array(fc.record({ deviceId, seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }) }), { minLength: 1, maxLength: MAX_TARGETS_PER_SEND }),
});

/** A frame header with any count, then `body`. */
function frame(version: number, count: number, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  return new BinaryWriter(8 + body.length).u8(0x03).u8(version).u16(count).bytes(body).finish().slice();
}

describe('STORED_BATCH', () => {
  test.prop([fc.array(storedAnswer, { minLength: 1, maxLength: 40 })])('decodes what the relay encodes, as the JSON stored frames would say it', (answers) => {
    const f = decodeServerFrame(encodeStoredBatch(answers));
    expect(f).toEqual({
      type: 'stored_batch',
      answers: answers.map((a) => ({ type: 'stored', ...a, envelopeId: encodeBase64url(a.envelopeId) })),
    });
  });

  it('encodes into a reused writer, each frame valid until the next', () => {
    const w = new BinaryWriter(16);
    const first = encodeStoredBatch([answer(1)], w).slice();
    const second = encodeStoredBatch([answer(2), answer(3)], w);
    expect(decodeStoredBatch(first).answers.map((a) => a.id)).toEqual([1]);
    expect(decodeStoredBatch(second).answers.map((a) => a.id)).toEqual([2, 3]);
  });

  it('fits the largest frame it can carry inside the frame limit', () => {
    const longest = Array.from({ length: MAX_TARGETS_PER_SEND }, (_, k) => ({ deviceId: `${k}`.padEnd(MAX_DEVICE_ID_LENGTH, 'x'), seq: Number.MAX_SAFE_INTEGER }));
    const answers = Array.from({ length: MAX_STORED_PER_BATCH }, (_, i) => answer(i, { recipients: longest }));
    const bytes = encodeStoredBatch(answers);
    expect(bytes.length).toBe(MAX_STORED_BATCH_BYTES);
    expect(MAX_STORED_BATCH_BYTES).toBeLessThan(MAX_FRAME_BYTES);
    expect(decodeStoredBatch(bytes).answers).toHaveLength(MAX_STORED_PER_BATCH);
    expect(() => encodeStoredBatch([...answers, answer(1)])).toThrow(RangeError);
    expect(() => encodeStoredBatch([])).toThrow(RangeError);
  });

  it('refuses a frame truncated anywhere, or with bytes after the last answer', () => {
    const whole = encodeStoredBatch([answer(1), answer(2)]).slice();
    for (let n = 0; n < whole.length; n++) {
      expect(codeOf(() => decodeStoredBatch(whole.subarray(0, n))), `cut at ${n}`).not.toBe('no error');
      expect(codeOf(() => decodeServerFrame(whole.subarray(0, n), true)), `cut at ${n}`).not.toBe('no error');
    }
    const longer = new Uint8Array(whole.length + 1);
    longer.set(whole);
    expect(codeOf(() => decodeStoredBatch(longer))).toBe('BAD_REQUEST');
  });

  it('refuses an oversized frame before reading it', () => {
    const big = new Uint8Array(MAX_STORED_BATCH_BYTES + 1);
    big.set(frame(1, 1));
    expect(codeOf(() => decodeStoredBatch(big))).toBe('FRAME_TOO_LARGE');
    expect(codeOf(() => decodeServerFrame(new Uint8Array(MAX_FRAME_BYTES + 1).fill(3), true))).toBe('FRAME_TOO_LARGE');
  });

  it('refuses other versions, counts out of range and counts the frame cannot hold', () => {
    const one = encodeStoredBatch([answer(1)]).slice();
    const body = one.subarray(4);
    expect(codeOf(() => decodeStoredBatch(frame(2, 1, body)))).toBe('UNKNOWN_FRAME');
    expect(codeOf(() => decodeStoredBatch(frame(0, 1, body)))).toBe('UNKNOWN_FRAME');
    expect(codeOf(() => decodeStoredBatch(frame(1, 0)))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeStoredBatch(frame(1, MAX_STORED_PER_BATCH + 1, body)))).toBe('BAD_REQUEST');
    // A count of 256 with one answer's bytes: refused from the count, before any answer.
    expect(codeOf(() => decodeStoredBatch(frame(1, MAX_STORED_PER_BATCH, body)))).toBe('BAD_REQUEST');
    expect(decodeStoredBatch(frame(1, 1, body)).answers).toHaveLength(1);
  });

  it('refuses unknown flags, recipient counts out of range, a sequence of 0 and bad device ids', () => {
    const one = encodeStoredBatch([answer(1, { recipients: [{ deviceId: 'ab', seq: 5 }] })]).slice();
    // Offsets in that frame: header 4, id 4, envelope id 16, flags, storedAt 8, expiresAt 8, count, str8 "ab", seq 8.
    const FLAGS = 4 + 4 + 16;
    const COUNT = FLAGS + 1 + 16;
    const DEVICE = COUNT + 2;
    const SEQ = DEVICE + 2;
    const patched = (at: number, v: number): Uint8Array => {
      const b = one.slice();
      b[at] = v;
      return b;
    };
    expect(codeOf(() => decodeStoredBatch(patched(FLAGS, 0x02)))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeStoredBatch(patched(COUNT, 0)))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeStoredBatch(patched(COUNT, MAX_TARGETS_PER_SEND + 1)))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeStoredBatch(patched(DEVICE, '!'.charCodeAt(0))))).toBe('BAD_REQUEST');
    const zeroSeq = one.slice();
    zeroSeq.fill(0, SEQ, SEQ + 8);
    expect(codeOf(() => decodeStoredBatch(zeroSeq))).toBe('BAD_REQUEST');
    // A sequence beyond 2^53 - 1 is out of range too.
    expect(codeOf(() => decodeStoredBatch(patched(SEQ, 0xff)))).toBe('BAD_REQUEST');
    expect(decodeStoredBatch(patched(FLAGS, 0x01)).answers[0]!.duplicate).toBe(true);
  });

  test.prop([fc.uint8Array({ maxLength: 400 })])('throws nothing but ProtocolError on random bytes after the type byte', (rest) => {
    const b = new Uint8Array(rest.length + 1);
    b[0] = 0x03;
    b.set(rest, 1);
    try {
      decodeServerFrame(b, true);
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
    }
  });
});

describe('auth features', () => {
  const auth = { type: 'auth' as const, token: 't', deviceId: 'phone', origin: 'ws://relay', signature: new Uint8Array(64) };

  it('carries the features a client names, and none when it names none', () => {
    expect(decodeClientFrame(encodeClientFrame({ ...auth, features: [FEATURE_STORED_BATCH] }))).toEqual({ ...auth, features: [FEATURE_STORED_BATCH] });
    expect(JSON.parse(encodeClientFrame(auth))).not.toHaveProperty('features');
    expect(JSON.parse(encodeClientFrame({ ...auth, features: [] }))).not.toHaveProperty('features');
  });

  it('bounds the list and each name', () => {
    const json = (features: unknown): string => JSON.stringify({ ...JSON.parse(encodeClientFrame(auth)), features });
    expect(codeOf(() => decodeClientFrame(json('stored-batch/1')))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeClientFrame(json(Array.from({ length: 17 }, () => 'x'))))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeClientFrame(json(['x'.repeat(33)])))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeClientFrame(json([''])))).toBe('BAD_REQUEST');
    expect(codeOf(() => decodeClientFrame(json([1])))).toBe('BAD_REQUEST');
    expect(decodeClientFrame(json(Array.from({ length: 16 }, () => 'x'.repeat(32))))).toMatchObject({ type: 'auth' });
  });

  it('reads the features an auth_ok names', () => {
    expect(decodeServerFrame('{"type":"auth_ok","userId":"a","deviceId":"b","expiresAt":1,"features":["stored-batch/1"]}')).toEqual({
      type: 'auth_ok',
      userId: 'a',
      deviceId: 'b',
      expiresAt: 1,
      features: ['stored-batch/1'],
    });
  });
});
