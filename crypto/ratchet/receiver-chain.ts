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
  // Chain keys passed over are wiped as soon as the next is derived; the input stays
  // intact (the caller commits only if the message authenticates).
  const step = (): void => {
    const next = ck.next(backend);
    if (ck !== chainKey) ck.wipe();
    ck = next;
  };
  while (ck.index < index) {
    skipped.push(ck.messageKey(backend));
    step();
  }
  if (!takeTarget) return { skipped, messageKey: undefined, next: ck };
  const messageKey = ck.messageKey(backend);
  step();
  return { skipped, messageKey, next: ck };
}

/** Wipes what an advance derived, when its message did not authenticate. */
export function discardAdvance(a: ChainAdvance, input: ChainKey): void {
  for (const k of a.skipped) k.wipe();
  a.messageKey?.wipe();
  if (a.next !== input) a.next.wipe();
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
