/**
 * One Ed25519 verification rule for both backends, so a signature accepted by one is
 * accepted by the other for every input, not just for honest signers. Receipts and
 * signed events must verify identically for a recipient, the relay and an auditor.
 *
 * Hermetic accepts (signature R || S, message M, public key A) iff
 *   1. A and R are canonical encodings (y < p) and S < L (RFC 8032 §5.1.7 strict);
 *   2. A is not one of the eight small-order points (a key anyone can sign for);
 *   3. the cofactorless equation [S]B = R + [k]A holds, k = SHA-512(R || A || M) mod L.
 *
 * The libraries differ on exactly these points: OpenSSL checks 1 (R by comparing the
 * encoding of [S]B - [k]A with R) and 3, but not 2; noble's strict mode checks 1 and 2
 * and the cofactored equation [8][S]B = [8](R + [k]A), which also accepts an R with a
 * small-order component. So the native backend adds check 2 (and canonical A) after
 * OpenSSL, and the noble backend adds check 3 after noble. Keys made from a seed are
 * never small-order and honest signatures satisfy 3, so this only ever rejects
 * deliberately malformed signatures.
 */
import { fromHex } from './bytes.js';

/** Encodings of the 8 points of order dividing 8, plus the x = 0 sign-bit variants. */
export const SMALL_ORDER_ED25519_ENCODINGS: readonly Uint8Array[] = [
  '0100000000000000000000000000000000000000000000000000000000000000', // identity
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // order 2
  '0000000000000000000000000000000000000000000000000000000000000000', // order 4
  '0000000000000000000000000000000000000000000000000000000000000080', // order 4
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', // order 8
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85', // order 8
  '0100000000000000000000000000000000000000000000000000000000000080', // identity, x=0 "negative"
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', // order 2, x=0 "negative"
].map(fromHex);

/** Whether y (the encoding without its sign bit) is >= p = 2^255 - 19. */
export function isNonCanonicalEd25519Y(enc: Uint8Array): boolean {
  if (((enc[31] as number) & 0x7f) !== 0x7f) return false;
  for (let i = 30; i >= 1; i--) if (enc[i] !== 0xff) return false;
  return (enc[0] as number) >= 0xed;
}

/** Rule 2 plus canonical A: true when a 32-byte public key must be refused. */
export function isRejectedEd25519PublicKey(publicKey: Uint8Array): boolean {
  if (isNonCanonicalEd25519Y(publicKey)) return true;
  // Public data: an early exit leaks nothing.
  return SMALL_ORDER_ED25519_ENCODINGS.some((e) => e.every((v, i) => v === publicKey[i]));
}

export const SMALL_ORDER_ED25519_ENCODINGS_FOR_TESTS = SMALL_ORDER_ED25519_ENCODINGS;
