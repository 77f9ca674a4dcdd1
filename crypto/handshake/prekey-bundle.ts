/**
 * A prekey bundle: what an initiator fetches from the directory to start a session with
 * a device it has never talked to, and the checks it makes before using one. The
 * directory is not trusted, so every signature is verified here again.
 *
 * Signatures are the device identity's signatures over published keys
 * (crypto/published-key.ts): the signed transcript binds the key's role and id as well
 * as the key itself.
 */
import { CryptoError } from '../errors.js';
import type { CryptoBackend, PreparedEd25519PublicKey } from '../primitives/backend.js';
import { assertBytes } from '../primitives/bytes.js';
import {
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SIGNATURE_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  X25519_PUBLIC_KEY_BYTES,
} from '../primitives/sizes.js';
import { type PublishedKeyKind, verifyPublishedKey } from '../published-key.js';

export interface SignedPreKeyPublic {
  readonly id: number;
  /** X25519 public key. */
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

export interface OneTimePreKeyPublic {
  readonly id: number;
  /** X25519 public key. */
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

export interface KemPreKeyPublic {
  readonly id: number;
  /** ML-KEM-768 encapsulation key. */
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
  /** The device's reusable last-resort key (true) or a one-time key (false). */
  readonly lastResort: boolean;
}

export interface PreKeyBundle {
  /** The device's Ed25519 identity key. */
  readonly identityKey: Uint8Array;
  readonly signedPreKey: SignedPreKeyPublic;
  /** Absent when the device has run out of one-time prekeys. */
  readonly oneTimePreKey?: OneTimePreKeyPublic | undefined;
  /** A one-time ML-KEM prekey, or the last-resort one when those have run out. */
  readonly kemPreKey: KemPreKeyPublic;
}

function isU32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
}

/** Bundles come from an untrusted directory: a part must be an object before its fields are read. */
function assertObject(v: unknown, label: string): void {
  if (typeof v !== 'object' || v === null) throw new CryptoError('INVALID_ARGUMENT', `${label} must be an object`);
}

function check(
  backend: CryptoBackend,
  identityKey: PreparedEd25519PublicKey,
  kind: PublishedKeyKind,
  label: string,
  key: { readonly id: number; readonly publicKey: Uint8Array; readonly signature: Uint8Array },
  publicKeyBytes: number,
): void {
  assertObject(key, label);
  if (!isU32(key.id)) throw new CryptoError('INVALID_ARGUMENT', `${label} id must be a u32`);
  assertBytes(key.publicKey, publicKeyBytes, `${label} public key`, 'INVALID_KEY');
  assertBytes(key.signature, ED25519_SIGNATURE_BYTES, `${label} signature`);
  if (!verifyPublishedKey(backend, identityKey, kind, key.id, key.publicKey, key.signature)) {
    throw new CryptoError('INVALID_SIGNATURE', `${label} signature is not valid for the bundle's identity key`);
  }
}

/**
 * Checks sizes and every signature of a bundle. Throws INVALID_SIGNATURE naming the
 * first key whose signature fails, INVALID_KEY / INVALID_ARGUMENT for a malformed field
 * (or a part that is not an object).
 */
export function verifyPreKeyBundle(backend: CryptoBackend, bundle: PreKeyBundle): void {
  assertObject(bundle, 'bundle');
  assertBytes(bundle.identityKey, ED25519_PUBLIC_KEY_BYTES, 'identity key', 'INVALID_KEY');
  // Prepared once for the two or three signatures it checks.
  const identityKey = backend.ed25519PreparePublicKey(bundle.identityKey);
  check(backend, identityKey, 'signed-prekey', 'signed prekey', bundle.signedPreKey, X25519_PUBLIC_KEY_BYTES);
  if (bundle.oneTimePreKey !== undefined) {
    check(backend, identityKey, 'one-time-prekey', 'one-time prekey', bundle.oneTimePreKey, X25519_PUBLIC_KEY_BYTES);
  }
  const kem = bundle.kemPreKey;
  assertObject(kem, 'kem prekey');
  if (typeof kem.lastResort !== 'boolean') throw new CryptoError('INVALID_ARGUMENT', 'kem prekey lastResort must be a boolean');
  check(
    backend,
    identityKey,
    kem.lastResort ? 'last-resort-kem-prekey' : 'one-time-kem-prekey',
    kem.lastResort ? 'last-resort KEM prekey' : 'one-time KEM prekey',
    kem,
    MLKEM768_PUBLIC_KEY_BYTES,
  );
}
