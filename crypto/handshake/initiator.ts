/**
 * The initiator's half of the handshake: from a verified prekey bundle to a session whose
 * messages are initial messages until the responder replies.
 */
import type { IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { MLKEM768_ENCAPS_RANDOMNESS_BYTES, X25519_PRIVATE_KEY_BYTES } from '../primitives/sizes.js';
import { Session } from '../ratchet/session.js';
import { deriveHandshakeSecret } from './agreement.js';
import { identityDhPublicKey, identityDhScalar } from './identity-dh.js';
import { encodeInitialHandshake } from './initial-message.js';
import { type PreKeyBundle, verifyPreKeyBundle } from './prekey-bundle.js';

export interface InitiateSessionParams {
  /** Our device identity. */
  readonly identity: IdentityKeyPair;
  /** The peer device's bundle, as fetched from the directory (verified here). */
  readonly bundle: PreKeyBundle;
  readonly backend?: CryptoBackend;
  readonly random?: RandomSource;
}

/**
 * Verifies the bundle, runs the agreement and returns the new session. Encrypt the first
 * message with it; until a reply arrives every message it produces is an initial
 * message. Throws INVALID_SIGNATURE / INVALID_KEY for a bad bundle.
 */
export function initiateSession(params: InitiateSessionParams): Session {
  const backend = params.backend ?? defaultBackend;
  const random = params.random ?? systemRandom;
  const { identity, bundle } = params;
  verifyPreKeyBundle(backend, bundle);

  const theirIdentityDh = identityDhPublicKey(bundle.identityKey);
  const ourIdentityDh = identityDhScalar(backend, identity);
  const ourIdentityKey = identity.publicKey.bytes;
  const ephemeral = random(X25519_PRIVATE_KEY_BYTES);
  const baseKey = backend.x25519PublicKey(ephemeral);
  const spk = bundle.signedPreKey.publicKey;

  const dh1 = backend.x25519(ourIdentityDh, spk);
  const dh2 = backend.x25519(ephemeral, theirIdentityDh);
  const dh3 = backend.x25519(ephemeral, spk);
  const dh4 = bundle.oneTimePreKey === undefined ? undefined : backend.x25519(ephemeral, bundle.oneTimePreKey.publicKey);
  const kem = backend.mlkemEncapsulate(bundle.kemPreKey.publicKey, random(MLKEM768_ENCAPS_RANDOMNESS_BYTES));
  const sharedSecret = deriveHandshakeSecret(backend, dh1, dh2, dh3, dh4, kem.sharedSecret);
  // The ephemeral private key and our identity scalar are not kept anywhere.
  ephemeral.fill(0);
  ourIdentityDh.fill(0);

  const handshake = encodeInitialHandshake({
    identityKey: ourIdentityKey,
    baseKey,
    signedPreKeyId: bundle.signedPreKey.id,
    oneTimePreKeyId: bundle.oneTimePreKey?.id,
    kemPreKeyId: bundle.kemPreKey.id,
    kemLastResort: bundle.kemPreKey.lastResort,
    kemCipherText: kem.cipherText,
  });
  return Session.initiator(
    {
      sharedSecret,
      localIdentityKey: ourIdentityKey,
      remoteIdentityKey: bundle.identityKey.slice(),
      baseKey,
      backend,
      random,
    },
    handshake,
  );
}
