/**
 * A message key: the one-time AEAD key of one message (ChaCha20-Poly1305 with the fixed
 * MESSAGE_NONCE; each key encrypts a single message). `index` is its position in the
 * chain, which the header carries as the message number.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { MESSAGE_NONCE } from './labels.js';
import { redactSecrets } from './redact.js';

export class MessageKey {
  readonly #key: Uint8Array;
  readonly index: number;

  constructor(key: Uint8Array, index: number) {
    this.#key = key;
    this.index = index;
  }

  seal(backend: CryptoBackend, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    return backend.aeadSeal(this.#key, MESSAGE_NONCE, plaintext, aad);
  }

  /** Throws DECRYPT_FAILED on any authentication failure. */
  open(backend: CryptoBackend, sealed: Uint8Array, aad: Uint8Array): Uint8Array {
    return backend.aeadOpen(this.#key, MESSAGE_NONCE, sealed, aad);
  }

  /** For the state codecs only. */
  exportBytes(): Uint8Array {
    return this.#key;
  }

  /** Overwrites the key with zeros once its one message is sealed or opened. */
  wipe(): void {
    this.#key.fill(0);
  }
}
redactSecrets(MessageKey, 'MessageKey');
