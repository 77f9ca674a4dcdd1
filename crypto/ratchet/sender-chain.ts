/**
 * Our sending chain: the ratchet key pair we currently advertise in headers and the chain
 * key that produces our next message key. Replaced by a new one at each DH ratchet step.
 */
import type { ChainKey } from './chain-key.js';
import type { RatchetKeyPair } from './ratchet-key.js';
import { redactSecrets } from './redact.js';

export class SenderChain {
  readonly ratchetKey: RatchetKeyPair;
  /** Replaced (never mutated) after each message that was sealed successfully. */
  chainKey: ChainKey;

  constructor(ratchetKey: RatchetKeyPair, chainKey: ChainKey) {
    this.ratchetKey = ratchetKey;
    this.chainKey = chainKey;
  }
}
redactSecrets(SenderChain, 'SenderChain');
