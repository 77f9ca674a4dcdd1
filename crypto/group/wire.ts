/**
 * Wire formats of sender keys (all integers big-endian).
 *
 * Distribution message, sent to each member over the pairwise sessions:
 *
 *   u8   kind: version 1 | type 3 = 0x13
 *   u8   group id length (1..MAX_GROUP_ID_BYTES) | group id
 *   u32  key id (the generation; +1 at each rotation)
 *   u32  iteration the chain key is at
 *   32   chain key
 *   32   signing public key (Ed25519)
 *
 * Group message:
 *
 *   u8   kind: version 1 | type 4 = 0x14
 *   u32  key id
 *   u32  iteration
 *   n+16 ChaCha20-Poly1305 ciphertext || tag (associated data: the 9 bytes above)
 *   64   Ed25519 signature by the generation's signing key over
 *        GROUP_MESSAGE_SIGNATURE_LABEL || u8 group id length || group id || all bytes above
 */
import { CryptoError } from '../errors.js';
import { MAX_GROUP_ID_BYTES } from '../limits.js';
import { AEAD_TAG_BYTES, ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';
import { GROUP_MESSAGE_SIGNATURE_LABEL, GROUP_MESSAGE_TYPE, SENDER_KEY_DISTRIBUTION_TYPE, SENDER_KEY_VERSION } from './labels.js';

export const DISTRIBUTION_KIND = (SENDER_KEY_VERSION << 4) | SENDER_KEY_DISTRIBUTION_TYPE;
export const GROUP_MESSAGE_KIND = (SENDER_KEY_VERSION << 4) | GROUP_MESSAGE_TYPE;
export const GROUP_HEADER_BYTES = 1 + 4 + 4;
const MIN_GROUP_MESSAGE_BYTES = GROUP_HEADER_BYTES + AEAD_TAG_BYTES + ED25519_SIGNATURE_BYTES;

export interface DistributionMessage {
  readonly groupId: Uint8Array;
  readonly keyId: number;
  readonly iteration: number;
  readonly chainKey: Uint8Array;
  readonly signingKey: Uint8Array;
}

export function assertGroupId(groupId: Uint8Array, code: 'INVALID_ARGUMENT' | 'INVALID_MESSAGE' | 'INVALID_STATE'): void {
  if (!(groupId instanceof Uint8Array) || groupId.length === 0 || groupId.length > MAX_GROUP_ID_BYTES) {
    throw new CryptoError(code, `group id must be 1..${MAX_GROUP_ID_BYTES} bytes`);
  }
}

function checkKind(bytes: Uint8Array, kind: number, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_MESSAGE', `${what}: empty`);
  const first = bytes[0] as number;
  if (first >>> 4 !== SENDER_KEY_VERSION) {
    throw new CryptoError('UNSUPPORTED_VERSION', `${what} version ${first >>> 4} is not supported`);
  }
  if (first !== kind) throw new CryptoError('INVALID_MESSAGE', `${what}: wrong message type`);
}

export function encodeDistribution(d: DistributionMessage): Uint8Array {
  return new ByteWriter(128)
    .u8(DISTRIBUTION_KIND)
    .u8(d.groupId.length)
    .bytes(d.groupId)
    .u32(d.keyId)
    .u32(d.iteration)
    .bytes(d.chainKey)
    .bytes(d.signingKey)
    .finish();
}

export function decodeDistribution(bytes: Uint8Array): DistributionMessage {
  checkKind(bytes, DISTRIBUTION_KIND, 'sender key distribution');
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'sender key distribution');
  r.u8();
  const groupId = r.bytes(r.u8());
  assertGroupId(groupId, 'INVALID_MESSAGE');
  const keyId = r.u32();
  const iteration = r.u32();
  const chainKey = r.bytes(32);
  const signingKey = r.bytes(ED25519_PUBLIC_KEY_BYTES);
  r.end();
  return { groupId, keyId, iteration, chainKey, signingKey };
}

/** A decoded group message; every field is a view into the received bytes. */
export interface GroupMessage {
  readonly keyId: number;
  readonly iteration: number;
  readonly header: Uint8Array;
  readonly sealed: Uint8Array;
  /** Everything the signature covers after the group binding prefix. */
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

function u32(b: Uint8Array, o: number): number {
  return (((b[o] as number) << 24) | ((b[o + 1] as number) << 16) | ((b[o + 2] as number) << 8) | (b[o + 3] as number)) >>> 0;
}

export function decodeGroupMessage(bytes: Uint8Array): GroupMessage {
  checkKind(bytes, GROUP_MESSAGE_KIND, 'group message');
  if (bytes.length < MIN_GROUP_MESSAGE_BYTES) throw new CryptoError('INVALID_MESSAGE', 'group message too short');
  const end = bytes.length - ED25519_SIGNATURE_BYTES;
  return {
    keyId: u32(bytes, 1),
    iteration: u32(bytes, 5),
    header: bytes.subarray(0, GROUP_HEADER_BYTES),
    sealed: bytes.subarray(GROUP_HEADER_BYTES, end),
    signed: bytes.subarray(0, end),
    signature: bytes.subarray(end),
  };
}

export function writeGroupHeader(out: Uint8Array, keyId: number, iteration: number): void {
  out[0] = GROUP_MESSAGE_KIND;
  out[1] = keyId >>> 24;
  out[2] = (keyId >>> 16) & 0xff;
  out[3] = (keyId >>> 8) & 0xff;
  out[4] = keyId & 0xff;
  out[5] = iteration >>> 24;
  out[6] = (iteration >>> 16) & 0xff;
  out[7] = (iteration >>> 8) & 0xff;
  out[8] = iteration & 0xff;
}

/** LABEL || u8 len || group id: the fixed start of every signed transcript in a group. */
export function signaturePrefix(groupId: Uint8Array): Uint8Array {
  const out = new Uint8Array(GROUP_MESSAGE_SIGNATURE_LABEL.length + 1 + groupId.length);
  out.set(GROUP_MESSAGE_SIGNATURE_LABEL, 0);
  out[GROUP_MESSAGE_SIGNATURE_LABEL.length] = groupId.length;
  out.set(groupId, GROUP_MESSAGE_SIGNATURE_LABEL.length + 1);
  return out;
}
