/**
 * The WebSocket frame codec at the trust boundary: whatever a peer sends, decoding
 * either yields a typed frame or throws a ProtocolError with a stable code — never a
 * TypeError or a crash — and the size bound is checked before any parsing.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { ProtocolError } from '../../protocol/errors.js';
import { type ClientFrame, decodeClientFrame, encodeClientFrame, encodeServerFrame } from '../../protocol/frames.js';
import { MAX_DEVICE_ID_LENGTH, MAX_FRAME_BYTES, MAX_TOKEN_BYTES, MAX_ORIGIN_LENGTH } from '../../protocol/limits.js';

function decodeError(data: string | Uint8Array): ProtocolError {
  try {
    decodeClientFrame(data);
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw err;
  }
  throw new Error('decoding succeeded');
}

/** Decodes, and fails the property on anything thrown that is not a ProtocolError. */
function decodeOrProtocolError(data: string | Uint8Array): void {
  try {
    decodeClientFrame(data);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw new Error(`threw a non-ProtocolError: ${String(err)}`, { cause: err });
  }
}

const te = new TextEncoder();
const sig = new Uint8Array(64).fill(7);

/** JSON objects shaped like frames: a known or unknown type, plausible and implausible fields. */
const frameLike = fc.record(
  {
    type: fc.oneof(fc.constantFrom('auth', 'ping', 'pong', 'challenge', '__proto__', 'constructor', 'toString', ''), fc.string(), fc.anything()),
    id: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null), fc.anything()),
    token: fc.oneof(fc.string(), fc.anything()),
    deviceId: fc.oneof(fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), fc.string(), fc.anything()),
    signature: fc.oneof(fc.constant(encodeBase64url(sig)), fc.string(), fc.anything()),
  },
  { requiredKeys: [] },
);

describe('decodeClientFrame', () => {
  test.prop([fc.string({ maxLength: 200 })])('throws nothing but ProtocolError on arbitrary strings', (s) => decodeOrProtocolError(s));

  test.prop([fc.string({ unit: 'binary', maxLength: 200 })])('throws nothing but ProtocolError on arbitrary Unicode', (s) =>
    decodeOrProtocolError(s),
  );

  test.prop([fc.uint8Array({ maxLength: 300 })])('throws nothing but ProtocolError on arbitrary bytes', (b) => decodeOrProtocolError(b));

  test.prop([fc.json()])('throws nothing but ProtocolError on arbitrary JSON', (s) => {
    decodeOrProtocolError(s);
    decodeOrProtocolError(te.encode(s));
  });

  test.prop([frameLike])('throws nothing but ProtocolError on frame-shaped objects', (o) => {
    let text: string;
    try {
      text = JSON.stringify(o);
    } catch {
      return; // not representable as JSON (e.g. a BigInt): nothing a peer could send
    }
    if (text === undefined) return;
    decodeOrProtocolError(text);
  });

  const authFrame = fc.record({
    type: fc.constant('auth' as const),
    token: fc.string({ minLength: 1, maxLength: 200 }),
    deviceId: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
    origin: fc.string({ minLength: 1, maxLength: 256 }),
    signature: fc.uint8Array({ minLength: 64, maxLength: 64 }),
  });
  const tokenFrame = fc.record({ type: fc.constant('token' as const), token: fc.string({ minLength: 1, maxLength: 200 }) });
  const pingFrame = fc.record({ type: fc.constant('ping' as const), id: fc.option(fc.integer({ min: 0, max: 0xffff_ffff }), { nil: undefined }) });

  test.prop([fc.oneof(authFrame, pingFrame, tokenFrame)])('round-trips every client frame through encode and decode', (frame: ClientFrame) => {
    const encoded = encodeClientFrame(frame);
    expect(decodeClientFrame(encoded)).toEqual(frame);
    expect(decodeClientFrame(te.encode(encoded))).toEqual(frame);
  });

  it('checks FRAME_TOO_LARGE before parsing', () => {
    // Over the limit by one byte: refused as too large, whether the content is invalid
    // JSON (so parsing would have said BAD_REQUEST) or a valid ping padded with spaces.
    const garbage = '{'.repeat(MAX_FRAME_BYTES + 1);
    expect(decodeError(garbage).code).toBe('FRAME_TOO_LARGE');
    expect(decodeError(te.encode(garbage)).code).toBe('FRAME_TOO_LARGE');
    const ping = '{"type":"ping"}';
    const paddedPing = ping + ' '.repeat(MAX_FRAME_BYTES + 1 - ping.length);
    expect(decodeError(te.encode(paddedPing)).code).toBe('FRAME_TOO_LARGE');
    // Exactly at the limit it is decoded.
    const atLimit = ping + ' '.repeat(MAX_FRAME_BYTES - ping.length);
    expect(te.encode(atLimit).byteLength).toBe(MAX_FRAME_BYTES);
    expect(decodeClientFrame(te.encode(atLimit))).toEqual({ type: 'ping', id: undefined });
  });

  it('counts bytes, not characters, for byte input', () => {
    // 'é' is 2 bytes in UTF-8: half as many characters still exceed the byte limit.
    const s = `{"type":"ping","x":"${'é'.repeat(MAX_FRAME_BYTES / 2)}"}`;
    expect(decodeError(te.encode(s)).code).toBe('FRAME_TOO_LARGE');
  });

  it('answers UNKNOWN_FRAME for a type it does not know, including inherited property names', () => {
    for (const type of ['lease', 'challenge', 'pong', '__proto__', 'constructor', 'hasOwnProperty']) {
      expect(decodeError(JSON.stringify({ type })).code, type).toBe('UNKNOWN_FRAME');
    }
  });

  it('answers BAD_REQUEST for non-objects, a missing type and bad fields', () => {
    for (const s of ['', 'null', '[]', '"ping"', '42', '{', '{"id":1}', '{"type":7}', '{"type":""}']) {
      expect(decodeError(s).code, s).toBe('BAD_REQUEST');
    }
    expect(decodeError(JSON.stringify({ type: 'ping', id: -1 })).code).toBe('BAD_REQUEST');
    expect(decodeError(JSON.stringify({ type: 'ping', id: 1.5 })).code).toBe('BAD_REQUEST');
    expect(decodeError(JSON.stringify({ type: 'ping', id: 0x1_0000_0000 })).code).toBe('BAD_REQUEST');
  });

  it('bounds and checks every auth field', () => {
    const ok = { type: 'auth', token: 't', deviceId: 'phone', origin: 'ws://relay', signature: encodeBase64url(sig) };
    expect(decodeClientFrame(JSON.stringify(ok))).toEqual({ type: 'auth', token: 't', deviceId: 'phone', origin: 'ws://relay', signature: sig });
    const bad: Record<string, unknown>[] = [
      { ...ok, token: '' },
      { ...ok, token: 'x'.repeat(MAX_TOKEN_BYTES + 1) },
      { ...ok, deviceId: 'a'.repeat(MAX_DEVICE_ID_LENGTH + 1) },
      { ...ok, deviceId: 'has space' },
      { ...ok, origin: '' },
      { ...ok, origin: 'w'.repeat(MAX_ORIGIN_LENGTH + 1) },
      { ...ok, deviceId: 'ünïcode' },
      { ...ok, signature: encodeBase64url(new Uint8Array(63)) },
      { ...ok, signature: `${encodeBase64url(sig)}==` },
      { ...ok, signature: 5 },
      { type: 'auth' },
    ];
    for (const o of bad) expect(decodeError(JSON.stringify(o)).code, JSON.stringify(o).slice(0, 80)).toBe('BAD_REQUEST');
  });

  it('keeps the request id of a malformed frame, so the error can echo it', () => {
    const err = decodeError(JSON.stringify({ type: 'auth', id: 42, token: 5 }));
    expect(err.code).toBe('BAD_REQUEST');
    expect(err.details?.id).toBe(42);
  });
});

