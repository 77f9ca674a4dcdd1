/**
 * RFC 5869 HKDF-SHA256 in terms of a one-shot HMAC-SHA256, for backends whose library
 * offers HMAC but no HKDF the interface can reach. Callers validate the inputs and
 * `length` (<= 255 * 32) first.
 */
import { SHA256_BYTES } from './sizes.js';

export function hkdfFromHmac(
  hmac: (key: Uint8Array, data: Uint8Array) => Uint8Array,
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  length: number,
): Uint8Array {
  // §2.2: an empty salt means HashLen zero bytes, which HMAC key padding makes identical.
  const prk = hmac(salt, ikm);
  const out = new Uint8Array(length);
  // T(i) = HMAC(PRK, T(i-1) || info || i); one buffer holds T(i-1) || info || i.
  const block = new Uint8Array(SHA256_BYTES + info.length + 1);
  block.set(info, SHA256_BYTES);
  for (let i = 1, off = 0; off < length; i++, off += SHA256_BYTES) {
    block[block.length - 1] = i; // i <= 255 because length <= 255 * 32
    const t = hmac(prk, i === 1 ? block.subarray(SHA256_BYTES) : block);
    out.set(length - off >= SHA256_BYTES ? t : t.subarray(0, length - off), off);
    block.set(t, 0);
  }
  prk.fill(0);
  block.fill(0);
  return out;
}
