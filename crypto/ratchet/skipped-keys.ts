/**
 * Message keys of messages that have not arrived yet: the chain moved past them because
 * a later message arrived first. Keyed by (peer ratchet key, message number); each key
 * is deleted when used, so a second delivery of the same message finds nothing.
 *
 * Bounded by MAX_SKIPPED_KEYS_STORED across all chains: inserting beyond it evicts the
 * oldest entries first (FIFO, the Map's insertion order), on the reasoning that the
 * longest-missing messages are the likeliest never to come.
 */
import { MAX_SKIPPED_KEYS_STORED } from '../limits.js';
import type { MessageKey } from './message-key.js';
import type { RemoteRatchetKey } from './ratchet-key.js';
import { redactSecrets } from './redact.js';

export interface SkippedKey {
  readonly ratchetKey: RemoteRatchetKey;
  readonly messageKey: MessageKey;
}

function slot(ratchetKeyId: string, index: number): string {
  return `${ratchetKeyId}:${index}`;
}

export class SkippedKeys {
  readonly #keys = new Map<string, SkippedKey>();

  get size(): number {
    return this.#keys.size;
  }

  get(ratchetKey: RemoteRatchetKey, index: number): MessageKey | undefined {
    if (this.#keys.size === 0) return undefined;
    return this.#keys.get(slot(ratchetKey.id, index))?.messageKey;
  }

  /** Removes a key once used, overwriting it. */
  delete(ratchetKey: RemoteRatchetKey, index: number): void {
    const k = slot(ratchetKey.id, index);
    this.#keys.get(k)?.messageKey.wipe();
    this.#keys.delete(k);
  }

  /** Adds keys in order, then evicts the oldest beyond the limit. */
  add(ratchetKey: RemoteRatchetKey, keys: readonly MessageKey[]): void {
    for (const messageKey of keys) this.#keys.set(slot(ratchetKey.id, messageKey.index), { ratchetKey, messageKey });
    let excess = this.#keys.size - MAX_SKIPPED_KEYS_STORED;
    if (excess <= 0) return;
    for (const [k, v] of this.#keys) {
      if (excess-- <= 0) break;
      v.messageKey.wipe();
      this.#keys.delete(k);
    }
  }

  /** Wipes and drops every key. */
  clear(): void {
    for (const v of this.#keys.values()) v.messageKey.wipe();
    this.#keys.clear();
  }

  /** Oldest first, for the session codec. */
  entries(): IterableIterator<SkippedKey> {
    return this.#keys.values();
  }
}
redactSecrets(SkippedKeys, 'SkippedKeys');
