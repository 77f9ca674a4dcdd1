/**
 * Ratchet keys: the X25519 keys of the Diffie-Hellman ratchet. Our own key pair and the
 * peer's public key are different types, so a remote key can never be used where a
 * private key is needed, and a private key is never sent by mistake.
 *
 * Each key takes part in more than one X25519 operation: our key pair derives its public
 * key, then answers the peer's current key when it starts a sending chain and the peer's
 * next key when that arrives; a peer key is used when it arrives and again when our next
 * sending chain answers it. So each holds its key prepared for the backend
 * (primitives/backend.ts), made on first use and kept with the key: the native backend
 * then imports every key into OpenSSL once rather than once per agreement. The prepared
 * key remembers its backend and is made again if another one is passed.
 */
import type { CryptoBackend, PreparedX25519PrivateKey, PreparedX25519PublicKey } from '../primitives/backend.js';
import { toHex } from '../primitives/bytes.js';
import type { RandomSource } from '../primitives/random.js';
import { X25519_PRIVATE_KEY_BYTES, X25519_PUBLIC_KEY_BYTES } from '../primitives/sizes.js';
import { redactSecrets } from './redact.js';

/** Our ratchet key pair. The private half never leaves this object except for serialization. */
export class RatchetKeyPair {
  readonly #privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  #prepared: { readonly backend: CryptoBackend; readonly key: PreparedX25519PrivateKey } | undefined;

  constructor(privateKey: Uint8Array, publicKey: Uint8Array) {
    this.#privateKey = privateKey;
    this.publicKey = publicKey;
  }

  static generate(backend: CryptoBackend, random: RandomSource): RatchetKeyPair {
    const privateKey = random(X25519_PRIVATE_KEY_BYTES);
    const key = backend.x25519PrepareKey(privateKey);
    const pair = new RatchetKeyPair(privateKey, key.publicKey());
    pair.#prepared = { backend, key };
    return pair;
  }

  /** X25519 with the peer's ratchet key. Throws INVALID_KEY on a low-order key. */
  agree(backend: CryptoBackend, theirs: RemoteRatchetKey): Uint8Array {
    let prepared = this.#prepared;
    if (prepared?.backend !== backend) {
      prepared = { backend, key: backend.x25519PrepareKey(this.#privateKey) };
      this.#prepared = prepared;
    }
    return prepared.key.agree(theirs.prepared(backend));
  }

  /** For the session codec only. */
  exportPrivateKey(): Uint8Array {
    return this.#privateKey;
  }
}
redactSecrets(RatchetKeyPair, 'RatchetKeyPair');

/** The peer's ratchet public key, as received in a message header. */
export class RemoteRatchetKey {
  readonly bytes: Uint8Array;
  #id: string | undefined;
  #prepared: { readonly backend: CryptoBackend; readonly key: PreparedX25519PublicKey } | undefined;

  /** Takes ownership of `bytes`: pass a copy if the caller's buffer may change. */
  constructor(bytes: Uint8Array) {
    if (bytes.length !== X25519_PUBLIC_KEY_BYTES) throw new RangeError('ratchet key must be 32 bytes');
    this.bytes = bytes;
  }

  /** A string form used as a map key for skipped message keys (public data). */
  get id(): string {
    this.#id ??= toHex(this.bytes);
    return this.#id;
  }

  /** This key prepared for `backend`, made on first use (public data). */
  prepared(backend: CryptoBackend): PreparedX25519PublicKey {
    let prepared = this.#prepared;
    if (prepared?.backend !== backend) {
      prepared = { backend, key: backend.x25519PreparePublicKey(this.bytes) };
      this.#prepared = prepared;
    }
    return prepared.key;
  }

  /**
   * Equality with raw bytes from a header. Public keys are public, so an early exit
   * leaks nothing; this runs on every received message.
   */
  matches(other: Uint8Array, offset = 0): boolean {
    const a = this.bytes;
    for (let i = 0; i < X25519_PUBLIC_KEY_BYTES; i++) if (a[i] !== other[offset + i]) return false;
    return true;
  }
}
