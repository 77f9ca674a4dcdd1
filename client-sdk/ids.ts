/**
 * Random identifiers (message and envelope ids): public values, drawn several times per
 * message. One call to the platform CSPRNG costs microseconds whatever its length, so ids
 * come from a buffer refilled ID_POOL_BYTES at a time; each id is a copy, and the bytes
 * handed out are zeroed in the buffer. Key material never comes from here: sessions and
 * keys draw from the client's random source directly.
 */
import type { RandomSource } from '../crypto/primitives/random.js';

/** Bytes drawn from the CSPRNG per refill of the id buffer. */
const ID_POOL_BYTES = 4096;

/** An id source over `random`; ids longer than the buffer are drawn directly. */
export function idSource(random: RandomSource): RandomSource {
  let pool: Uint8Array = new Uint8Array(0);
  let pos = 0;
  return (length: number): Uint8Array => {
    if (length > ID_POOL_BYTES) return random(length);
    if (pool.length - pos < length) {
      pool = random(ID_POOL_BYTES);
      pos = 0;
    }
    const out = pool.slice(pos, pos + length);
    pool.fill(0, pos, pos + length);
    pos += length;
    return out;
  };
}
