import { describe, expect, it } from 'vitest';
import { IdentityKey, IdentityKeyPair, signatureTranscript } from '../../crypto/identity/index.js';
import { toHex, utf8Encode } from '../../crypto/primitives/bytes.js';
import { BACKENDS, expectCryptoError, hex, loadVectors } from './helpers.js';

interface Ed25519Vectors {
  tests: { secretKey: string; publicKey: string; message: string; signature: string }[];
}
const rfc = loadVectors<Ed25519Vectors>('rfc8032-ed25519.json');

describe.each(BACKENDS)('identity (%s)', (_name, b) => {
  it('fromSeed reproduces RFC 8032 keys and signatures', () => {
    for (const v of rfc.tests) {
      const id = IdentityKeyPair.fromSeed(hex(v.secretKey), b);
      expect(toHex(id.publicKey.bytes)).toBe(v.publicKey);
      expect(toHex(id.sign(hex(v.message)))).toBe(v.signature);
      expect(IdentityKey.fromBytes(hex(v.publicKey), b).verify(hex(v.message), hex(v.signature))).toBe(true);
    }
  });

  it('generate, sign, verify; a different key or message fails', () => {
    const a = IdentityKeyPair.generate(undefined, b);
    const c = IdentityKeyPair.generate(undefined, b);
    const msg = utf8Encode('hello');
    const sig = a.sign(msg);
    expect(a.publicKey.verify(msg, sig)).toBe(true);
    expect(c.publicKey.verify(msg, sig)).toBe(false);
    expect(a.publicKey.verify(utf8Encode('hellO'), sig)).toBe(false);
    expect(a.publicKey.equals(c.publicKey)).toBe(false);
    expect(a.publicKey.equals(IdentityKey.fromBytes(a.publicKey.bytes, b))).toBe(true);
    expect(IdentityKeyPair.fromSeed(a.exportSeed(), b).publicKey.equals(a.publicKey)).toBe(true);
  });

  it('context signatures are domain-separated', () => {
    const a = IdentityKeyPair.generate(undefined, b);
    const body = utf8Encode('key bytes');
    const sig = a.signWithContext('published-key', body);
    expect(a.publicKey.verifyWithContext('published-key', body, sig)).toBe(true);
    expect(a.publicKey.verifyWithContext('device-auth', body, sig)).toBe(false);
    expect(a.publicKey.verify(body, sig)).toBe(false); // not valid as a raw signature
    expect(a.publicKey.verify(signatureTranscript('published-key', body), sig)).toBe(true);
  });

  it('IdentityKey input checks', () => {
    expectCryptoError(() => IdentityKey.fromBytes(new Uint8Array(33), b), 'INVALID_KEY', 'identity key must be 32 bytes');
    const identityPoint = hex('0100000000000000000000000000000000000000000000000000000000000000');
    expectCryptoError(
      () => IdentityKey.fromBytes(identityPoint, b),
      'INVALID_KEY',
      'identity key is a small-order or non-canonical point',
    );
    const k = IdentityKeyPair.generate(undefined, b).publicKey;
    expect(k.verify(new Uint8Array(0), new Uint8Array(10))).toBe(false);
    expect(String(k)).toBe(`IdentityKey(${toHex(k.bytes)})`);
    const copy = k.bytes;
    copy.fill(0);
    expect(toHex(k.bytes)).not.toBe(toHex(copy)); // bytes getter hands out a copy
  });
});

describe('signature transcript', () => {
  it('is "hermetic/v1/" || label || NUL || body', () => {
    expect(toHex(signatureTranscript('published-key', new Uint8Array([1, 2])))).toBe(
      toHex(utf8Encode('hermetic/v1/published-key\0')) + '0102',
    );
  });

  it.each(['', 'Upper', 'has space', 'nul\0', 'a'.repeat(65), '-lead', 'trail-', 'a//b', 'é'])(
    'refuses label %j',
    (label) => {
      expectCryptoError(() => signatureTranscript(label, new Uint8Array(0)), 'INVALID_ARGUMENT');
    },
  );
});
