/**
 * The responder's side of prekeys: generating them (private and public halves, signed by
 * the identity) and the public part that goes into the directory and then into bundles.
 * The private records live in the app's PreKeyStore; their secret halves are the
 * redacting key wrappers of crypto/keys.ts.
 */
import type { IdentityKeyPair } from '../identity/identity-key.js';
import { MlKem768PrivateKey, X25519PrivateKey } from '../keys.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { type PublishedKeyKind, publishedKeyTranscript } from '../published-key.js';
import type { KemPreKeyPublic, OneTimePreKeyPublic, SignedPreKeyPublic } from './prekey-bundle.js';

export interface KeyGenOptions {
  readonly backend?: CryptoBackend;
  readonly random?: RandomSource;
}

export interface SignedPreKeyRecord extends SignedPreKeyPublic {
  readonly privateKey: X25519PrivateKey;
}

export interface OneTimePreKeyRecord extends OneTimePreKeyPublic {
  readonly privateKey: X25519PrivateKey;
}

export interface KemPreKeyRecord extends KemPreKeyPublic {
  readonly privateKey: MlKem768PrivateKey;
}

function sign(identity: IdentityKeyPair, kind: PublishedKeyKind, id: number, publicKey: Uint8Array): Uint8Array {
  // The transcript is already domain-separated ("hermetic/v1/published-key\0" || ...).
  return identity.sign(publishedKeyTranscript(kind, id, publicKey));
}

function x25519Record(
  identity: IdentityKeyPair,
  id: number,
  kind: 'signed-prekey' | 'one-time-prekey',
  options: KeyGenOptions,
): SignedPreKeyRecord {
  const privateKey = X25519PrivateKey.generate(options.random ?? systemRandom, options.backend ?? defaultBackend);
  const publicKey = privateKey.publicKey;
  return { id, publicKey, signature: sign(identity, kind, id, publicKey), privateKey };
}

export function generateSignedPreKey(identity: IdentityKeyPair, id: number, options: KeyGenOptions = {}): SignedPreKeyRecord {
  return x25519Record(identity, id, 'signed-prekey', options);
}

export function generateOneTimePreKey(identity: IdentityKeyPair, id: number, options: KeyGenOptions = {}): OneTimePreKeyRecord {
  return x25519Record(identity, id, 'one-time-prekey', options);
}

/** An ML-KEM-768 prekey: one-time (`lastResort` false) or the device's last-resort key. */
export function generateKemPreKey(
  identity: IdentityKeyPair,
  id: number,
  lastResort: boolean,
  options: KeyGenOptions = {},
): KemPreKeyRecord {
  const privateKey = MlKem768PrivateKey.generate(options.random ?? systemRandom, options.backend ?? defaultBackend);
  const publicKey = privateKey.publicKey;
  const kind = lastResort ? 'last-resort-kem-prekey' : 'one-time-kem-prekey';
  return { id, publicKey, signature: sign(identity, kind, id, publicKey), lastResort, privateKey };
}

/** The public part of a record, for the directory. */
export function signedPreKeyPublic(r: SignedPreKeyRecord): SignedPreKeyPublic {
  return { id: r.id, publicKey: r.publicKey, signature: r.signature };
}

export function oneTimePreKeyPublic(r: OneTimePreKeyRecord): OneTimePreKeyPublic {
  return { id: r.id, publicKey: r.publicKey, signature: r.signature };
}

export function kemPreKeyPublic(r: KemPreKeyRecord): KemPreKeyPublic {
  return { id: r.id, publicKey: r.publicKey, signature: r.signature, lastResort: r.lastResort };
}
