/**
 * Safety numbers: a short value two people compare (read aloud or by scanning a QR code)
 * to confirm they see each other's real identity keys, defeating a lying key directory.
 *
 * Construction (after Signal's numeric fingerprints):
 *
 *   fingerprint(key, id) = H^5200 where
 *     H^0 = u16be(VERSION) || key (32 bytes) || utf8(id)
 *     H^i = SHA-512(H^(i-1) || key)
 *
 *   Each party's 30 digits come from the first 30 bytes of its fingerprint, as six
 *   5-byte big-endian integers, each mod 100000, zero-padded to 5 digits.
 *   The 60-digit safety number is the two 30-digit halves ordered by their fingerprint
 *   bytes, so both sides compute the same number whichever is "local".
 *
 * The 5200 iterations are Signal's figure: they make a brute-force search for a second
 * key whose 30 digits collide with a target's cost ~2^12 more hashes per candidate,
 * while computing one number stays in the milliseconds.
 *
 * QR bytes: u16be(VERSION) || first fingerprint (32 bytes) || second fingerprint (32),
 * in the same order as the digits, so the scanned bytes must equal ours exactly; the
 * comparison is constant-time.
 */
import { CryptoError } from '../errors.js';
import { MAX_SAFETY_NUMBER_ID_BYTES } from '../limits.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { concatBytes, equalBytes, readU32be, utf8Encode } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { ED25519_PUBLIC_KEY_BYTES, SHA512_BYTES } from '../primitives/sizes.js';
import { IdentityKey } from './identity-key.js';

/** Format version, hashed into every fingerprint and prefixed to the QR bytes. */
export const SAFETY_NUMBER_VERSION = 0;
/** SHA-512 iterations per party (see the file header for why 5200). */
export const SAFETY_NUMBER_ITERATIONS = 5200;
/** Fingerprint bytes per party in the QR payload. */
export const SAFETY_NUMBER_FINGERPRINT_BYTES = 32;
/** Total digits shown, in groups of SAFETY_NUMBER_GROUP_DIGITS. */
export const SAFETY_NUMBER_DIGITS = 60;
export const SAFETY_NUMBER_GROUP_DIGITS = 5;
/** QR payload: 2-byte version and two fingerprints. */
export const SAFETY_NUMBER_SCANNABLE_BYTES = 2 + 2 * SAFETY_NUMBER_FINGERPRINT_BYTES;

/** One side of the comparison: an identity key and the stable id it belongs to. */
export interface SafetyNumberParty {
  readonly identityKey: IdentityKey | Uint8Array;
  /** Stable application identifier of the user (not a device id), 1..256 UTF-8 bytes. */
  readonly stableId: string;
}

const VERSION_BYTES = new Uint8Array([SAFETY_NUMBER_VERSION >>> 8, SAFETY_NUMBER_VERSION & 0xff]);

function partyFingerprint(party: SafetyNumberParty, backend: CryptoBackend): Uint8Array {
  const key = party.identityKey instanceof IdentityKey ? party.identityKey.bytes : party.identityKey;
  if (!(key instanceof Uint8Array) || key.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new CryptoError('INVALID_KEY', 'safety number identity key must be 32 bytes');
  }
  if (typeof party.stableId !== 'string') throw new CryptoError('INVALID_ARGUMENT', 'safety number stable id must be a string');
  const id = utf8Encode(party.stableId);
  if (id.length < 1 || id.length > MAX_SAFETY_NUMBER_ID_BYTES) {
    throw new CryptoError('INVALID_ARGUMENT', `safety number stable id must be 1..${MAX_SAFETY_NUMBER_ID_BYTES} bytes`);
  }
  // Round 1 hashes H^0 || key; later rounds reuse one (64 + 32)-byte buffer for H || key.
  let h = backend.sha512(concatBytes(VERSION_BYTES, key, id, key));
  const buf = new Uint8Array(SHA512_BYTES + ED25519_PUBLIC_KEY_BYTES);
  buf.set(key, SHA512_BYTES);
  for (let i = 1; i < SAFETY_NUMBER_ITERATIONS; i++) {
    buf.set(h, 0);
    h = backend.sha512(buf);
  }
  return h.slice(0, SAFETY_NUMBER_FINGERPRINT_BYTES);
}

