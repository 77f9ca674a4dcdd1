/**
 * One entry of a user's signed device list: the account's root device, a device added
 * by an existing one (linking), or a device revoked. Entries form a hash chain — each
 * names its position (`seq`) and the SHA-256 of the entry before it (`prev`) — so the
 * list is append-only: a relay can withhold the newest entries, but it cannot rewrite or
 * reorder history without the client noticing (see chain.ts).
 *
 * Encoding (all integers big-endian, ids as u8 length + UTF-8):
 *
 *   u8   format version (1)
 *   u8   kind: 1 root, 2 add, 3 revoke
 *   str8 userId
 *   u32  seq                   0 for the root, then +1 per entry
 *   32   prev                  SHA-256 of the previous entry's encoding; zeros for the root
 *   str8 deviceId              the device the entry is about (the subject)
 *   32   identityKey           its Ed25519 identity key
 *   str8 signerDeviceId        the device that signs (the subject itself for a root)
 *   64   signature             the signer's identity key over
 *                              signatureTranscript('device-list/entry', all bytes above)
 *   64   consent               root and add only: the subject's own signature over the
 *                              device-registration transcript (user, device, key): proof
 *                              that it holds the key and agreed to join this account
 *
 * The consent makes an unknown-key-share impossible: no device can enrol somebody
 * else's identity key into its account. Entries carry no timestamp: other users can
 * read a device list, and when each device was added is none of their business.
 */
