/**
 * ML-KEM-768 (FIPS 203): Wycheproof keygen-from-seed + decapsulation vectors
 * (mlkem_768_test.json) and encapsulation vectors with the public-key modulus check
 * (mlkem_768_encaps_test.json), against both backends, plus round trips.
 */
import { describe, expect, it } from 'vitest';
import {
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
} from '../../crypto/primitives/sizes.js';
import { BACKENDS, expectCryptoError, hex, loadWycheproof, toH, type WycheproofCase } from './helpers.js';

interface DecapsCase extends WycheproofCase {
  seed: string;
  ek?: string;
  c: string;
  K: string;
}
interface EncapsCase extends WycheproofCase {
  ek: string;
  m: string;
  c: string;
  K: string;
}

const decaps = loadWycheproof<{ parameterSet: string; tests: DecapsCase[] }>('mlkem_768_test.json');
const encaps = loadWycheproof<{ parameterSet: string; tests: EncapsCase[] }>('mlkem_768_encaps_test.json');

describe('ML-KEM Wycheproof files are complete', () => {
  it('counts', () => {
    expect(decaps.file.numberOfTests).toBe(193);
    expect(decaps.cases.length).toBe(193);
    expect(encaps.file.numberOfTests).toBe(265);
    expect(encaps.cases.length).toBe(265);
    for (const { group } of [...decaps.cases, ...encaps.cases]) expect(group.parameterSet).toBe('ML-KEM-768');
  });
});

describe.each(BACKENDS)('ML-KEM-768 (%s)', (_name, b) => {
  it('mlkem_768_test.json: keygen from seed, decapsulation incl. implicit rejection', () => {
    const tally = { decapsulated: 0, badSeed: 0, badCiphertext: 0 };
    for (const { test: t } of decaps.cases) {
      const seed = hex(t.seed);
      const label = `tcId ${t.tcId} ${t.comment ?? ''}`;
      if (t.result === 'valid') {
        const kp = b.mlkemKeygen(seed);
        expect(toH(kp.publicKey), label).toBe(t.ek);
        // Valid includes random and bit-flipped ciphertexts: FIPS 203 implicit rejection
        // returns the pseudorandom K the vector expects instead of throwing.
        expect(toH(b.mlkemDecapsulate(hex(t.c), kp.secretKey)), label).toBe(t.K);
        tally.decapsulated++;
      } else if (seed.length !== 64) {
        expect(t.comment).toMatch(/^Private key too (short|long)$/);
        expectCryptoError(() => b.mlkemKeygen(seed), 'INVALID_ARGUMENT', 'ml-kem keygen seed must be 64 bytes');
        tally.badSeed++;
      } else {
        expect(t.comment).toMatch(/^Ciphertext too (short|long)$/);
        const kp = b.mlkemKeygen(seed);
        expect(toH(kp.publicKey), label).toBe(t.ek);
        expectCryptoError(
          () => b.mlkemDecapsulate(hex(t.c), kp.secretKey),
          'INVALID_ARGUMENT',
          'ml-kem ciphertext must be 1088 bytes',
        );
        tally.badCiphertext++;
      }
    }
    expect(tally).toEqual({ decapsulated: 153, badSeed: 20, badCiphertext: 20 });
  });

  it('mlkem_768_encaps_test.json: encapsulation with fixed m; unreduced / mis-sized keys refused', () => {
    const tally = { encapsulated: 0, notReduced: 0, badLength: 0 };
    for (const { test: t } of encaps.cases) {
      const ek = hex(t.ek);
      const label = `tcId ${t.tcId} ${t.comment ?? ''}`;
      if (t.result === 'valid') {
        const out = b.mlkemEncapsulate(ek, hex(t.m));
        expect(toH(out.cipherText), label).toBe(t.c);
        expect(toH(out.sharedSecret), label).toBe(t.K);
        tally.encapsulated++;
      } else if (ek.length !== MLKEM768_PUBLIC_KEY_BYTES) {
        expectCryptoError(() => b.mlkemEncapsulate(ek, hex(t.m)), 'INVALID_KEY', 'ml-kem public key must be 1184 bytes');
        tally.badLength++;
      } else {
        // ModulusOverflow and "Public key not reduced": FIPS 203 §7.2 input check.
        expectCryptoError(
          () => b.mlkemEncapsulate(ek, hex(t.m)),
          'INVALID_KEY',
          'ml-kem public key failed the modulus check',
        );
        tally.notReduced++;
      }
    }
    expect(tally).toEqual({ encapsulated: 133, notReduced: 112, badLength: 20 });
  });

  it('random round trip; sizes; tampered secret key fails the FIPS 203 hash check', () => {
    const kp = b.mlkemKeygen();
    expect(kp.publicKey.length).toBe(MLKEM768_PUBLIC_KEY_BYTES);
    expect(kp.secretKey.length).toBe(MLKEM768_SECRET_KEY_BYTES);
    const { cipherText, sharedSecret } = b.mlkemEncapsulate(kp.publicKey);
    expect(cipherText.length).toBe(MLKEM768_CIPHERTEXT_BYTES);
    expect(toH(b.mlkemDecapsulate(cipherText, kp.secretKey))).toBe(toH(sharedSecret));
    // dk = dk_PKE || ek || H(ek) || z; flipping a byte of the embedded ek breaks H(ek).
    const tampered = kp.secretKey.slice();
    tampered[1152 + 7]! ^= 1;
    expectCryptoError(
      () => b.mlkemDecapsulate(cipherText, tampered),
      'INVALID_KEY',
      'ml-kem secret key failed the hash check',
    );
    expectCryptoError(() => b.mlkemDecapsulate(cipherText, tampered.subarray(1)), 'INVALID_KEY');
    expectCryptoError(() => b.mlkemEncapsulate(kp.publicKey, new Uint8Array(31)), 'INVALID_ARGUMENT');
  });
});
