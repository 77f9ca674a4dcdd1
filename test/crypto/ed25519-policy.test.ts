/**
 * Every backend gives the same Ed25519 verdict on deliberately malformed signatures, not
 * only on honest ones (crypto/primitives/ed25519-policy.ts): small-order public keys,
 * R with a small-order component or of small order, mixed-order public keys,
 * non-canonical keys.
 */
import { fc, it } from '@fast-check/vitest';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { describe, expect } from 'vitest';
import { concatBytes, toHex } from '../../crypto/primitives/bytes.js';
import { SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS, isRejectedEd25519PublicKey } from '../../crypto/primitives/ed25519-policy.js';
import { BACKENDS } from './helpers.js';

const P = ed25519.Point;
const L = P.Fn.ORDER;
const T8 = P.fromBytes(SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS[4]!); // a point of order 8
const torsion = (i: number) => (i === 0 ? P.ZERO : T8.multiplyUnsafe(BigInt(i)));

function challenge(r: Uint8Array, a: Uint8Array, m: Uint8Array): bigint {
  return bytesToNumberLE(sha512(concatBytes(r, a, m))) % L;
}

/** Every backend's verdict, raw and through a prepared key; the two must agree. */
function verdicts(sig: Uint8Array, msg: Uint8Array, pub: Uint8Array): boolean[] {
  return BACKENDS.map(([name, b]) => {
    const raw = b.ed25519Verify(sig, msg, pub);
    expect(b.ed25519PreparePublicKey(pub).verify(sig, msg), `${name} prepared`).toBe(raw);
    return raw;
  });
}

/** Signs with scalar `a` but publishes A = aB + T_u and R = rB + T_t. */
function craft(a: bigint, r: bigint, t: number, u: number, msg: Uint8Array) {
  const A = P.BASE.multiply(a).add(torsion(u)).toBytes();
  const R = P.BASE.multiplyUnsafe(r).add(torsion(t)).toBytes();
  const k = challenge(R, A, msg);
  const S = (r + k * a) % L;
  const sig = concatBytes(R, numberToBytesLE(S, 32));
  // The policy's rule 3, computed independently here.
  const cofactorless = toHex(P.BASE.multiplyUnsafe(S).subtract(P.fromBytes(A).multiplyUnsafe(k)).toBytes()) === toHex(R);
  return { A, sig, cofactorless };
}

const scalar = fc.bigInt({ min: 1n, max: L - 1n });
const msg = fc.uint8Array({ maxLength: 64 });

describe('Ed25519 verification policy', () => {
  it('the blocklist is exactly the small-order points (and their x=0 sign variants)', () => {
    const multiples = new Set(Array.from({ length: 8 }, (_, i) => toHex(torsion(i).toBytes())));
    const listed = new Set(SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS.slice(0, 8).map(toHex));
    expect(listed).toEqual(multiples);
    for (const e of SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS) expect(isRejectedEd25519PublicKey(e)).toBe(true);
    expect(isRejectedEd25519PublicKey(ed25519.getPublicKey(new Uint8Array(32)))).toBe(false);
    // y = p and y = p + 1 (non-canonical encodings of small-order points).
    expect(isRejectedEd25519PublicKey(Uint8Array.from([0xed, ...new Array<number>(30).fill(0xff), 0x7f]))).toBe(true);
    expect(isRejectedEd25519PublicKey(Uint8Array.from([0xee, ...new Array<number>(30).fill(0xff), 0x7f]))).toBe(true);
  });

  it.prop([scalar, scalar, fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 7 }), msg], { numRuns: 40 })(
    'crafted torsion in R and/or A: every backend gives the policy verdict',
    (a, r, t, u, m) => {
      const { A, sig, cofactorless } = craft(a, r, t, u, m);
      const expected = cofactorless && !isRejectedEd25519PublicKey(A);
      expect(verdicts(sig, m, A)).toEqual(BACKENDS.map(() => expected));
      if (t === 0 && u === 0) expect(expected).toBe(true); // honest signature
      if (t !== 0 && u === 0) expect(expected).toBe(false); // torsion only in R
    },
  );

  it.prop([scalar, msg, fc.integer({ min: 0, max: 9 })], { numRuns: 30 })(
    'small-order public keys are refused even when the equation holds',
    (r, m, i) => {
      // With A of small order, R = rB and S = r satisfy the cofactored equation always,
      // and the cofactorless one whenever [k]A = 0 (always for the identity).
      const A = SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS[i]!;
      const sig = concatBytes(P.BASE.multiply(r).toBytes(), numberToBytesLE(r, 32));
      expect(verdicts(sig, m, A)).toEqual(BACKENDS.map(() => false));
    },
  );

  it.prop([scalar, fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 7 }), msg], { numRuns: 30 })(
    'R of small order (r = 0): accepted exactly when the cofactorless equation holds, on every backend',
    (a, t, u, m) => {
      // libsodium refuses any small-order R before the equation; the policy accepts
      // R = -[k]T_u when S = k*a (the identity for an honest key), so backends must agree.
      const { A, sig, cofactorless } = craft(a, 0n, t, u, m);
      const expected = cofactorless && !isRejectedEd25519PublicKey(A);
      expect(verdicts(sig, m, A)).toEqual(BACKENDS.map(() => expected));
      if (t === 0 && u === 0) expect(expected).toBe(true); // R = identity, S = k*a
    },
  );
});
