/**
 * The single source of randomness for crypto/. Production code uses the platform CSPRNG
 * (WebCrypto getRandomValues, present in Node >= 20 and every browser); tests inject a
 * deterministic source to make vectors and property tests reproducible.
 */
export type RandomSource = (length: number) => Uint8Array;

/** WebCrypto caps one getRandomValues call at 65536 bytes. */
const MAX_RANDOM_CHUNK = 65_536;

export const systemRandom: RandomSource = (length: number): Uint8Array => {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`random length ${length}`);
  const out = new Uint8Array(length);
  for (let off = 0; off < length; off += MAX_RANDOM_CHUNK) {
    globalThis.crypto.getRandomValues(out.subarray(off, Math.min(length, off + MAX_RANDOM_CHUNK)));
  }
  return out;
};
