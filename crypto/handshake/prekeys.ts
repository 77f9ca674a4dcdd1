/**
 * The responder's side of prekeys: generating them (private and public halves, signed by
 * the identity) and the public part that goes into the directory and then into bundles.
 * The private records live in the app's PreKeyStore.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { MLKEM768_KEYGEN_SEED_BYTES, X25519_PRIVATE_KEY_BYTES } from '../primitives/sizes.js';
import { signPublishedKey } from '../published-key.js';
import type { KemPreKeyPublic, OneTimePreKeyPublic, SignedPreKeyPublic } from './prekey-bundle.js';

/** A device's Ed25519 identity key pair: the 32-byte seed and its public key. */
export interface IdentityKeyPair {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
}

export interface KeyGenOptions {
  readonly backend?: CryptoBackend;
  readonly random?: RandomSource;
}

export interface SignedPreKeyRecord extends SignedPreKeyPublic {
  readonly privateKey: Uint8Array;
}

export interface OneTimePreKeyRecord extends OneTimePreKeyPublic {
  readonly privateKey: Uint8Array;
}

export interface KemPreKeyRecord extends KemPreKeyPublic {
  /** ML-KEM-768 decapsulation key. */
  readonly secretKey: Uint8Array;
}

function x25519Record(
  identity: IdentityKeyPair,
  id: number,
  kind: 'signed-prekey' | 'one-time-prekey',
  options: KeyGenOptions,
): { id: number; privateKey: Uint8Array; publicKey: Uint8Array; signature: Uint8Array } {
  const backend = options.backend ?? defaultBackend;
  const privateKey = (options.random ?? systemRandom)(X25519_PRIVATE_KEY_BYTES);
  const publicKey = backend.x25519PublicKey(privateKey);
  const signature = signPublishedKey(backend, identity.seed, kind, id, publicKey);
  return { id, privateKey, publicKey, signature };
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
  const backend = options.backend ?? defaultBackend;
  const { publicKey, secretKey } = backend.mlkemKeygen((options.random ?? systemRandom)(MLKEM768_KEYGEN_SEED_BYTES));
  const kind = lastResort ? 'last-resort-kem-prekey' : 'one-time-kem-prekey';
  const signature = signPublishedKey(backend, identity.seed, kind, id, publicKey);
  return { id, publicKey, signature, lastResort, secretKey };
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
