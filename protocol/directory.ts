/**
 * Wire shapes of the key directory (HTTP, JSON bodies, bytes as base64url). Decoders
 * turn untrusted JSON into typed objects, checking every size and count first.
 */
import { encodeBase64url } from './base64url.js';
import { type JsonObject, array, asObject, bool, bytes, bytesValue, int, keyId, str } from './decode.js';
import { ProtocolError } from './errors.js';
import {
  DEVICE_ID_PATTERN,
  MAX_DEVICE_ID_LENGTH,
  MAX_DEVICE_LIST_LENGTH,
  MAX_DEVICES_PER_USER,
  MAX_KEYS_PER_UPLOAD,
  MAX_USER_ID_LENGTH,
  USER_ID_PATTERN,
} from './limits.js';

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;
export const X25519_PUBLIC_KEY_BYTES = 32;
export const MLKEM768_PUBLIC_KEY_BYTES = 1184;

export interface WireSignedKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

/** POST /v1/devices: one signed device-list entry (root, add or revoke). */
export interface DeviceEntryRequest {
  /** The encoded entry (crypto/devices/entry.ts), checked by the relay against the list. */
  readonly entry: Uint8Array;
}

/** GET /v1/users/{userId}/devices: a user's signed device list, or its newest part. */
export interface DeviceListAnswer {
  readonly userId: string;
  /** Entries in the whole list. */
  readonly length: number;
  /** SHA-256 of the newest entry; undefined for an empty list. */
  readonly head: Uint8Array | undefined;
  /** The entries after the requested position (`after`), oldest first. */
  readonly entries: readonly Uint8Array[];
  /** The active devices as the relay holds them. Not to be trusted: a client derives the
   * devices it encrypts to from `entries` (crypto/devices). */
  readonly devices: ReadonlyArray<{ readonly deviceId: string; readonly identityKey: Uint8Array }>;
}

export interface KeyUploadRequest {
  readonly signedPrekey: WireSignedKey | undefined;
  readonly lastResortKemPrekey: WireSignedKey | undefined;
  readonly oneTimePrekeys: readonly WireSignedKey[];
  readonly oneTimeKemPrekeys: readonly WireSignedKey[];
}

export function decodeDeviceId(s: string, field = 'deviceId'): string {
  if (s.length === 0 || s.length > MAX_DEVICE_ID_LENGTH || !DEVICE_ID_PATTERN.test(s)) {
    throw new ProtocolError('BAD_REQUEST', `${field}: must match ${DEVICE_ID_PATTERN.source}`);
  }
  return s;
}

export function decodeDeviceEntryRequest(o: JsonObject): DeviceEntryRequest {
  return { entry: bytes(o, 'entry', { min: 1, max: MAX_DEVICE_ENTRY_WIRE_BYTES }) };
}

/** Largest encoded device-list entry (crypto/devices/entry.ts MAX_DEVICE_ENTRY_BYTES). */
export const MAX_DEVICE_ENTRY_WIRE_BYTES = 512;

export function encodeDeviceListAnswer(a: DeviceListAnswer): Record<string, unknown> {
  return {
    userId: a.userId,
    length: a.length,
    ...(a.head ? { head: encodeBase64url(a.head) } : {}),
    entries: a.entries.map(encodeBase64url),
    devices: a.devices.map((d) => ({ deviceId: d.deviceId, identityKey: encodeBase64url(d.identityKey) })),
  };
}

