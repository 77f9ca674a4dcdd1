/**
 * Project Wycheproof vectors (test/vectors/wycheproof/, Apache-2.0), every valid,
 * invalid and acceptable case, against both backends. Each file's count is asserted so a
 * truncated or emptied file fails instead of passing vacuously.
 *
 * Decisions for `acceptable` cases (also in docs/CRYPTO.md, "Wycheproof decisions"):
 *  - X25519, flag ZeroSharedSecret / LowOrderPublic (31 cases): REJECT with INVALID_KEY.
 *    A low-order public key forces an all-zero shared secret regardless of our private
 *    key (RFC 7748 §6.1 allows the check; we require it).
 *  - X25519, flags Twist, NonCanonicalPublic, EdgeCase* with a non-zero result (223
 *    cases): ACCEPT and return the expected value. RFC 7748 §5 says to mask the top bit
 *    and reduce non-canonical u mod p, and X25519 is twist-secure, so rejecting them
 *    would only break interoperability.
 * Ed25519, ChaCha20-Poly1305, HKDF, HMAC and the ML-KEM files have no acceptable cases.
 */
import { describe, expect, it } from 'vitest';
import { DECRYPT_FAILED_MESSAGE } from '../../crypto/primitives/noble.js';
import { BACKENDS, expectCryptoError, hex, loadWycheproof, toH, type WycheproofCase } from './helpers.js';

interface XdhCase extends WycheproofCase {
  public: string;
  private: string;
  shared: string;
}
interface EddsaCase extends WycheproofCase {
  msg: string;
  sig: string;
}
interface AeadCase extends WycheproofCase {
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
}
interface HkdfCase extends WycheproofCase {
  ikm: string;
  salt: string;
  info: string;
  size: number;
  okm: string;
}
interface MacCase extends WycheproofCase {
  key: string;
  msg: string;
  tag: string;
}

const x25519 = loadWycheproof<{ curve: string; tests: XdhCase[] }>('x25519_test.json');
const ed25519 = loadWycheproof<{ publicKey: { pk: string }; tests: EddsaCase[] }>('ed25519_test.json');
const chacha = loadWycheproof<{ ivSize: number; keySize: number; tagSize: number; tests: AeadCase[] }>(
  'chacha20_poly1305_test.json',
);
const hkdf = loadWycheproof<{ tests: HkdfCase[] }>('hkdf_sha256_test.json');
const hmac = loadWycheproof<{ keySize: number; tagSize: number; tests: MacCase[] }>('hmac_sha256_test.json');

function counts(cases: { test: WycheproofCase }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { test } of cases) out[test.result] = (out[test.result] ?? 0) + 1;
  return out;
}

describe('Wycheproof files are complete', () => {
  it.each([
    ['x25519_test.json', x25519, 518, { valid: 264, acceptable: 254 }],
    ['ed25519_test.json', ed25519, 151, { valid: 88, invalid: 63 }],
    ['chacha20_poly1305_test.json', chacha, 325, { valid: 256, invalid: 69 }],
    ['hkdf_sha256_test.json', hkdf, 86, { valid: 83, invalid: 3 }],
    ['hmac_sha256_test.json', hmac, 174, { valid: 66, invalid: 108 }],
  ] as const)('%s', (_f, data, total, byResult) => {
    expect(data.file.numberOfTests).toBe(total);
    expect(data.cases.length).toBe(total);
    expect(counts(data.cases)).toEqual(byResult);
  });
});

