/**
 * The native and noble backends must be interchangeable: random inputs (fast-check),
 * byte-identical outputs for every primitive, and the same accept/reject decisions.
 */
import { fc, it } from '@fast-check/vitest';
import { describe, expect } from 'vitest';
import { CryptoError } from '../../crypto/errors.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { concatBytes, toHex } from '../../crypto/primitives/bytes.js';
import { BACKENDS, noble } from './helpers.js';

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 });
const RUNS = { numRuns: 60 };
const SLOW_RUNS = { numRuns: 20 }; // noble's curve operations are ~1 ms each

type Outcome = (b: CryptoBackend) => Uint8Array | boolean;

/** The result, or the error code and message, as a comparable string. */
function outcome(f: Outcome, b: CryptoBackend): string {
  try {
    const r = f(b);
    return typeof r === 'boolean' ? String(r) : toHex(r);
  } catch (e) {
    if (e instanceof CryptoError) return `error ${e.code}: ${e.message}`;
    throw e;
  }
}

/** `candidate` on every backend gives what `reference` gives on noble (results and errors). */
function sameAs(reference: Outcome, candidate: Outcome): void {
  const expected = outcome(reference, noble);
  for (const [name, b] of BACKENDS) expect(outcome(candidate, b), name).toBe(expected);
}

/** Runs `f` on every backend; results (or error codes) must equal noble's. */
function same(f: Outcome): void {
  sameAs(f, f);
}

describe('native and noble agree', () => {
  it.prop([bytes(0, 2048)], RUNS)('sha256 / sha512', (data) => {
    same((b) => b.sha256(data));
    same((b) => b.sha512(data));
  });

  it.prop([bytes(0, 200), bytes(0, 2048)], RUNS)('hmacSha256 (keys shorter and longer than a block)', (k, d) => {
    same((b) => b.hmacSha256(k, d));
  });

  it.prop([bytes(0, 100), bytes(0, 100), bytes(0, 1100), fc.oneof(fc.integer({ min: 1, max: 96 }), fc.integer({ min: 1, max: 8160 }))], RUNS)(
    'hkdfSha256 (incl. info over 1024 bytes and maximal length)',
    (ikm, salt, info, len) => {
      same((b) => b.hkdfSha256(ikm, salt, info, len));
    },
  );

  it.prop([key32, fc.uint8Array({ minLength: 12, maxLength: 12 }), bytes(0, 3000), bytes(0, 64)], RUNS)(
    'aeadSeal / aeadOpen, and both reject the same tampering',
    (k, n, pt, aad) => {
      same((b) => b.aeadSeal(k, n, pt, aad));
      const sealed = noble.aeadSeal(k, n, pt, aad);
      same((b) => b.aeadOpen(k, n, sealed, aad));
      const flipped = sealed.slice();
      flipped[pt.length % flipped.length]! ^= 0x80;
      same((b) => b.aeadOpen(k, n, flipped, aad));
      same((b) => b.aeadOpen(k, n, sealed.subarray(0, sealed.length - 1), aad));
    },
  );

  it.prop([key32, key32], SLOW_RUNS)('x25519PublicKey / x25519 (arbitrary u, incl. non-canonical)', (s, u) => {
    same((b) => b.x25519PublicKey(s));
    same((b) => b.x25519(s, u));
  });

  it.prop([key32, key32], SLOW_RUNS)('prepared X25519 keys give the raw results, whichever backend prepared the peer key', (s, u) => {
    sameAs((b) => b.x25519PublicKey(s), (b) => b.x25519PrepareKey(s).publicKey());
    const raw = (b: CryptoBackend) => b.x25519(s, u);
    sameAs(raw, (b) => b.x25519PrepareKey(s).agree(u));
    sameAs(raw, (b) => b.x25519PrepareKey(s).agree(b.x25519PreparePublicKey(u)));
    for (const [, other] of BACKENDS) sameAs(raw, (b) => b.x25519PrepareKey(s).agree(other.x25519PreparePublicKey(u)));
    // One prepared key, several agreements.
    sameAs(
      (b) => concatBytes(b.x25519(s, u), b.x25519(s, b.x25519PublicKey(u))),
      (b) => {
        const k = b.x25519PrepareKey(s);
        return concatBytes(k.agree(u), k.agree(b.x25519PublicKey(u)));
      },
    );
  });

  it.prop([key32, bytes(0, 1500)], SLOW_RUNS)('prepared Ed25519 keys give the raw results', (seed, msg) => {
    sameAs((b) => b.ed25519PublicKey(seed), (b) => b.ed25519PrepareKey(seed).publicKey());
    sameAs((b) => b.ed25519Sign(seed, msg), (b) => b.ed25519PrepareKey(seed).sign(msg));
    const pub = noble.ed25519PublicKey(seed);
    const sig = noble.ed25519Sign(seed, msg);
    same((b) => b.ed25519PreparePublicKey(pub).verify(sig, msg));
    const bad = sig.slice();
    bad[msg.length % 64]! ^= 1;
    same((b) => b.ed25519PreparePublicKey(pub).verify(bad, msg));
  });

  it.prop([key32, bytes(0, 1500)], SLOW_RUNS)('ed25519PublicKey / Sign / Verify', (seed, msg) => {
    same((b) => b.ed25519PublicKey(seed));
    same((b) => b.ed25519Sign(seed, msg));
    const pub = noble.ed25519PublicKey(seed);
    const sig = noble.ed25519Sign(seed, msg);
    same((b) => b.ed25519Verify(sig, msg, pub));
    const bad = sig.slice();
    bad[msg.length % 64]! ^= 1;
    same((b) => b.ed25519Verify(bad, msg, pub));
  });

  it.prop([fc.uint8Array({ minLength: 64, maxLength: 64 }), key32], { numRuns: 10 })(
    'ML-KEM-768 keygen / encapsulate / decapsulate',
    (seed, m) => {
      same((b) => b.mlkemKeygen(seed).publicKey);
      same((b) => b.mlkemKeygen(seed).secretKey);
      const kp = noble.mlkemKeygen(seed);
      same((b) => b.mlkemEncapsulate(kp.publicKey, m).cipherText);
      const ct = noble.mlkemEncapsulate(kp.publicKey, m).cipherText;
      same((b) => b.mlkemDecapsulate(ct, kp.secretKey));
    },
  );
});
