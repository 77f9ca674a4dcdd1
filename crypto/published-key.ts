/**
 * Signatures on the keys a device publishes to the directory. Every prekey (signed
 * X25519 prekey, ML-KEM-768 last-resort prekey, one-time X25519 and one-time ML-KEM-768
 * prekeys) is signed by the device's Ed25519 identity key over:
 *
 *   "hermetic/v1/published-key\0" || kind (1 byte) || keyId (u32 big-endian) || publicKey
 *
 * The kind byte binds the key's role, so a one-time key can't be replayed as a signed
 * prekey or an X25519 key passed off as an ML-KEM key; the key id binds the id the
 * responder will look the secret up by. The relay verifies these on upload and the
 * initiator verifies them again on every bundle it fetches (the relay is not trusted).
 */
import type { CryptoBackend, PreparedEd25519PublicKey } from './primitives/backend.js';
import { SIGNATURE_LABELS, signatureLabelBytes } from '../protocol/labels.js';
import { concatBytes, u32be } from './primitives/bytes.js';

export const PUBLISHED_KEY_KINDS = {
  'signed-prekey': 1,
  'last-resort-kem-prekey': 2,
  'one-time-prekey': 3,
  'one-time-kem-prekey': 4,
} as const;

export type PublishedKeyKind = keyof typeof PUBLISHED_KEY_KINDS;

const LABEL = signatureLabelBytes(SIGNATURE_LABELS.publishedKey);

export function publishedKeyTranscript(kind: PublishedKeyKind, keyId: number, publicKey: Uint8Array): Uint8Array {
  return concatBytes(LABEL, new Uint8Array([PUBLISHED_KEY_KINDS[kind]]), u32be(keyId), publicKey);
}

export function signPublishedKey(
  backend: CryptoBackend,
  identitySeed: Uint8Array,
  kind: PublishedKeyKind,
  keyId: number,
  publicKey: Uint8Array,
): Uint8Array {
  return backend.ed25519Sign(identitySeed, publishedKeyTranscript(kind, keyId, publicKey));
}

/** `identityKey` raw, or prepared when it checks several keys (a whole bundle). */
export function verifyPublishedKey(
  backend: CryptoBackend,
  identityKey: Uint8Array | PreparedEd25519PublicKey,
  kind: PublishedKeyKind,
  keyId: number,
  publicKey: Uint8Array,
  signature: Uint8Array,
): boolean {
  const transcript = publishedKeyTranscript(kind, keyId, publicKey);
  if (identityKey instanceof Uint8Array) return backend.ed25519Verify(signature, transcript, identityKey);
  return identityKey.verify(signature, transcript);
}
