/**
 * Building device-list entries, and the linking handshake between a new device and an
 * existing one:
 *
 *   1. the new device creates its identity and a link request — its user id, device id,
 *      identity key and consent signature — and shows it as a code (text or QR);
 *   2. an existing device of the same user reads the code, checks the consent, shows
 *      the new device's fingerprint for the person to compare, and signs an `add`
 *      entry extending the list it has verified (linkEntry);
 *   3. the entry is posted to the relay, which checks it against the stored list; the
 *      new device then finds itself in the list and starts.
 *
 * The code carries only public data and a signature: reading it off a screen gives an
 * onlooker nothing but the ability to link that very device into that very account.
 */
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { DEVICE_ID_PATTERN, MAX_DEVICE_ID_LENGTH, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { CryptoError } from '../errors.js';
import type { IdentityKeyPair } from '../identity/identity-key.js';
import { keyFingerprint } from '../keys.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { utf8Decode, utf8Encode } from '../primitives/bytes.js';
import { isRejectedEd25519PublicKey } from '../primitives/ed25519-policy.js';
import { defaultBackend } from '../primitives/index.js';
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';
import type { DeviceChain } from './chain.js';
import { DEVICE_ENTRY_HASH_BYTES, deviceConsentTranscript, signDeviceEntry } from './entry.js';

/** Prefix of a link code: names the format, so a wrong code is refused plainly. */
export const LINK_CODE_PREFIX = 'hermetic-link-1:';

/** Longest link code: prefix + base64url of the largest request. */
export const MAX_LINK_CODE_LENGTH =
  LINK_CODE_PREFIX.length + Math.ceil(((2 + MAX_USER_ID_LENGTH + MAX_DEVICE_ID_LENGTH + ED25519_PUBLIC_KEY_BYTES + ED25519_SIGNATURE_BYTES) * 4) / 3);

export interface LinkRequest {
  readonly userId: string;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  /** The new device's signature over deviceConsentTranscript(userId, deviceId, identityKey). */
  readonly consent: Uint8Array;
}

/** The new device's side: its consent to join `userId` as `deviceId`. */
export function createLinkRequest(identity: IdentityKeyPair, userId: string, deviceId: string): LinkRequest {
  checkIds(userId, deviceId, 'INVALID_ARGUMENT');
  const identityKey = identity.publicKey.bytes;
  return { userId, deviceId, identityKey, consent: identity.sign(deviceConsentTranscript(userId, deviceId, identityKey)) };
}

export function encodeLinkRequest(r: LinkRequest): string {
  const w = new ByteWriter(256);
  const user = utf8Encode(r.userId);
  const device = utf8Encode(r.deviceId);
  w.u8(user.length).bytes(user).u8(device.length).bytes(device).bytes(r.identityKey).bytes(r.consent);
  return LINK_CODE_PREFIX + encodeBase64url(w.finish());
}

/**
 * Reads a link code and checks its consent signature. Throws INVALID_MESSAGE for
 * anything that is not a link code, INVALID_SIGNATURE when the consent does not verify.
 */
export function decodeLinkRequest(code: string, backend: CryptoBackend = defaultBackend): LinkRequest {
  if (typeof code !== 'string' || code.length > MAX_LINK_CODE_LENGTH || !code.startsWith(LINK_CODE_PREFIX)) {
    throw new CryptoError('INVALID_MESSAGE', 'not a device link code');
  }
  const bytes = decodeBase64url(code.slice(LINK_CODE_PREFIX.length));
  if (bytes === undefined) throw new CryptoError('INVALID_MESSAGE', 'link code: not base64url');
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'link code');
  let userId: string;
  let deviceId: string;
  try {
    userId = utf8Decode(r.bytes(r.u8()));
    deviceId = utf8Decode(r.bytes(r.u8()));
  } catch (err) {
    if (err instanceof CryptoError && err.code === 'INVALID_MESSAGE') throw err;
    throw new CryptoError('INVALID_MESSAGE', 'link code: ids are not UTF-8');
  }
  const identityKey = r.bytes(ED25519_PUBLIC_KEY_BYTES);
  const consent = r.bytes(ED25519_SIGNATURE_BYTES);
  r.end();
  checkIds(userId, deviceId, 'INVALID_MESSAGE');
  if (isRejectedEd25519PublicKey(identityKey)) throw new CryptoError('INVALID_MESSAGE', 'link code: unusable identity key');
  if (!backend.ed25519Verify(consent, deviceConsentTranscript(userId, deviceId, identityKey), identityKey)) {
    throw new CryptoError('INVALID_SIGNATURE', 'link code: the consent signature does not verify');
  }
  return { userId, deviceId, identityKey, consent };
}

/** What both screens show, for the person to compare before linking. */
export function linkRequestFingerprint(r: LinkRequest, backend: CryptoBackend = defaultBackend): string {
  return keyFingerprint(r.identityKey, backend);
}

function checkIds(userId: string, deviceId: string, code: 'INVALID_ARGUMENT' | 'INVALID_MESSAGE'): void {
  if (typeof userId !== 'string' || userId.length === 0 || userId.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(userId)) {
    throw new CryptoError(code, 'user id must be 1..128 printable ASCII characters');
  }
  if (typeof deviceId !== 'string' || deviceId.length === 0 || deviceId.length > MAX_DEVICE_ID_LENGTH || !DEVICE_ID_PATTERN.test(deviceId)) {
    throw new CryptoError(code, `device id must match ${DEVICE_ID_PATTERN.source}`);
  }
}

/** The first entry of a user's list: this device as the account's root. */
export function rootEntry(identity: IdentityKeyPair, userId: string, deviceId: string): Uint8Array {
  const req = createLinkRequest(identity, userId, deviceId);
  return signDeviceEntry(
    { kind: 'root', userId, seq: 0, prev: new Uint8Array(DEVICE_ENTRY_HASH_BYTES), deviceId, identityKey: req.identityKey, signerDeviceId: deviceId },
    identity,
    req.consent,
  );
}

/**
 * An `add` entry linking the device of `request` into `chain` (the list as the signer
 * verified it), signed by `signer`, the identity of active device `signerDeviceId`.
 */
export function linkEntry(chain: DeviceChain, signerDeviceId: string, signer: IdentityKeyPair, request: LinkRequest): Uint8Array {
  if (request.userId !== chain.userId) throw new CryptoError('INVALID_ARGUMENT', 'the link request is for another user');
  return signDeviceEntry(
    {
      kind: 'add',
      userId: chain.userId,
      seq: chain.length,
      prev: chain.head,
      deviceId: request.deviceId,
      identityKey: request.identityKey,
      signerDeviceId,
    },
    signer,
    request.consent,
  );
}

/** A `revoke` entry removing active device `deviceId` from `chain`, signed by `signer`. */
export function revokeEntry(chain: DeviceChain, signerDeviceId: string, signer: IdentityKeyPair, deviceId: string): Uint8Array {
  const subject = chain.device(deviceId);
  if (subject === undefined) throw new CryptoError('INVALID_ARGUMENT', `device ${deviceId} is not active in this list`);
  return signDeviceEntry(
    { kind: 'revoke', userId: chain.userId, seq: chain.length, prev: chain.head, deviceId, identityKey: subject.identityKey, signerDeviceId },
    signer,
  );
}
