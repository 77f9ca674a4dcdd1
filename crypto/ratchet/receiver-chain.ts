/**
 * One receiving chain: the peer's ratchet public key and the chain key for the next
 * message number we have not seen on that chain. Message numbers below `chainKey.index`
 * have been used or had their keys moved to the skipped-key store.
 */
import { CryptoError } from '../errors.js';
import { MAX_SKIPPED_KEYS_PER_MESSAGE } from '../limits.js';
import type { CryptoBackend } from '../primitives/backend.js';
import type { ChainKey } from './chain-key.js';
import type { MessageKey } from './message-key.js';
import type { RemoteRatchetKey } from './ratchet-key.js';
import { redactSecrets } from './redact.js';

/** What reaching message number `index` on a chain would take; nothing is changed yet. */
export interface ChainAdvance {
  /** Keys of the message numbers passed over, in order (for the skipped-key store). */
  readonly skipped: MessageKey[];
  /** The key for `index` itself; undefined when only skipping (previous-chain catch-up). */
  readonly messageKey: MessageKey | undefined;
  /** The chain key to store once the message has been authenticated. */
  readonly next: ChainKey;
}

/**
 * Walks `chainKey` forward to `index` (exclusive when `takeTarget` is false) without
 * touching any state. The jump is bounded before any work is done: a forged message
 * number costs at most MAX_SKIPPED_KEYS_PER_MESSAGE HMAC pairs.
 */
export function advanceChain(backend: CryptoBackend, chainKey: ChainKey, index: number, takeTarget: boolean): ChainAdvance {
  if (index - chainKey.index > MAX_SKIPPED_KEYS_PER_MESSAGE) {
    throw new CryptoError('TOO_MANY_SKIPPED', `message is ${index - chainKey.index} ahead of its chain`);
  }
  const skipped: MessageKey[] = [];
  let ck = chainKey;
  while (ck.index < index) {
    skipped.push(ck.messageKey(backend));
    ck = ck.next(backend);
  }
  if (!takeTarget) return { skipped, messageKey: undefined, next: ck };
  return { skipped, messageKey: ck.messageKey(backend), next: ck.next(backend) };
}

export class ReceiverChain {
  readonly ratchetKey: RemoteRatchetKey;
  /** Replaced (never mutated) when a message on this chain has been authenticated. */
  chainKey: ChainKey;

  constructor(ratchetKey: RemoteRatchetKey, chainKey: ChainKey) {
    this.ratchetKey = ratchetKey;
    this.chainKey = chainKey;
  }
}
redactSecrets(ReceiverChain, 'ReceiverChain');
