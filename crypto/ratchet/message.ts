/**
 * Wire format of a Double Ratchet message (all integers big-endian):
 *
 *   offset  size  field
 *   0       1     kind: version (high nibble, 1) | type (low nibble, 1 = ratchet message)
 *   1       32    sender's current ratchet public key (X25519)
 *   33      4     previous sending chain length (u32)
 *   37      4     message number in the current chain (u32)
 *   41      n+16  ChaCha20-Poly1305 ciphertext || tag
 *
 * Bytes 0..41 are the header. The AEAD's associated data is the session's associated
 * data (both identity keys) followed by the header, so any change to the header, or
 * moving a message to another session, fails authentication.
 */
import { CryptoError } from '../errors.js';
import { AEAD_TAG_BYTES, X25519_PUBLIC_KEY_BYTES } from '../primitives/sizes.js';

/** Protocol version carried in the high nibble of the first byte of every session message. */
export const SESSION_MESSAGE_VERSION = 1;
/** Message types (low nibble of the first byte). */
export const MESSAGE_TYPE_RATCHET = 1;
export const MESSAGE_TYPE_INITIAL = 2;

export const RATCHET_MESSAGE_KIND = (SESSION_MESSAGE_VERSION << 4) | MESSAGE_TYPE_RATCHET;
export const RATCHET_HEADER_BYTES = 1 + X25519_PUBLIC_KEY_BYTES + 4 + 4;
export const MIN_RATCHET_MESSAGE_BYTES = RATCHET_HEADER_BYTES + AEAD_TAG_BYTES;

export type SessionMessageType = 'ratchet' | 'initial';

/**
 * Reads the kind byte shared by both session message types. Throws UNSUPPORTED_VERSION
 * for another version and INVALID_MESSAGE for an unknown type or an empty message.
 */
export function sessionMessageType(bytes: Uint8Array): SessionMessageType {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_MESSAGE', 'empty session message');
  const kind = bytes[0] as number;
  if (kind >>> 4 !== SESSION_MESSAGE_VERSION) {
    throw new CryptoError('UNSUPPORTED_VERSION', `session message version ${kind >>> 4} is not supported`);
  }
  const type = kind & 0x0f;
  if (type === MESSAGE_TYPE_RATCHET) return 'ratchet';
  if (type === MESSAGE_TYPE_INITIAL) return 'initial';
  throw new CryptoError('INVALID_MESSAGE', `unknown session message type ${type}`);
}

/** A decoded ratchet message. Every field is a view into the received bytes. */
export interface RatchetMessage {
  readonly header: Uint8Array;
  readonly ratchetKey: Uint8Array;
  readonly previousChainLength: number;
  readonly index: number;
  readonly sealed: Uint8Array;
}

function readU32(b: Uint8Array, off: number): number {
  return (((b[off] as number) << 24) | ((b[off + 1] as number) << 16) | ((b[off + 2] as number) << 8) | (b[off + 3] as number)) >>> 0;
}

export function decodeRatchetMessage(bytes: Uint8Array): RatchetMessage {
  if (sessionMessageType(bytes) !== 'ratchet') throw new CryptoError('INVALID_MESSAGE', 'not a ratchet message');
  if (bytes.length < MIN_RATCHET_MESSAGE_BYTES) throw new CryptoError('INVALID_MESSAGE', 'ratchet message too short');
  return {
    header: bytes.subarray(0, RATCHET_HEADER_BYTES),
    ratchetKey: bytes.subarray(1, 1 + X25519_PUBLIC_KEY_BYTES),
    previousChainLength: readU32(bytes, 33),
    index: readU32(bytes, 37),
    sealed: bytes.subarray(RATCHET_HEADER_BYTES),
  };
}

/** Writes a header at `offset` of `out` (which must have room for RATCHET_HEADER_BYTES). */
export function writeRatchetHeader(
  out: Uint8Array,
  offset: number,
  ratchetKey: Uint8Array,
  previousChainLength: number,
  index: number,
): void {
  out[offset] = RATCHET_MESSAGE_KIND;
  out.set(ratchetKey, offset + 1);
  writeU32(out, offset + 33, previousChainLength);
  writeU32(out, offset + 37, index);
}

function writeU32(b: Uint8Array, off: number, n: number): void {
  b[off] = n >>> 24;
  b[off + 1] = (n >>> 16) & 0xff;
  b[off + 2] = (n >>> 8) & 0xff;
  b[off + 3] = n & 0xff;
}
