/**
 * The root key of the Diffie-Hellman ratchet. Each DH ratchet step mixes a fresh X25519
 * output into it and yields the next root key plus the first chain key of a new chain:
 *
 *   rk' || ck = HKDF-SHA256(ikm = DH(ours, theirs), salt = rk, info = ROOT_KDF_INFO, 64)
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { ChainKey } from './chain-key.js';
import { ROOT_KDF_INFO } from './labels.js';
import type { RatchetKeyPair, RemoteRatchetKey } from './ratchet-key.js';
import { redactSecrets } from './redact.js';

export class RootKey {
  readonly #key: Uint8Array;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  /** Pure: returns the next root key and chain key, leaves `this` unchanged. */
  advance(
    backend: CryptoBackend,
    ours: RatchetKeyPair,
    theirs: RemoteRatchetKey,
  ): { rootKey: RootKey; chainKey: ChainKey } {
    const dh = ours.agree(backend, theirs);
    const out = backend.hkdfSha256(dh, this.#key, ROOT_KDF_INFO, 64);
    dh.fill(0);
    return { rootKey: new RootKey(out.subarray(0, 32)), chainKey: new ChainKey(out.subarray(32, 64), 0) };
  }

  /** For the session codec only. */
  exportBytes(): Uint8Array {
    return this.#key;
  }

  /** Overwrites the key with zeros once the next root key replaces it. */
  wipe(): void {
    this.#key.fill(0);
  }
}
redactSecrets(RootKey, 'RootKey');
