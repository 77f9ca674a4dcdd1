/**
 * The X25519 form of a device's Ed25519 identity key, for the handshake's identity DH
 * (DH1 and DH2 of PQXDH).
 *
 * Choice: convert rather than publish a second identity key. The directory holds one
 * identity key per device (the Ed25519 key everything is pinned and safety-numbered on),
 * so converting keeps one key to pin, one key in the bundle, and no extra signature to
 * verify per handshake. This is the libsodium construction
 * (crypto_sign_ed25519_{pk,sk}_to_curve25519):
 *
 *  - private: the clamped first half of SHA-512(seed), i.e. exactly the secret scalar
 *    Ed25519 signs with (RFC 8032 §5.1.5), used as an X25519 scalar;
 *  - public: the birational map u = (1 + y) / (1 - y) mod p from the Edwards point to
 *    the Montgomery curve (RFC 7748 §4.1), so it matches the private half.
 *
 * Using one scalar for both Ed25519 signatures and X25519 is covered by the joint
 * security analysis of the two (Thormarker, "On using the same key pair for Ed25519 and
 * an X25519 based KEM", 2021). The map is a public-data computation that the backend
 * contract does not offer, so it comes from @noble/curves for both backends; the secret
 * half goes through the backend's SHA-512.
 *
 * The private half is used through `IdentityKeyPair.agreeX25519`, which derives it on
 * first use and keeps it, prepared for its backend, for as long as the key pair (which
 * holds the seed it comes from anyway): a device's handshakes then share one import.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { CryptoError } from '../errors.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { assertBytes } from '../primitives/bytes.js';
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SEED_BYTES } from '../primitives/sizes.js';

/** X25519 public key of an Ed25519 identity key. Throws INVALID_KEY if it is not a curve point. */
export function identityDhPublicKey(identityKey: Uint8Array): Uint8Array {
  assertBytes(identityKey, ED25519_PUBLIC_KEY_BYTES, 'identity key', 'INVALID_KEY');
  try {
    return ed25519.utils.toMontgomery(identityKey);
  } catch (cause) {
    throw new CryptoError('INVALID_KEY', 'identity key is not a valid Ed25519 point', { cause });
  }
}

/** X25519 private scalar of an Ed25519 identity seed (clamped, RFC 7748 §5). */
export function identityDhPrivateKey(backend: CryptoBackend, identitySeed: Uint8Array): Uint8Array {
  assertBytes(identitySeed, ED25519_SEED_BYTES, 'identity seed', 'INVALID_KEY');
  const digest = backend.sha512(identitySeed);
  const scalar = digest.slice(0, 32);
  digest.fill(0); // its second half is the signing nonce prefix (RFC 8032 §5.1.6)
  scalar[0] = (scalar[0] as number) & 248;
  scalar[31] = ((scalar[31] as number) & 127) | 64;
  return scalar;
}