import { DEVICE_ID_PATTERN, MAX_DEVICE_ID_LENGTH, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { SIGNATURE_LABELS } from '../../protocol/labels.js';
import { deviceRegistrationTranscript } from '../../protocol/transcripts.js';
import { CryptoError } from '../errors.js';
import type { IdentityKeyPair } from '../identity/identity-key.js';
import { signatureTranscript } from '../identity/signature-context.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { copyBytes, utf8Decode, utf8Encode } from '../primitives/bytes.js';
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';

export const DEVICE_ENTRY_VERSION = 1;

/** The signature label of an entry (signature-context.ts). */
export const DEVICE_ENTRY_SIGNATURE_LABEL = SIGNATURE_LABELS.deviceListEntry;

export const DEVICE_ENTRY_KINDS = { root: 1, add: 2, revoke: 3 } as const;
export type DeviceEntryKind = keyof typeof DEVICE_ENTRY_KINDS;

/** SHA-256 output: the `prev` link and an entry's hash. */
export const DEVICE_ENTRY_HASH_BYTES = 32;

/** The largest encoding: every field at its maximum. */
export const MAX_DEVICE_ENTRY_BYTES =
  2 + (1 + MAX_USER_ID_LENGTH) + 4 + DEVICE_ENTRY_HASH_BYTES + 2 * (1 + MAX_DEVICE_ID_LENGTH) + ED25519_PUBLIC_KEY_BYTES + 2 * ED25519_SIGNATURE_BYTES;

/** What an entry says, before it is signed. */
export interface DeviceEntryBody {
  readonly kind: DeviceEntryKind;
  readonly userId: string;
  readonly seq: number;
  readonly prev: Uint8Array;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  readonly signerDeviceId: string;
}

export interface DeviceEntry extends DeviceEntryBody {
  readonly signature: Uint8Array;
  /** Root and add entries: the subject's registration signature. */
  readonly consent: Uint8Array | undefined;
  /** The exact encoding (what `prev` of the next entry hashes). */
  readonly bytes: Uint8Array;
  /** The length of the signed part of `bytes`. */
  readonly signedLength: number;
}

function kindCode(kind: DeviceEntryKind): number {
  return DEVICE_ENTRY_KINDS[kind];
}

function kindOf(code: number): DeviceEntryKind | undefined {
  for (const [k, v] of Object.entries(DEVICE_ENTRY_KINDS)) if (v === code) return k as DeviceEntryKind;
  return undefined;
}

function checkId(s: string, max: number, pattern: RegExp, what: string, code: 'INVALID_ARGUMENT' | 'INVALID_MESSAGE'): void {
  if (typeof s !== 'string' || s.length === 0 || s.length > max || !pattern.test(s)) {
    throw new CryptoError(code, `device entry ${what} must match ${pattern.source} (at most ${max} characters)`);
  }
}

function checkBody(b: DeviceEntryBody, code: 'INVALID_ARGUMENT' | 'INVALID_MESSAGE'): void {
  checkId(b.userId, MAX_USER_ID_LENGTH, USER_ID_PATTERN, 'user id', code);
  checkId(b.deviceId, MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN, 'device id', code);
  checkId(b.signerDeviceId, MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN, 'signer device id', code);
  if (!Number.isInteger(b.seq) || b.seq < 0 || b.seq > 0xffff_ffff) throw new CryptoError(code, 'device entry seq must be a u32');
  if (!(b.prev instanceof Uint8Array) || b.prev.length !== DEVICE_ENTRY_HASH_BYTES) {
    throw new CryptoError(code, `device entry prev must be ${DEVICE_ENTRY_HASH_BYTES} bytes`);
  }
  if (!(b.identityKey instanceof Uint8Array) || b.identityKey.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new CryptoError(code, `device entry identity key must be ${ED25519_PUBLIC_KEY_BYTES} bytes`);
  }
  if (kindOf(kindCode(b.kind)) === undefined) throw new CryptoError(code, 'device entry kind is unknown');
}

function encodeBody(b: DeviceEntryBody): Uint8Array {
  const w = new ByteWriter(256).u8(DEVICE_ENTRY_VERSION).u8(kindCode(b.kind));
  const str8 = (s: string): void => {
    const bytes = utf8Encode(s);
    w.u8(bytes.length).bytes(bytes);
  };
  str8(b.userId);
  w.u32(b.seq).bytes(b.prev);
  str8(b.deviceId);
  w.bytes(b.identityKey);
  str8(b.signerDeviceId);
  return w.finish();
}

/** The bytes the signer signs for `body`. */
export function deviceEntryTranscript(body: DeviceEntryBody): Uint8Array {
  checkBody(body, 'INVALID_ARGUMENT');
  return signatureTranscript(DEVICE_ENTRY_SIGNATURE_LABEL, encodeBody(body));
}

/** The bytes a device signs to consent to joining `userId` as `deviceId`. */
export function deviceConsentTranscript(userId: string, deviceId: string, identityKey: Uint8Array): Uint8Array {
  return deviceRegistrationTranscript(userId, deviceId, identityKey);
}

/**
 * Signs `body` with `signer` (which must be the identity of `body.signerDeviceId`) and
 * returns the encoded entry. Root and add entries need the subject's `consent`
 * (deviceConsentTranscript signed by the subject); a root's subject is its signer.
 */
export function signDeviceEntry(body: DeviceEntryBody, signer: IdentityKeyPair, consent?: Uint8Array): Uint8Array {
  const transcript = deviceEntryTranscript(body);
  const needsConsent = body.kind !== 'revoke';
  if (needsConsent !== (consent !== undefined)) {
    throw new CryptoError('INVALID_ARGUMENT', needsConsent ? 'a root or add entry needs the subject\'s consent' : 'a revoke entry takes no consent');
  }
  if (consent !== undefined && (!(consent instanceof Uint8Array) || consent.length !== ED25519_SIGNATURE_BYTES)) {
    throw new CryptoError('INVALID_ARGUMENT', `consent must be ${ED25519_SIGNATURE_BYTES} bytes`);
  }
  const signature = signer.sign(transcript);
  const body0 = encodeBody(body);
  const w = new ByteWriter(body0.length + 128).bytes(body0).bytes(signature);
  if (consent !== undefined) w.bytes(consent);
  return w.finish();
}

/** Decodes an entry (no signature is checked here: see chain.ts). Throws INVALID_MESSAGE. */
export function decodeDeviceEntry(bytes: Uint8Array): DeviceEntry {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_MESSAGE', 'device entry: empty');
  if (bytes.length > MAX_DEVICE_ENTRY_BYTES) throw new CryptoError('INVALID_MESSAGE', 'device entry: too long');
  if (bytes[0] !== DEVICE_ENTRY_VERSION) throw new CryptoError('UNSUPPORTED_VERSION', `device entry version ${bytes[0]} is not supported`);
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'device entry');
  r.u8();
  const kind = kindOf(r.u8());
  if (kind === undefined) throw r.fail('unknown kind');
  const str8 = (what: string): string => {
    try {
      return utf8Decode(r.bytes(r.u8()));
    } catch (err) {
      if (err instanceof CryptoError && err.code === 'INVALID_MESSAGE') throw err;
      throw r.fail(`${what} is not UTF-8`);
    }
  };
  const userId = str8('user id');
  const seq = r.u32();
  const prev = r.bytes(DEVICE_ENTRY_HASH_BYTES);
  const deviceId = str8('device id');
  const identityKey = r.bytes(ED25519_PUBLIC_KEY_BYTES);
  const signerDeviceId = str8('signer device id');
  const signedLength = bytes.length - r.remaining;
  const signature = r.bytes(ED25519_SIGNATURE_BYTES);
  const consent = kind === 'revoke' ? undefined : r.bytes(ED25519_SIGNATURE_BYTES);
  r.end();
  const entry: DeviceEntry = { kind, userId, seq, prev, deviceId, identityKey, signerDeviceId, signature, consent, bytes: copyBytes(bytes), signedLength };
  checkBody(entry, 'INVALID_MESSAGE');
  return entry;
}

/** SHA-256 of an entry's encoding: the next entry's `prev`. */
export function deviceEntryHash(backend: CryptoBackend, entry: DeviceEntry | Uint8Array): Uint8Array {
  return backend.sha256(entry instanceof Uint8Array ? entry : entry.bytes);
}
