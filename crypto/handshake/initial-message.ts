/**
 * Wire format of the initial message: the handshake data the responder needs to complete
 * the agreement, followed by an ordinary ratchet message (all integers big-endian):
 *
 *   offset  size  field
 *   0       1     kind: version 1 | type 2 (initial message) = 0x12
 *   1       32    initiator identity key IK_A (Ed25519)
 *   33      32    initiator ephemeral ("base") key EK_A (X25519)
 *   65      4     signed prekey id
 *   69      1     flags: bit 0 = a one-time prekey was used, bit 1 = the KEM prekey is
 *                 the last-resort one; other bits must be zero
 *   70      4     one-time prekey id (0 when bit 0 is clear)
 *   74      4     KEM prekey id
 *   78      1088  ML-KEM-768 ciphertext
 *   1166    ...   ratchet message (see crypto/ratchet/message.ts)
 *
 * The initiator repeats the same handshake part in front of every message it sends until
 * the first reply arrives, since the responder may not have received the first one.
 */
import { CryptoError } from '../errors.js';
import { copyBytes } from '../primitives/bytes.js';
import { ED25519_PUBLIC_KEY_BYTES, MLKEM768_CIPHERTEXT_BYTES, X25519_PUBLIC_KEY_BYTES } from '../primitives/sizes.js';
import { MESSAGE_TYPE_INITIAL, SESSION_MESSAGE_VERSION, sessionMessageType } from '../ratchet/message.js';

export const INITIAL_MESSAGE_KIND = (SESSION_MESSAGE_VERSION << 4) | MESSAGE_TYPE_INITIAL;

const FLAG_ONE_TIME_PREKEY = 0x01;
const FLAG_KEM_LAST_RESORT = 0x02;

/** Size of the handshake part, kind byte included. */
export const INITIAL_HANDSHAKE_BYTES =
  1 + ED25519_PUBLIC_KEY_BYTES + X25519_PUBLIC_KEY_BYTES + 4 + 1 + 4 + 4 + MLKEM768_CIPHERTEXT_BYTES;

const OFF_IDENTITY = 1;
const OFF_BASE_KEY = OFF_IDENTITY + ED25519_PUBLIC_KEY_BYTES;
const OFF_SIGNED_PREKEY_ID = OFF_BASE_KEY + X25519_PUBLIC_KEY_BYTES;
const OFF_FLAGS = OFF_SIGNED_PREKEY_ID + 4;
const OFF_ONE_TIME_ID = OFF_FLAGS + 1;
const OFF_KEM_ID = OFF_ONE_TIME_ID + 4;
const OFF_KEM_CT = OFF_KEM_ID + 4;

export interface InitialHandshake {
  readonly identityKey: Uint8Array;
  readonly baseKey: Uint8Array;
  readonly signedPreKeyId: number;
  readonly oneTimePreKeyId: number | undefined;
  readonly kemPreKeyId: number;
  readonly kemLastResort: boolean;
  readonly kemCipherText: Uint8Array;
}

export interface InitialMessage extends InitialHandshake {
  /** The encoded handshake part (kind byte included), as received. */
  readonly handshake: Uint8Array;
  /** The embedded ratchet message. */
  readonly ratchetMessage: Uint8Array;
}

function u32(b: Uint8Array, o: number): number {
  return (((b[o] as number) << 24) | ((b[o + 1] as number) << 16) | ((b[o + 2] as number) << 8) | (b[o + 3] as number)) >>> 0;
}

function putU32(b: Uint8Array, o: number, n: number): void {
  b[o] = n >>> 24;
  b[o + 1] = (n >>> 16) & 0xff;
  b[o + 2] = (n >>> 8) & 0xff;
  b[o + 3] = n & 0xff;
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
}

