/**
 * Flags: what the client noticed that the application should know about, each with its
 * evidence. Every flag is stored before the envelope or list change that raised it is
 * acknowledged, and offered to the application exactly once (the 'flag' event), also
 * across a restart. docs/SDK.md explains each code.
 */
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

export const FLAG_CODES = [
  /** A user's account root changed (the device list restarted from a new root). */
  'IDENTITY_CHANGED',
  /** A device was added to a user's list (also one's own). */
  'DEVICE_ADDED',
  /** A device was revoked from a user's list. */
  'DEVICE_REMOVED',
  /** The relay served a device list or a bundle that does not verify against what was pinned. */
  'DEVICE_LIST_INVALID',
  /** An envelope could not be decrypted (tampered, a broken session, or not meant for us). */
  'DECRYPT_FAILED',
  /** An envelope from a device that is not in its user's verified list. */
  'UNKNOWN_SENDER',
  /** An envelope that is not a valid message at all (truncated, unknown version, oversized). */
  'MALFORMED_ENVELOPE',
  /** The relay announced envelopes of this device's mailbox as expired (their TTL passed
   * before delivery): they will never arrive. The evidence holds the sequence range. */
  'ENVELOPES_EXPIRED',
  /** The same envelope was delivered again at another mailbox sequence, or a mailbox
   * sequence was used twice. */
  'DUPLICATE',
  /** A message number of this conversation came again (an old message re-sent), or the
   * ratchet refused a message key already used. */
  'REPLAY',
  /** A hole in a sender's message numbers or in the mailbox sequence, not filled and not
   * announced as expired within the gap window. The evidence holds the missing range. */
  'GAP',
  /** A message that filled a hole: it came after later ones. */
  'REORDERED',
  /** Delivered later than the policy allows after it was sent. */
  'LATE',
  /** The sender's clock was ahead of ours beyond the tolerance. */
  'CLOCK_SKEW',
  /** Delivered after its expiry. */
  'EXPIRED',
  /** A signed event or a receipt whose signature does not verify with its device's key. */
  'BAD_SIGNATURE',
  /** A recipient's signed receipt names other ciphertext bytes than this device sent. */
  'TAMPERED',
  /** No receipt came back from a recipient device within the deadline. */
  'MISSING_RECEIPT',
  /** A signed event reused an idempotency key (source, id) with different content. */
  'EVENT_ID_REUSED',
  /** A signed event whose previous-event hash does not match the event before it from
   * that device and source (the chain forked). */
  'EVENT_CHAIN_BROKEN',
] as const;

export type FlagCode = (typeof FLAG_CODES)[number];

export interface Flag {
  readonly code: FlagCode;
  /** The user the flag is about. */
  readonly userId: string;
  readonly deviceId?: string | undefined;
  /** For an envelope: its id (base64url) and mailbox sequence. */
  readonly envelopeId?: string | undefined;
  readonly seq?: number | undefined;
  /** When the client raised it (ms since the epoch). */
  readonly at: number;
  /** A human-readable explanation. */
  readonly detail: string;
  /** What shows it (fingerprints, sequences, ids). */
  readonly evidence?: Readonly<Record<string, unknown>> | undefined;
}

interface FlagRecord {
  v: 1;
  flag: Flag;
}

/** Flags are kept in the inbox namespace under "f:" + a counter, until offered. */
export class FlagQueue {
  #counter = 0;

  /** `added` is told of every flag written (to offer it once its transaction commits). */
  constructor(
    private readonly next: () => number,
    private readonly added: () => void = () => undefined,
  ) {}

  add(tx: StoreTx, flag: Flag): void {
    // Time, then a counter that never wraps in this run: keys are unique (a later flag
    // never overwrites an earlier one) and sort in the order the flags were raised.
    tx.put(NS.inbox, `f:${String(this.next()).padStart(16, '0')}:${String(this.#counter++).padStart(12, '0')}`, encodeRecord({ v: 1, flag } satisfies FlagRecord));
    this.added();
  }

  static async pending(tx: StoreTx): Promise<Array<{ key: string; flag: Flag }>> {
    return (await tx.list(NS.inbox, 'f:')).map(([key, raw]) => ({ key, flag: decodeRecord<FlagRecord>(raw).flag }));
  }
}
