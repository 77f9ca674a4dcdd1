/**
 * Plaintext padding to size buckets, applied before encryption so the ciphertext length
 * reveals only a bucket, not the message length.
 *
 * Buckets (limits in crypto/limits.ts):
 *   - at least PADDING_MIN_BUCKET_BYTES (256);
 *   - powers of two up to PADDING_POWER_OF_TWO_MAX_BYTES (64 KiB): 256, 512, ..., 65536;
 *   - then multiples of PADDING_LARGE_STEP_BYTES (64 KiB) up to
 *     MAX_PADDED_PLAINTEXT_BYTES (1 MiB).
 *
 * Encoding (ISO/IEC 7816-4 style): plaintext || 0x80 || 0x00 ... up to the bucket, so
 * the padded form is always at least one byte longer than the plaintext. Unpadding is
 * unambiguous: strip trailing zeros, then exactly one 0x80. It is also strict: the
 * padded length must be exactly the bucket the plaintext length maps to, so each
 * plaintext has one valid padded form and a sender cannot smuggle a different size.
 *
 * Padding is checked only after the AEAD has authenticated the bytes, so its (variable
 * time) scan gives no padding oracle.
 */
import { CryptoError } from './errors.js';
import {
  MAX_PADDED_PLAINTEXT_BYTES,
  PADDING_LARGE_STEP_BYTES,
  PADDING_MIN_BUCKET_BYTES,
  PADDING_POWER_OF_TWO_MAX_BYTES,
} from './limits.js';
import { assertAnyBytes, copyBytes } from './primitives/bytes.js';

/** The padding marker byte that ends the plaintext. */
const PADDING_MARKER = 0x80;

/** Largest plaintext that fits: the top bucket minus the marker byte. */
export const MAX_UNPADDED_PLAINTEXT_BYTES = MAX_PADDED_PLAINTEXT_BYTES - 1;

/** The bucket a plaintext of `plaintextLength` bytes is padded to. */
export function paddedLength(plaintextLength: number): number {
  if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
    throw new CryptoError('INVALID_ARGUMENT', 'plaintext length must be a non-negative integer');
  }
  if (plaintextLength > MAX_UNPADDED_PLAINTEXT_BYTES) {
    throw new CryptoError('INVALID_ARGUMENT', `plaintext must be at most ${MAX_UNPADDED_PLAINTEXT_BYTES} bytes`);
  }
  const need = plaintextLength + 1; // + marker
  if (need <= PADDING_MIN_BUCKET_BYTES) return PADDING_MIN_BUCKET_BYTES;
  if (need <= PADDING_POWER_OF_TWO_MAX_BYTES) {
    let bucket = PADDING_MIN_BUCKET_BYTES;
    while (bucket < need) bucket *= 2;
    return bucket;
  }
  return Math.ceil(need / PADDING_LARGE_STEP_BYTES) * PADDING_LARGE_STEP_BYTES;
}

/** Pads into a fresh array of length paddedLength(plaintext.length). */
export function pad(plaintext: Uint8Array): Uint8Array {
  assertAnyBytes(plaintext, 'plaintext');
  const out = new Uint8Array(paddedLength(plaintext.length));
  out.set(plaintext, 0);
  out[plaintext.length] = PADDING_MARKER;
  return out;
}

function badPadding(): CryptoError {
  return new CryptoError('INVALID_MESSAGE', 'invalid padding');
}

/** Removes padding; CryptoError('INVALID_MESSAGE') unless `padded` is exactly pad(x). */
export function unpad(padded: Uint8Array): Uint8Array {
  assertAnyBytes(padded, 'padded plaintext');
  if (padded.length < PADDING_MIN_BUCKET_BYTES || padded.length > MAX_PADDED_PLAINTEXT_BYTES) throw badPadding();
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (end < 0 || padded[end] !== PADDING_MARKER) throw badPadding();
  if (paddedLength(end) !== padded.length) throw badPadding();
  return copyBytes(padded.subarray(0, end));
}
