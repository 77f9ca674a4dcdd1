/**
 * A chain key: one link of a symmetric-key ratchet (a sending or receiving chain, or a
 * group sender-key chain). Each step costs exactly two HMAC-SHA256 calls:
 *
 *   message key(i) = HMAC(ck_i, 0x01)      next chain key ck_{i+1} = HMAC(ck_i, 0x02)
 *
 * The chain only moves forward and a used chain key is dropped, so compromising the
 * current chain key reveals nothing about earlier message keys (forward secrecy).
 */
import { CryptoError } from '../errors.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { MESSAGE_KEY_INPUT, NEXT_CHAIN_KEY_INPUT } from './labels.js';
import { MessageKey } from './message-key.js';
import { redactSecrets } from './redact.js';

/** Message numbers are u32 on the wire; a chain never reaches this in practice. */
export const MAX_CHAIN_INDEX = 0xffff_ffff;

export class ChainKey {
  readonly #key: Uint8Array;
  /** The index of the message key this chain key produces next. */
  readonly index: number;

  constructor(key: Uint8Array, index: number) {
    this.#key = key;
    this.index = index;
  }

  messageKey(backend: CryptoBackend): MessageKey {
    return new MessageKey(backend.hmacSha256(this.#key, MESSAGE_KEY_INPUT), this.index);
  }

  next(backend: CryptoBackend): ChainKey {
    if (this.index >= MAX_CHAIN_INDEX) throw new CryptoError('INVALID_STATE', 'chain exhausted: message number would overflow u32');
    return new ChainKey(backend.hmacSha256(this.#key, NEXT_CHAIN_KEY_INPUT), this.index + 1);
  }

  /** For the state codecs only. */
  exportBytes(): Uint8Array {
    return this.#key;
  }

  /** Overwrites the key with zeros once it is replaced (forward secrecy in memory). */
  wipe(): void {
    this.#key.fill(0);
  }
}
redactSecrets(ChainKey, 'ChainKey');