export function decodeDeviceListAnswer(o: JsonObject): DeviceListAnswer {
  const length = int(o, 'length', 0, MAX_DEVICE_LIST_LENGTH);
  const entries = array(o, 'entries', MAX_DEVICE_LIST_LENGTH, () => new ProtocolError('BAD_REQUEST', 'entries: too many')).map((v, i) =>
    bytesValue(v, `entries[${i}]`, { min: 1, max: MAX_DEVICE_ENTRY_WIRE_BYTES }),
  );
  const devices = array(o, 'devices', MAX_DEVICES_PER_USER * 2, () => new ProtocolError('BAD_REQUEST', 'devices: too many')).map((v, i) => {
    const d = asObject(v, `devices[${i}]`);
    return {
      deviceId: str(d, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
      identityKey: bytes(d, 'identityKey', ED25519_PUBLIC_KEY_BYTES),
    };
  });
  if (entries.length > length) throw new ProtocolError('BAD_REQUEST', 'entries: more than the list length');
  return {
    userId: str(o, 'userId', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    length,
    head: o.head === undefined ? undefined : bytes(o, 'head', 32),
    entries,
    devices,
  };
}

function signedKey(v: unknown, field: string, publicKeyBytes: number): WireSignedKey {
  const o = asObject(v, field);
  try {
    return {
      keyId: keyId(o, 'keyId'),
      publicKey: bytes(o, 'publicKey', publicKeyBytes),
      signature: bytes(o, 'signature', ED25519_SIGNATURE_BYTES),
    };
  } catch (err) {
    // Name the key as well as its field: an upload holds up to MAX_KEYS_PER_UPLOAD keys.
    if (err instanceof ProtocolError) throw new ProtocolError(err.code, `${field}.${err.message}`, err.details);
    throw err;
  }
}

function countOf(o: JsonObject, field: string): number {
  const v = o[field];
  return Array.isArray(v) ? v.length : 0;
}

export function decodeKeyUpload(o: JsonObject): KeyUploadRequest {
  // Count first, before decoding (and later verifying) a single key.
  const total = countOf(o, 'oneTimePrekeys') + countOf(o, 'oneTimeKemPrekeys');
  if (total > MAX_KEYS_PER_UPLOAD) {
    throw new ProtocolError('TOO_MANY_KEYS', `at most ${MAX_KEYS_PER_UPLOAD} one-time keys per upload, got ${total}`);
  }
  const tooMany = () => new ProtocolError('TOO_MANY_KEYS', `at most ${MAX_KEYS_PER_UPLOAD} one-time keys per upload`);
  const upload: KeyUploadRequest = {
    signedPrekey: o.signedPrekey === undefined ? undefined : signedKey(o.signedPrekey, 'signedPrekey', X25519_PUBLIC_KEY_BYTES),
    lastResortKemPrekey:
      o.lastResortKemPrekey === undefined
        ? undefined
        : signedKey(o.lastResortKemPrekey, 'lastResortKemPrekey', MLKEM768_PUBLIC_KEY_BYTES),
    oneTimePrekeys: array(o, 'oneTimePrekeys', MAX_KEYS_PER_UPLOAD, tooMany).map((k, i) =>
      signedKey(k, `oneTimePrekeys[${i}]`, X25519_PUBLIC_KEY_BYTES),
    ),
    oneTimeKemPrekeys: array(o, 'oneTimeKemPrekeys', MAX_KEYS_PER_UPLOAD, tooMany).map((k, i) =>
      signedKey(k, `oneTimeKemPrekeys[${i}]`, MLKEM768_PUBLIC_KEY_BYTES),
    ),
  };
  if (!upload.signedPrekey && !upload.lastResortKemPrekey && total === 0) {
    throw new ProtocolError('BAD_REQUEST', 'the upload contains no keys');
  }
  return upload;
}

export function encodeSignedKey(k: WireSignedKey): { keyId: number; publicKey: string; signature: string } {
  return { keyId: k.keyId, publicKey: encodeBase64url(k.publicKey), signature: encodeBase64url(k.signature) };
}

/** POST /v1/devices: the relay's answer to an appended (or repeated) entry. */
export interface DeviceEntryAnswer {
  readonly userId: string;
  readonly seq: number;
  readonly kind: 'root' | 'add' | 'revoke';
  readonly deviceId: string;
  /** False when the same entry was already stored (a retried request). */
  readonly created: boolean;
}

const ENTRY_KINDS = ['root', 'add', 'revoke'] as const;

export function decodeDeviceEntryAnswer(o: JsonObject): DeviceEntryAnswer {
  const kind = str(o, 'kind', { max: 8 });
  if (!(ENTRY_KINDS as readonly string[]).includes(kind)) throw new ProtocolError('BAD_REQUEST', 'kind: unknown');
  return {
    userId: str(o, 'userId', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    seq: int(o, 'seq', 0, MAX_DEVICE_LIST_LENGTH - 1),
    kind: kind as DeviceEntryAnswer['kind'],
    deviceId: str(o, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    created: bool(o, 'created'),
  };
}

/** GET and PUT /v1/devices/{deviceId}/keys: what the owner has stored, to top up. */
export interface KeyCountsAnswer {
  readonly oneTimePrekeys: number;
  readonly oneTimeKemPrekeys: number;
  readonly hasSignedPrekey: boolean;
  readonly hasLastResortKemPrekey: boolean;
}

export function encodeKeyCountsAnswer(c: KeyCountsAnswer): Record<string, unknown> {
  return { oneTimePrekeys: c.oneTimePrekeys, oneTimeKemPrekeys: c.oneTimeKemPrekeys, hasSignedPrekey: c.hasSignedPrekey, hasLastResortKemPrekey: c.hasLastResortKemPrekey };
}

export function decodeKeyCountsAnswer(o: JsonObject): KeyCountsAnswer {
  return {
    oneTimePrekeys: int(o, 'oneTimePrekeys', 0, Number.MAX_SAFE_INTEGER),
    oneTimeKemPrekeys: int(o, 'oneTimeKemPrekeys', 0, Number.MAX_SAFE_INTEGER),
    hasSignedPrekey: bool(o, 'hasSignedPrekey'),
    hasLastResortKemPrekey: bool(o, 'hasLastResortKemPrekey'),
  };
}

/** POST /v1/users/{userId}/devices/{deviceId}/bundle: one device's prekey bundle. */
export interface BundleAnswer {
  readonly userId: string;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  readonly signedPrekey: WireSignedKey;
  /** Absent when the device has no one-time X25519 prekey left (or none may be handed out). */
  readonly oneTimePrekey: WireSignedKey | undefined;
  /** A one-time ML-KEM-768 prekey, or the last-resort one (`kemLastResort`). */
  readonly kemPrekey: WireSignedKey;
  readonly kemLastResort: boolean;
}

export function encodeBundleAnswer(b: BundleAnswer): Record<string, unknown> {
  return {
    userId: b.userId,
    deviceId: b.deviceId,
    identityKey: encodeBase64url(b.identityKey),
    signedPrekey: encodeSignedKey(b.signedPrekey),
    ...(b.oneTimePrekey ? { oneTimePrekey: encodeSignedKey(b.oneTimePrekey) } : {}),
    kemPrekey: encodeSignedKey(b.kemPrekey),
    kemLastResort: b.kemLastResort,
  };
}

export function decodeBundleAnswer(o: JsonObject): BundleAnswer {
  const kemLastResort = bool(o, 'kemLastResort');
  return {
    userId: str(o, 'userId', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    deviceId: str(o, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    identityKey: bytes(o, 'identityKey', ED25519_PUBLIC_KEY_BYTES),
    signedPrekey: signedKey(o.signedPrekey, 'signedPrekey', X25519_PUBLIC_KEY_BYTES),
    oneTimePrekey: o.oneTimePrekey === undefined ? undefined : signedKey(o.oneTimePrekey, 'oneTimePrekey', X25519_PUBLIC_KEY_BYTES),
    kemPrekey: signedKey(o.kemPrekey, 'kemPrekey', MLKEM768_PUBLIC_KEY_BYTES),
    kemLastResort,
  };
}