describe.each(BACKENDS)('Wycheproof (%s)', (_name, b) => {
  it('x25519_test.json: valid computed, zero-shared rejected, other acceptable computed', () => {
    let computed = 0;
    let rejected = 0;
    for (const { group, test: t } of x25519.cases) {
      expect(group.curve).toBe('curve25519');
      const zero = /^(00)+$/.test(t.shared);
      // The two flags coincide in this file; the decision keys on the output.
      expect(t.flags.includes('LowOrderPublic'), `tcId ${t.tcId}`).toBe(zero);
      if (zero) {
        expect(t.result, `tcId ${t.tcId}`).toBe('acceptable');
        expectCryptoError(() => b.x25519(hex(t.private), hex(t.public)), 'INVALID_KEY');
        rejected++;
      } else {
        expect(toH(b.x25519(hex(t.private), hex(t.public))), `tcId ${t.tcId}`).toBe(t.shared);
        computed++;
      }
    }
    expect({ computed, rejected }).toEqual({ computed: 487, rejected: 31 });
  });

  it('ed25519_test.json: every valid verifies, every invalid does not', () => {
    let checked = 0;
    for (const { group, test: t } of ed25519.cases) {
      const ok = b.ed25519Verify(hex(t.sig), hex(t.msg), hex(group.publicKey.pk));
      expect(ok, `tcId ${t.tcId} ${t.comment ?? ''}`).toBe(t.result === 'valid');
      checked++;
    }
    expect(checked).toBe(151);
  });

  it('chacha20_poly1305_test.json: seal and open; modified tags and bad nonces refused', () => {
    let sealed = 0;
    let refused = 0;
    for (const { group, test: t } of chacha.cases) {
      expect(group.keySize).toBe(256);
      expect(group.tagSize).toBe(128);
      const key = hex(t.key);
      const nonce = hex(t.iv);
      const aad = hex(t.aad);
      const wire = hex(t.ct + t.tag);
      if (group.ivSize !== 96) {
        // Our AEAD takes exactly 96-bit nonces (RFC 8439); other sizes are a caller bug.
        expect(t.result, `tcId ${t.tcId}`).toBe('invalid');
        expectCryptoError(() => b.aeadSeal(key, nonce, hex(t.msg), aad), 'INVALID_ARGUMENT', 'aead nonce must be 12 bytes');
        expectCryptoError(() => b.aeadOpen(key, nonce, wire, aad), 'INVALID_ARGUMENT', 'aead nonce must be 12 bytes');
        refused++;
      } else if (t.result === 'valid') {
        expect(toH(b.aeadSeal(key, nonce, hex(t.msg), aad)), `tcId ${t.tcId}`).toBe(t.ct + t.tag);
        expect(toH(b.aeadOpen(key, nonce, wire, aad)), `tcId ${t.tcId}`).toBe(t.msg);
        sealed++;
      } else {
        expectCryptoError(() => b.aeadOpen(key, nonce, wire, aad), 'DECRYPT_FAILED', DECRYPT_FAILED_MESSAGE);
        refused++;
      }
    }
    expect({ sealed, refused }).toEqual({ sealed: 256, refused: 69 });
  });

  it('hkdf_sha256_test.json: outputs match; sizes over 255*32 refused', () => {
    let derived = 0;
    let refused = 0;
    for (const { test: t } of hkdf.cases) {
      if (t.result === 'valid') {
        expect(toH(b.hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size)), `tcId ${t.tcId}`).toBe(t.okm);
        derived++;
      } else {
        expect(t.flags).toEqual(['SizeTooLarge']);
        expectCryptoError(() => b.hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size), 'INVALID_ARGUMENT');
        refused++;
      }
    }
    expect({ derived, refused }).toEqual({ derived: 83, refused: 3 });
  });

  it('hmac_sha256_test.json: full and truncated tags', () => {
    // Our API always returns the full 32-byte tag; the 128-bit groups are checked by
    // comparing the tag's prefix, which is what a truncating verifier does.
    let checked = 0;
    for (const { group, test: t } of hmac.cases) {
      expect(group.tagSize % 8).toBe(0);
      const mac = b.hmacSha256(hex(t.key), hex(t.msg));
      const prefix = toH(mac.subarray(0, group.tagSize / 8));
      expect(prefix === t.tag, `tcId ${t.tcId}`).toBe(t.result === 'valid');
      checked++;
    }
    expect(checked).toBe(174);
  });
});
