/**
 * The initiator's half of the handshake: from a verified prekey bundle to a session whose
 * messages are initial messages until the responder replies.
 */
import type { IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { copyBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { MLKEM768_ENCAPS_RANDOMNESS_BYTES, X25519_PRIVATE_KEY_BYTES } from '../primitives/sizes.js';
import { Session } from '../ratchet/session.js';
import { deriveHandshakeSecret } from './agreement.js';
import { identityDhPublicKey } from '../identity/identity-dh.js';
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
  const ourIdentityKey = identity.publicKey.bytes;
  // EK_A takes part in three agreements and SPK_B in two: each is prepared once. The
  // raw ephemeral bytes are wiped at once; the prepared key is dropped on return.
  const ephemeralBytes = random(X25519_PRIVATE_KEY_BYTES);
  const ephemeral = backend.x25519PrepareKey(ephemeralBytes);
  ephemeralBytes.fill(0);
  const baseKey = ephemeral.publicKey();
  const spk = backend.x25519PreparePublicKey(bundle.signedPreKey.publicKey);

  const dh1 = identity.agreeX25519(spk);
  const dh2 = ephemeral.agree(theirIdentityDh);
  const dh3 = ephemeral.agree(spk);
  const dh4 = bundle.oneTimePreKey === undefined ? undefined : ephemeral.agree(bundle.oneTimePreKey.publicKey);
  const kem = backend.mlkemEncapsulate(bundle.kemPreKey.publicKey, random(MLKEM768_ENCAPS_RANDOMNESS_BYTES));
  const sharedSecret = deriveHandshakeSecret(backend, dh1, dh2, dh3, dh4, kem.sharedSecret);
  // The agreement's parts are secrets the session no longer needs.
  for (const secret of [dh1, dh2, dh3, dh4, kem.sharedSecret]) secret?.fill(0);

  const handshake = encodeInitialHandshake({
    identityKey: ourIdentityKey,
    baseKey,
    signedPreKeyId: bundle.signedPreKey.id,
    oneTimePreKeyId: bundle.oneTimePreKey?.id,
    kemPreKeyId: bundle.kemPreKey.id,
    kemLastResort: bundle.kemPreKey.lastResort,
    kemCipherText: kem.cipherText,
  });
  const session = Session.initiator(
    {
      sharedSecret,
      localIdentityKey: ourIdentityKey,
      remoteIdentityKey: copyBytes(bundle.identityKey),
      baseKey,
      backend,
      random,
    },
    handshake,
  );
  sharedSecret.fill(0);
  return session;
}
