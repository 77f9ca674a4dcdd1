import { fc, it } from '@fast-check/vitest';
import { describe, expect } from 'vitest';
import {
  concatBytes,
  equalBytes,
  fromBase64Url,
  fromHex,
  readU32be,
  readU64be,
  toBase64Url,
  toHex,
  u32be,
  u64be,
  utf8Decode,
  utf8Encode,
} from '../../crypto/primitives/bytes.js';
import { expectCryptoError } from './helpers.js';

describe('bytes', () => {
  it('equalBytes', () => {
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0]))).toBe(false);
    expect(equalBytes(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });

  it.prop([fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 })])('equalBytes agrees with a naive compare', (a, b) => {
    expect(equalBytes(a, b)).toBe(a.length === b.length && a.every((v, i) => v === b[i]));
    expect(equalBytes(a, a.slice())).toBe(true);
  });

  it('concatBytes', () => {
    expect(concatBytes(new Uint8Array([1]), new Uint8Array(0), new Uint8Array([2, 3]))).toEqual(new Uint8Array([1, 2, 3]));
    expect(concatBytes()).toEqual(new Uint8Array(0));
  });

  it.prop([fc.uint8Array({ maxLength: 100 })])('hex and base64url round trip; base64url matches Node', (b) => {
    expect(fromHex(toHex(b))).toEqual(b);
    expect(toHex(b)).toBe(Buffer.from(b).toString('hex'));
    expect(toBase64Url(b)).toBe(Buffer.from(b).toString('base64url'));
    expect(fromBase64Url(toBase64Url(b))).toEqual(b);
  });

  it('fromHex accepts upper case and refuses junk', () => {
    expect(fromHex('ABcd')).toEqual(new Uint8Array([0xab, 0xcd]));
    expectCryptoError(() => fromHex('abc'), 'INVALID_ARGUMENT', 'hex string must have even length');
    expectCryptoError(() => fromHex('zz'), 'INVALID_ARGUMENT', 'hex string has a non-hex character');
  });

  it('fromBase64Url is strict', () => {
    expectCryptoError(() => fromBase64Url('AA=='), 'INVALID_ARGUMENT'); // padding
    expectCryptoError(() => fromBase64Url('A+'), 'INVALID_ARGUMENT'); // standard alphabet
    expectCryptoError(() => fromBase64Url('A'), 'INVALID_ARGUMENT', 'not canonical base64url');
    // "AB" and "AA" both start with 6 zero bits, but "AB" sets an unused trailing bit.
    expect(fromBase64Url('AA')).toEqual(new Uint8Array([0]));
    expectCryptoError(() => fromBase64Url('AB'), 'INVALID_ARGUMENT', 'not canonical base64url');
    expectCryptoError(() => fromBase64Url('é'), 'INVALID_ARGUMENT');
  });

  it('utf8', () => {
    expect(utf8Decode(utf8Encode('héllo ✓'))).toBe('héllo ✓');
    expectCryptoError(() => utf8Decode(new Uint8Array([0xff])), 'INVALID_ARGUMENT', 'bytes are not valid UTF-8');
  });

  it('u32 / u64 big-endian', () => {
    expect(u32be(0x01020304)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(readU32be(new Uint8Array([0, 0xff, 0xff, 0xff, 0xff]), 1)).toBe(0xffffffff);
    expect(u64be(0x0102030405060708n)).toEqual(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(u64be(2 ** 53 - 1)).toEqual(new Uint8Array([0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    expect(readU64be(u64be(0xffff_ffff_ffff_ffffn))).toBe(0xffff_ffff_ffff_ffffn);
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) expectCryptoError(() => u32be(bad), 'INVALID_ARGUMENT');
    for (const bad of [-1, 2 ** 53, -1n, 1n << 64n]) expectCryptoError(() => u64be(bad), 'INVALID_ARGUMENT');
    expectCryptoError(() => readU32be(new Uint8Array(3)), 'INVALID_ARGUMENT', 'u32 read out of bounds');
    expectCryptoError(() => readU64be(new Uint8Array(8), 1), 'INVALID_ARGUMENT', 'u64 read out of bounds');
  });

  it.prop([fc.integer({ min: 0, max: 0xffffffff }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })])('integer round trips', (a, b) => {
    expect(readU32be(u32be(a))).toBe(a);
    expect(readU64be(u64be(b))).toBe(b);
  });
});
