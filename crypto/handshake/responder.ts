/**
 * The responder's half of the handshake: from an initial message to a session and the
 * first plaintext. Nothing in the store changes unless the embedded first message
 * authenticates; only then are the one-time prekeys it used removed.
 */
import { CryptoError } from '../errors.js';
import type { IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { decodeRatchetMessage } from '../ratchet/message.js';
import { Session } from '../ratchet/session.js';
import { deriveHandshakeSecret } from './agreement.js';
import { identityDhPublicKey } from '../identity/identity-dh.js';
import { decodeInitialMessage } from './initial-message.js';
import type { PreKeyStore } from './prekey-store.js';

export interface AcceptSessionParams {
  /** Our device identity. */
  readonly identity: IdentityKeyPair;
  readonly store: PreKeyStore;
  /** The initial message as received. */
  readonly message: Uint8Array;
  readonly backend?: CryptoBackend;
  readonly random?: RandomSource;
}

export interface AcceptedSession {
  readonly session: Session;
  readonly plaintext: Uint8Array;
  /** The initiator's identity key: check it against the pinned one before trusting the session. */
  readonly remoteIdentityKey: Uint8Array;
}

function decryptFailed(cause?: unknown): CryptoError {
  return new CryptoError('DECRYPT_FAILED', 'decryption failed', cause === undefined ? undefined : { cause });
}

/**
 * Completes the agreement from an initial message and decrypts its first message.
 *
 * Every way the message can be wrong for us (unknown prekey ids, a one-time key already
 * used, tampered keys or ciphertexts, a wrong identity) is DECRYPT_FAILED; a malformed
 * encoding is INVALID_MESSAGE / UNSUPPORTED_VERSION.
 *
 * Replays: an initial message whose one-time prekey was consumed fails. One that used
 * only the last-resort KEM key and no one-time X25519 prekey would set up the same
 * session again, so callers keep `session.baseKey` with each session and pass a repeat
 * to the existing session's decrypt (which reports the replay) instead of accepting it
 * again.
 */
export async function acceptSession(params: AcceptSessionParams): Promise<AcceptedSession> {
  const backend = params.backend ?? defaultBackend;
  const random = params.random ?? systemRandom;
  const { identity, store } = params;
  const initial = decodeInitialMessage(params.message);
  const ratchetMessage = decodeRatchetMessage(initial.ratchetMessage);

  const signedPreKey = await store.loadSignedPreKey(initial.signedPreKeyId);
  const oneTimePreKey =
    initial.oneTimePreKeyId === undefined ? undefined : await store.loadOneTimePreKey(initial.oneTimePreKeyId);
  const kemPreKey = await store.loadKemPreKey(initial.kemPreKeyId);
  if (
    signedPreKey === undefined ||
    (initial.oneTimePreKeyId !== undefined && oneTimePreKey === undefined) ||
    kemPreKey === undefined ||
    kemPreKey.lastResort !== initial.kemLastResort
  ) {
    throw decryptFailed();
  }

  let session: Session | undefined;
  let plaintext: Uint8Array;
  // Every secret of the agreement, wiped once the session has what it needs (or failed).
  const secrets: Array<Uint8Array | undefined> = [];
  try {
    const theirIdentityDh = identityDhPublicKey(initial.identityKey);
    // EK_A takes part in up to three agreements: prepared once.
    const baseKey = backend.x25519PreparePublicKey(initial.baseKey);
    const dh1 = signedPreKey.privateKey.agree(theirIdentityDh);
    const dh2 = identity.agreeX25519(baseKey);
    const dh3 = signedPreKey.privateKey.agree(baseKey);
    const dh4 = oneTimePreKey === undefined ? undefined : oneTimePreKey.privateKey.agree(baseKey);
    const kemSecret = kemPreKey.privateKey.decapsulate(initial.kemCipherText);
    secrets.push(dh1, dh2, dh3, dh4, kemSecret);
    const sharedSecret = deriveHandshakeSecret(backend, dh1, dh2, dh3, dh4, kemSecret);
    secrets.push(sharedSecret);
    session = Session.responder(
      {
        sharedSecret,
        localIdentityKey: identity.publicKey.bytes,
        remoteIdentityKey: initial.identityKey,
        baseKey: initial.baseKey,
        backend,
        random,
      },
      ratchetMessage.ratchetKey,
      initial.handshake,
    );
    plaintext = session.decrypt(initial.ratchetMessage);
  } catch (cause) {
    session?.wipe();
    // A low-order or off-curve key in the message is a forgery like a bad tag.
    if (cause instanceof CryptoError && cause.code === 'INVALID_KEY') throw decryptFailed();
    throw cause;
  } finally {
    for (const s of secrets) s?.fill(0);
  }

  // Authenticated: now, and only now, burn the one-time keys.
  if (oneTimePreKey !== undefined) await store.removeOneTimePreKey(oneTimePreKey.id);
  if (!kemPreKey.lastResort) await store.removeKemPreKey(kemPreKey.id);
  return { session, plaintext, remoteIdentityKey: initial.identityKey.slice() };
}