describe('encodeServerFrame', () => {
  it('encodes the challenge nonce as base64url and other frames as plain JSON', () => {
    const nonce = new Uint8Array(32).map((_, i) => i * 8);
    expect(JSON.parse(encodeServerFrame({ type: 'challenge', nonce }))).toEqual({ type: 'challenge', nonce: encodeBase64url(nonce) });
    expect(JSON.parse(encodeServerFrame({ type: 'pong', id: 3 }))).toEqual({ type: 'pong', id: 3 });
    expect(JSON.parse(encodeServerFrame({ type: 'error', code: 'UNKNOWN_FRAME', message: 'm', id: 9 }))).toEqual({
      type: 'error',
      code: 'UNKNOWN_FRAME',
      message: 'm',
      id: 9,
    });
  });
});

describe('encodeServerFrame: STORED', () => {
  const frame = (strings: fc.Arbitrary<string>) =>
    fc.record({
      type: fc.constant('stored' as const),
      id: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      envelopeId: strings,
      duplicate: fc.boolean(),
      storedAt: fc.integer({ min: 0, max: 2 ** 50 }),
      expiresAt: fc.integer({ min: 0, max: 2 ** 50 }),
      recipients: fc.array(fc.record({ deviceId: strings, seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }) }), { maxLength: 4 }),
    });

  test.prop([frame(fc.stringMatching(/^[A-Za-z0-9_-]{0,30}$/))])('is exactly JSON.stringify of the frame for ordinary ids', (f) => {
    expect(encodeServerFrame(f)).toBe(JSON.stringify(f));
  });

  test.prop([frame(fc.string({ unit: 'binary', maxLength: 12 }))])('is exactly JSON.stringify of the frame for any strings', (f) => {
    expect(encodeServerFrame(f)).toBe(JSON.stringify(f));
  });
});