export function encodeInitialHandshake(h: InitialHandshake): Uint8Array {
  if (!isU32(h.signedPreKeyId) || !isU32(h.kemPreKeyId) || (h.oneTimePreKeyId !== undefined && !isU32(h.oneTimePreKeyId))) {
    throw new CryptoError('INVALID_ARGUMENT', 'prekey ids must be u32');
  }
  const out = new Uint8Array(INITIAL_HANDSHAKE_BYTES);
  out[0] = INITIAL_MESSAGE_KIND;
  out.set(h.identityKey, OFF_IDENTITY);
  out.set(h.baseKey, OFF_BASE_KEY);
  putU32(out, OFF_SIGNED_PREKEY_ID, h.signedPreKeyId);
  out[OFF_FLAGS] = (h.oneTimePreKeyId !== undefined ? FLAG_ONE_TIME_PREKEY : 0) | (h.kemLastResort ? FLAG_KEM_LAST_RESORT : 0);
  putU32(out, OFF_ONE_TIME_ID, h.oneTimePreKeyId ?? 0);
  putU32(out, OFF_KEM_ID, h.kemPreKeyId);
  out.set(h.kemCipherText, OFF_KEM_CT);
  return out;
}

/**
 * Whether the X25519 public key at `offset` is the canonical encoding of its point: top
 * bit clear and u < p = 2^255 - 19 (RFC 7748 §5: X25519 ignores the top bit and reduces
 * mod p, so each point has other encodings, which no honest sender produces). The base
 * key names a handshake (callers keep it to recognise repeats) and is not in the
 * associated data, so another encoding would set up the same session under another
 * name: a relay could pass off a replayed initial message as a new one.
 */
function isCanonicalX25519(b: Uint8Array, offset: number): boolean {
  const top = b[offset + 31] as number;
  if (top & 0x80) return false;
  if (top !== 0x7f) return true;
  for (let i = 30; i >= 1; i--) if (b[offset + i] !== 0xff) return true;
  // All of bytes 1..31 are those of p: u < p exactly when the lowest byte is below p's (0xed).
  return (b[offset] as number) < 0xed;
}

/**
 * Decodes an initial message. Fields are copies except `handshake` and `ratchetMessage`,
 * which are views into `bytes`. Throws UNSUPPORTED_VERSION / INVALID_MESSAGE (also for a
 * base key that is not in canonical form).
 */
export function decodeInitialMessage(bytes: Uint8Array): InitialMessage {
  if (sessionMessageType(bytes) !== 'initial') throw new CryptoError('INVALID_MESSAGE', 'not an initial message');
  if (bytes.length <= INITIAL_HANDSHAKE_BYTES) throw new CryptoError('INVALID_MESSAGE', 'initial message too short');
  const flags = bytes[OFF_FLAGS] as number;
  if ((flags & ~(FLAG_ONE_TIME_PREKEY | FLAG_KEM_LAST_RESORT)) !== 0) {
    throw new CryptoError('INVALID_MESSAGE', 'initial message has unknown flags');
  }
  if (!isCanonicalX25519(bytes, OFF_BASE_KEY)) throw new CryptoError('INVALID_MESSAGE', 'initial message base key is not in canonical form');
  const hasOneTime = (flags & FLAG_ONE_TIME_PREKEY) !== 0;
  const oneTimeId = u32(bytes, OFF_ONE_TIME_ID);
  if (!hasOneTime && oneTimeId !== 0) throw new CryptoError('INVALID_MESSAGE', 'one-time prekey id without its flag');
  return {
    identityKey: copyBytes(bytes.subarray(OFF_IDENTITY, OFF_BASE_KEY)),
    baseKey: copyBytes(bytes.subarray(OFF_BASE_KEY, OFF_SIGNED_PREKEY_ID)),
    signedPreKeyId: u32(bytes, OFF_SIGNED_PREKEY_ID),
    oneTimePreKeyId: hasOneTime ? oneTimeId : undefined,
    kemPreKeyId: u32(bytes, OFF_KEM_ID),
    kemLastResort: (flags & FLAG_KEM_LAST_RESORT) !== 0,
    kemCipherText: copyBytes(bytes.subarray(OFF_KEM_CT, INITIAL_HANDSHAKE_BYTES)),
    handshake: bytes.subarray(0, INITIAL_HANDSHAKE_BYTES),
    ratchetMessage: bytes.subarray(INITIAL_HANDSHAKE_BYTES),
  };
}
