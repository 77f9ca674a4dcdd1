/**
 * Strict base64url (RFC 4648 §5, unpadded): round trips, agreement with Node's encoder,
 * and canonical-only decoding — every accepted string is exactly the encoding of what
 * it decodes to, so two different strings never name the same key.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it, vi } from 'vitest';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const te = new TextEncoder();

describe('base64url', () => {
  it('matches the RFC 4648 §10 test vectors (unpadded)', () => {
    const vectors: [string, string][] = [
      ['', ''],
      ['f', 'Zg'],
      ['fo', 'Zm8'],
      ['foo', 'Zm9v'],
      ['foob', 'Zm9vYg'],
      ['fooba', 'Zm9vYmE'],
      ['foobar', 'Zm9vYmFy'],
    ];
    for (const [plain, encoded] of vectors) {
      expect(encodeBase64url(te.encode(plain))).toBe(encoded);
      expect(decodeBase64url(encoded)).toEqual(te.encode(plain));
    }
  });

  it('uses the URL-safe alphabet', () => {
    expect(encodeBase64url(new Uint8Array([0xfb, 0xff, 0xbf]))).toBe('-_-_');
    expect(decodeBase64url('-_-_')).toEqual(new Uint8Array([0xfb, 0xff, 0xbf]));
  });

  it('rejects non-canonical and malformed input', () => {
    for (const s of [
      'QR', // non-zero trailing bits: 'QQ' is the canonical encoding of 0x41
      'QQ==', // padding
      'QQ=',
      'Q', // a length of 1 mod 4 carries fewer than 8 bits
      'Zm9vY',
      '+/+/', // standard base64 alphabet
      'Zm9v ',
      ' Zm9v',
      'Zm\n9v',
      'Zm9v\u00e9',
      'Zm9v\u0000',
    ]) {
      expect(decodeBase64url(s), JSON.stringify(s)).toBeUndefined();
    }
    expect(decodeBase64url('QQ')).toEqual(new Uint8Array([0x41]));
  });

  test.prop([fc.uint8Array({ maxLength: 300 })])('round-trips any bytes', (bytes) => {
    expect(decodeBase64url(encodeBase64url(bytes))).toEqual(bytes);
  });

  test.prop([fc.uint8Array({ maxLength: 300 })])("agrees with Node's base64url encoder", (bytes) => {
    expect(encodeBase64url(bytes)).toBe(Buffer.from(bytes).toString('base64url'));
  });

  // Strings over the alphabet hit the interesting cases (trailing bits, lengths) often;
  // arbitrary strings cover everything else.
  // Up to 400 characters: both the loops and (from NATIVE_FROM on) Node's native codec.
  const alphabetString = fc.string({ unit: fc.constantFrom(...ALPHABET), maxLength: 400 });
  const anyString = fc.oneof(alphabetString, fc.string({ maxLength: 400 }), fc.string({ unit: 'binary', maxLength: 400 }));

  test.prop([anyString])('accepts only canonical encodings', (s) => {
    const decoded = decodeBase64url(s);
    if (decoded !== undefined) expect(encodeBase64url(decoded)).toBe(s);
  });

  test.prop([alphabetString])('decodes exactly what Node decodes, when it accepts', (s) => {
    const decoded = decodeBase64url(s);
    if (decoded !== undefined) expect(decoded).toEqual(new Uint8Array(Buffer.from(s, 'base64url')));
    else expect(s.length % 4 === 1 || Buffer.from(Buffer.from(s, 'base64url')).toString('base64url') !== s).toBe(true);
  });

  test.prop([fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), fc.constantFrom('=', '+', '/', ' ', '.', '\n', '\u00ff', '\u{1f600}')])(
    'rejects an encoding with any character outside the alphabet inserted',
    (bytes, pos, ch) => {
      const enc = encodeBase64url(bytes);
      const at = pos % (enc.length + 1);
      expect(decodeBase64url(enc.slice(0, at) + ch + enc.slice(at))).toBeUndefined();
    },
  );

  test.prop([fc.uint8Array({ minLength: 72, maxLength: 300 }), fc.nat(), fc.constantFrom(1, 2, 4, 8, 16, 32)])(
    'a long encoding with a trailing bit set is refused, as a short one is',
    (bytes, _n, bit) => {
      const enc = encodeBase64url(bytes.length % 3 === 0 ? bytes.subarray(1) : bytes);
      const last = ALPHABET.indexOf(enc[enc.length - 1]!);
      const unused = enc.length % 4 === 2 ? 15 : 3; // 4 or 2 bits unused
      if ((bit & unused) === 0) return;
      expect(decodeBase64url(enc.slice(0, -1) + ALPHABET[last | bit])).toBeUndefined();
    },
  );

  it('works beside a browser polyfill of Buffer that knows no base64url', async () => {
    // As the common polyfill does: "base64url" is an unknown encoding to it.
    const unknown = (): never => {
      throw new TypeError('Unknown encoding: base64url');
    };
    const Polyfill = { from: () => ({ length: 0, toString: unknown }), isEncoding: (e: string) => e === 'base64' || e === 'utf8' };
    const real = globalThis.Buffer;
    vi.resetModules();
    (globalThis as { Buffer?: unknown }).Buffer = Polyfill;
    try {
      const codec = await import('../../protocol/base64url.js');
      const bytes = new Uint8Array(200).map((_, i) => i);
      const enc = codec.encodeBase64url(bytes);
      expect(enc).toBe(real.from(bytes).toString('base64url'));
      expect(codec.decodeBase64url(enc)).toEqual(bytes);
    } finally {
      globalThis.Buffer = real;
      vi.resetModules();
    }
  });
});