/** 30 digits from the first 30 bytes: six 40-bit big-endian chunks, each mod 100000. */
function digitsOf(fp: Uint8Array): string {
  let s = '';
  for (let off = 0; off < 30; off += 5) {
    // 40-bit value = high byte * 2^32 + low 32 bits; exact in a double (< 2^53).
    const value = (fp[off] as number) * 0x1_0000_0000 + readU32be(fp, off + 1);
    s += String(value % 100_000).padStart(5, '0');
  }
  return s;
}

/** Bytewise order of public fingerprints (no secret involved, so no constant time). */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  }
  return a.length - b.length;
}

export class SafetyNumber {
  /** The 60 digits, no separators. */
  readonly digits: string;
  readonly #scannable: Uint8Array;

  private constructor(digits: string, scannable: Uint8Array) {
    this.digits = digits;
    this.#scannable = scannable;
  }

  /** The same value on both devices, whichever party is passed first. */
  static compute(a: SafetyNumberParty, b: SafetyNumberParty, backend: CryptoBackend = defaultBackend): SafetyNumber {
    const fa = partyFingerprint(a, backend);
    const fb = partyFingerprint(b, backend);
    const [first, second] = compareBytes(fa, fb) <= 0 ? [fa, fb] : [fb, fa];
    return new SafetyNumber(digitsOf(first) + digitsOf(second), concatBytes(VERSION_BYTES, first, second));
  }

  /** 12 groups of 5 digits. */
  get groups(): string[] {
    const out: string[] = [];
    for (let i = 0; i < SAFETY_NUMBER_DIGITS; i += SAFETY_NUMBER_GROUP_DIGITS) {
      out.push(this.digits.slice(i, i + SAFETY_NUMBER_GROUP_DIGITS));
    }
    return out;
  }

  /** The groups joined by single spaces, for display. */
  toString(): string {
    return this.groups.join(' ');
  }

  toJSON(): string {
    return this.toString();
  }

  /** A copy of the QR payload (66 bytes). */
  get scannable(): Uint8Array {
    return this.#scannable.slice();
  }

  /**
   * Whether bytes scanned from the peer's screen match ours, compared in constant time.
   * Throws CryptoError('UNSUPPORTED_VERSION') when the peer uses another format version
   * (so the UI can say so instead of "mismatch") and 'INVALID_MESSAGE' for a payload of
   * the wrong size.
   */
  matchesScanned(scanned: Uint8Array): boolean {
    if (!(scanned instanceof Uint8Array) || scanned.length < 2) {
      throw new CryptoError('INVALID_MESSAGE', 'scanned safety number is too short');
    }
    if (scanned[0] !== VERSION_BYTES[0] || scanned[1] !== VERSION_BYTES[1]) {
      throw new CryptoError('UNSUPPORTED_VERSION', 'scanned safety number has an unsupported version');
    }
    if (scanned.length !== SAFETY_NUMBER_SCANNABLE_BYTES) {
      throw new CryptoError('INVALID_MESSAGE', `scanned safety number must be ${SAFETY_NUMBER_SCANNABLE_BYTES} bytes`);
    }
    return equalBytes(scanned, this.#scannable);
  }

  equals(other: SafetyNumber): boolean {
    return equalBytes(this.#scannable, other.#scannable);
  }
}

/** Convenience form of SafetyNumber.compute. */
export function computeSafetyNumber(
  a: SafetyNumberParty,
  b: SafetyNumberParty,
  backend: CryptoBackend = defaultBackend,
): SafetyNumber {
  return SafetyNumber.compute(a, b, backend);
}
