/**
 * Known-answer tests from the RFCs, run against both backends. Vector files in
 * test/vectors/ name their source section.
 */
import { describe, expect, it } from 'vitest';
import { BACKENDS, expectCryptoError, hex, loadVectors, toH } from './helpers.js';

interface X25519Vectors {
  scalarMult: { id: string; scalar: string; u: string; output: string }[];
  iterated: { start: string; after1: string; after1000: string };
  diffieHellman: {
    alicePrivate: string;
    alicePublic: string;
    bobPrivate: string;
    bobPublic: string;
    shared: string;
  };
}
interface Ed25519Vectors {
  tests: { id: string; secretKey: string; publicKey: string; message: string; signature: string }[];
}
interface HkdfVectors {
  tests: { id: string; ikm: string; salt: string; info: string; length: number; prk: string; okm: string }[];
}
interface HmacVectors {
  tests: { id: string; key: string; data: string; mac: string; truncatedBytes?: number }[];
}
interface AeadVectors {
  tests: { id: string; key: string; nonce: string; aad: string; plaintext: string; ciphertext: string; tag: string }[];
}

const x = loadVectors<X25519Vectors>('rfc7748-x25519.json');
const ed = loadVectors<Ed25519Vectors>('rfc8032-ed25519.json');
const hkdf = loadVectors<HkdfVectors>('rfc5869-hkdf-sha256.json');
const hmac = loadVectors<HmacVectors>('rfc4231-hmac-sha256.json');
const aead = loadVectors<AeadVectors>('rfc8439-chacha20-poly1305.json');

describe.each(BACKENDS)('RFC vectors (%s)', (_name, b) => {
  describe('RFC 7748 X25519', () => {
    it.each(x.scalarMult)('§5.2 $id', (v) => {
      expect(toH(b.x25519(hex(v.scalar), hex(v.u)))).toBe(v.output);
    });

    it('§5.2 iterated 1 and 1000 times', () => {
      let k = hex(x.iterated.start);
      let u = hex(x.iterated.start);
      for (let i = 1; i <= 1000; i++) {
        const next = b.x25519(k, u);
        u = k;
        k = next;
        if (i === 1) expect(toH(k)).toBe(x.iterated.after1);
      }
      expect(toH(k)).toBe(x.iterated.after1000);
    });

    it('§6.1 Diffie-Hellman', () => {
      const v = x.diffieHellman;
      expect(toH(b.x25519PublicKey(hex(v.alicePrivate)))).toBe(v.alicePublic);
      expect(toH(b.x25519PublicKey(hex(v.bobPrivate)))).toBe(v.bobPublic);
      expect(toH(b.x25519(hex(v.alicePrivate), hex(v.bobPublic)))).toBe(v.shared);
      expect(toH(b.x25519(hex(v.bobPrivate), hex(v.alicePublic)))).toBe(v.shared);
    });
  });

  describe('RFC 8032 §7.1 Ed25519', () => {
    it('has the 1023-byte message vector', () => {
      expect(ed.tests.map((t) => t.id)).toEqual(['TEST 1', 'TEST 2', 'TEST 3', 'TEST 1024', 'TEST SHA(abc)']);
      expect(hex(ed.tests[3]!.message).length).toBe(1023);
    });

    it.each(ed.tests)('$id', (v) => {
      const seed = hex(v.secretKey);
      const msg = hex(v.message);
      expect(toH(b.ed25519PublicKey(seed))).toBe(v.publicKey);
      expect(toH(b.ed25519Sign(seed, msg))).toBe(v.signature);
      expect(b.ed25519Verify(hex(v.signature), msg, hex(v.publicKey))).toBe(true);
      const tampered = hex(v.signature);
      tampered[0]! ^= 1;
      expect(b.ed25519Verify(tampered, msg, hex(v.publicKey))).toBe(false);
    });
  });

  describe('RFC 5869 HKDF-SHA256', () => {
    it.each(hkdf.tests)('$id', (v) => {
      const okm = b.hkdfSha256(hex(v.ikm), hex(v.salt), hex(v.info), v.length);
      expect(toH(okm)).toBe(v.okm);
      // PRK = HMAC-Hash(salt, IKM); an absent salt is HashLen zero bytes (§2.2).
      const salt = v.salt === '' ? new Uint8Array(32) : hex(v.salt);
      expect(toH(b.hmacSha256(salt, hex(v.ikm)))).toBe(v.prk);
    });
  });

  describe('RFC 4231 HMAC-SHA256', () => {
    it.each(hmac.tests)('$id', (v) => {
      const mac = b.hmacSha256(hex(v.key), hex(v.data));
      expect(mac.length).toBe(32);
      // Test case 5 publishes only the first 128 bits.
      expect(toH(mac.subarray(0, v.truncatedBytes ?? 32))).toBe(v.mac);
    });
  });

  describe('RFC 8439 §2.8.2 ChaCha20-Poly1305', () => {
    it.each(aead.tests)('$id seal and open', (v) => {
      const sealed = b.aeadSeal(hex(v.key), hex(v.nonce), hex(v.plaintext), hex(v.aad));
      expect(toH(sealed)).toBe(v.ciphertext + v.tag);
      expect(toH(b.aeadOpen(hex(v.key), hex(v.nonce), sealed, hex(v.aad)))).toBe(v.plaintext);
      const badAad = hex(v.aad);
      badAad[0]! ^= 1;
      expectCryptoError(() => b.aeadOpen(hex(v.key), hex(v.nonce), sealed, badAad), 'DECRYPT_FAILED');
    });
  });

  describe('FIPS 180-4 SHA-2 (abc)', () => {
    // FIPS 180-2 appendix examples for the one-block message "abc".
    it('sha256 and sha512', () => {
      const abc = new TextEncoder().encode('abc');
      expect(toH(b.sha256(abc))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
      expect(toH(b.sha512(abc))).toBe(
        'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
      );
    });
  });
});
