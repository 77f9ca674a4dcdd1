/**
 * What a recipient device notices about the envelopes it receives, before anything is
 * offered or acknowledged: the per-sender message numbers of each conversation (holes,
 * numbers that come back, numbers that come late), the mailbox sequence (holes the relay
 * did not announce as expired), delivery delay, the sender's clock, and envelopes
 * delivered past their expiry. Everything is kept in the store, in the inbox's
 * transaction, so a restart neither forgets a hole nor raises a flag twice.
 *
 * A hole is not flagged at once: the missing envelope may still arrive (REORDERED) or be
 * announced as expired. Only a hole still open `gapWindowMs` after it was seen is a GAP.
 */
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';
import type { ReceiptFlag } from '../crypto/evidence/receipt.js';

/** Holes remembered per conversation (and for the mailbox); beyond it the oldest is flagged at once. */
export const MAX_TRACKED_HOLES = 64;
/** Expiry announcements remembered (to explain holes). */
const MAX_EXPIRED_RANGES = 64;

export interface AnomalyPolicy {
  /** A message received more than this after it was sent is LATE (ms). */
  readonly lateAfterMs: number;
  /** A message sent more than this in our future is CLOCK_SKEW (ms). */
  readonly clockSkewMs: number;
  /** A hole not filled or explained within this is a GAP (ms). */
  readonly gapWindowMs: number;
}

/** A hole: numbers [from, to] missing, seen at `at`, between mailbox sequences `afterSeq` and `beforeSeq`. */
interface Hole {
  from: number;
  to: number;
  at: number;
  afterSeq: number;
  beforeSeq: number;
  /** Flagged as a GAP already: kept, so that what fills it late is REORDERED (not a
   * REPLAY), but never flagged again. */
  reported?: boolean;
}

interface ConversationState {
  v: 1;
  /** The highest message number seen, and the mailbox sequence it came at. */
  high: number;
  highSeq: number;
  holes: Hole[];
  /** The sender device's identity key (hex fingerprint) when last seen. */
  key: string;
  /** Group conversations: holes are expected (membership changes), never a GAP. */
  group: boolean;
}

interface MailboxState {
  v: 1;
  last: number;
  holes: Hole[];
  expired: Array<{ from: number; to: number; at: number }>;
}

export interface GapFinding {
  readonly kind: 'conversation' | 'mailbox';
  readonly senderUserId?: string | undefined;
  readonly senderDeviceId?: string | undefined;
  readonly conversation?: string | undefined;
  readonly from: number;
  readonly to: number;
  readonly seenAt: number;
  readonly afterSeq: number;
  readonly beforeSeq: number;
}

const MAILBOX_KEY = 'mailbox';
const conversationKey = (senderUserId: string, senderDeviceId: string, conversation: string) => `s:${senderUserId} ${senderDeviceId} ${conversation}`;
/** Index of conversations with open holes (so the timeout check reads only those). */
const holeIndexKey = (stateKey: string) => `h:${stateKey}`;

function explained(h: Hole, expired: MailboxState['expired']): boolean {
  return expired.some((e) => e.from < h.beforeSeq && e.to > h.afterSeq);
}

export class Anomalies {
  constructor(private readonly policy: AnomalyPolicy) {}

  /** The mailbox sequence `seq` arrived (a DELIVER). Returns flags for this envelope. */
  async mailboxSeq(tx: StoreTx, seq: number, now: number): Promise<ReceiptFlag[]> {
    const raw = await tx.get(NS.conversations, MAILBOX_KEY);
    const s: MailboxState = raw ? decodeRecord<MailboxState>(raw) : { v: 1, last: seq - 1, holes: [], expired: [] };
    const flags: ReceiptFlag[] = [];
    if (seq > s.last + 1) {
      this.#addHole(s.holes, { from: s.last + 1, to: seq - 1, at: now, afterSeq: s.last, beforeSeq: seq });
      s.last = seq;
    } else if (seq === s.last + 1) {
      s.last = seq;
    } else {
      // Below what we had: it fills a hole (late), or the relay used the sequence twice.
      flags.push(fillHole(s.holes, seq) ? 'REORDERED' : 'DUPLICATE');
    }
    tx.put(NS.conversations, MAILBOX_KEY, encodeRecord(s));
    return flags;
  }

  /** The relay announced `from..to` as expired: they never come, and explain holes. */
  async mailboxExpired(tx: StoreTx, from: number, to: number, now: number): Promise<void> {
    const raw = await tx.get(NS.conversations, MAILBOX_KEY);
    const s: MailboxState = raw ? decodeRecord<MailboxState>(raw) : { v: 1, last: from - 1, holes: [], expired: [] };
    s.expired.push({ from, to, at: now });
    if (s.expired.length > MAX_EXPIRED_RANGES) s.expired.splice(0, s.expired.length - MAX_EXPIRED_RANGES);
    s.holes = s.holes.filter((h) => !(h.from >= from && h.to <= to));
    if (to > s.last) {
      if (from > s.last + 1) this.#addHole(s.holes, { from: s.last + 1, to: from - 1, at: now, afterSeq: s.last, beforeSeq: from });
      s.last = to;
    }
    tx.put(NS.conversations, MAILBOX_KEY, encodeRecord(s));
  }

  /**
   * A message decrypted: its number in its conversation, the sender's identity key, and
   * its times. Returns the flags for it.
   */
  async message(
    tx: StoreTx,
    m: {
      senderUserId: string;
      senderDeviceId: string;
      conversation: string;
      group: boolean;
      number: number | undefined;
      seq: number;
      senderKey: string;
      sentAt: number;
      storedAt: number;
      expiresAt: number;
      /** When this device's current connection came up (ms). */
      connectedAt: number;
      now: number;
    },
  ): Promise<ReceiptFlag[]> {
    const flags: ReceiptFlag[] = [];
    // The delivery leg only: from when the relay could have delivered it (stored, and this
    // device connected) to now. Time the recipient spent offline is not lateness.
    if (m.now - Math.max(m.storedAt, m.connectedAt) > this.policy.lateAfterMs) flags.push('LATE');
    if (m.sentAt - m.now > this.policy.clockSkewMs) flags.push('CLOCK_SKEW');
    // The relay's clock sets the expiry: allow it the same skew as a sender's.
    if (m.expiresAt + this.policy.clockSkewMs < m.now) flags.push('EXPIRED');
    const key = conversationKey(m.senderUserId, m.senderDeviceId, m.conversation);
    const raw = await tx.get(NS.conversations, key);
    let s = raw ? decodeRecord<ConversationState>(raw) : undefined;
    if (s !== undefined && s.key !== m.senderKey) flags.push('IDENTITY_CHANGED');
    if (m.number === undefined) {
      if (s !== undefined && s.key !== m.senderKey) {
        s.key = m.senderKey;
        tx.put(NS.conversations, key, encodeRecord(s));
      }
      return flags;
    }
    const hadHoles = (s?.holes.length ?? 0) > 0;
    if (s === undefined) {
      s = { v: 1, high: m.number, highSeq: m.seq, holes: [], key: m.senderKey, group: m.group };
    } else if (m.number === s.high + 1) {
      s.high = m.number;
      s.highSeq = m.seq;
    } else if (m.number > s.high + 1) {
      if (!s.group) this.#addHole(s.holes, { from: s.high + 1, to: m.number - 1, at: m.now, afterSeq: s.highSeq, beforeSeq: m.seq });
      s.high = m.number;
      s.highSeq = m.seq;
    } else {
      flags.push(fillHole(s.holes, m.number) ? 'REORDERED' : 'REPLAY');
    }
    s.key = m.senderKey;
    tx.put(NS.conversations, key, encodeRecord(s));
    if (s.holes.some((h) => h.reported !== true)) tx.put(NS.conversations, holeIndexKey(key), new Uint8Array(0));
    else if (hadHoles) tx.delete(NS.conversations, holeIndexKey(key));
    return flags;
  }

  /**
   * Holes older than the window: a GAP each, unless an expiry announcement explains it
   * (then it is simply forgotten). Also holes pushed out by MAX_TRACKED_HOLES.
   */
  async dueGaps(tx: StoreTx, now: number): Promise<GapFinding[]> {
    const out: GapFinding[] = [];
    const mraw = await tx.get(NS.conversations, MAILBOX_KEY);
    const mailbox = mraw ? decodeRecord<MailboxState>(mraw) : undefined;
    const expired = mailbox?.expired ?? [];
    const due = (h: Hole) => h.reported !== true && now - h.at >= this.policy.gapWindowMs;
    /** Flags what is due (marking it reported), forgets what an expiry explains; whether anything changed. */
    const settle = (holes: Hole[], report: (h: Hole) => void): { holes: Hole[]; changed: boolean } => {
      let changed = false;
      const keep: Hole[] = [];
      for (const h of holes) {
        if (h.reported !== true && explained(h, expired)) {
          changed = true;
          continue;
        }
        if (due(h)) {
          report(h);
          h.reported = true;
          changed = true;
        }
        keep.push(h);
      }
      return { holes: keep, changed };
    };
    if (mailbox && mailbox.holes.length > 0) {
      const r = settle(mailbox.holes, (h) => out.push({ kind: 'mailbox', from: h.from, to: h.to, seenAt: h.at, afterSeq: h.afterSeq, beforeSeq: h.beforeSeq }));
      if (r.changed) {
        mailbox.holes = r.holes;
        tx.put(NS.conversations, MAILBOX_KEY, encodeRecord(mailbox));
      }
    }
    for (const [indexKey] of await tx.list(NS.conversations, 'h:')) {
      const key = indexKey.slice(2);
      const raw = await tx.get(NS.conversations, key);
      if (raw === undefined) {
        tx.delete(NS.conversations, indexKey);
        continue;
      }
      const s = decodeRecord<ConversationState>(raw);
      const [senderUserId, senderDeviceId, conversation] = key.slice(2).split(' ') as [string, string, string];
      const r = settle(s.holes, (h) => out.push({ kind: 'conversation', senderUserId, senderDeviceId, conversation, from: h.from, to: h.to, seenAt: h.at, afterSeq: h.afterSeq, beforeSeq: h.beforeSeq }));
      if (r.changed) {
        s.holes = r.holes;
        tx.put(NS.conversations, key, encodeRecord(s));
      }
      // Only reported holes left: nothing more to check for this conversation.
      if (s.holes.every((h) => h.reported === true)) tx.delete(NS.conversations, indexKey);
    }
    return out;
  }

  /**
   * Adds a hole. Beyond MAX_TRACKED_HOLES the two oldest are merged into one range that is
   * due at once: the record stays bounded whatever a relay does.
   */
  #addHole(holes: Hole[], h: Hole): void {
    holes.push(h);
    while (holes.length > MAX_TRACKED_HOLES) {
      const [a, b] = holes as [Hole, Hole];
      holes.splice(0, 2, { from: a.from, to: b.to, at: 0, afterSeq: a.afterSeq, beforeSeq: b.beforeSeq, reported: a.reported === true && b.reported === true });
    }
  }
}

/** Removes `n` from the holes it falls in (splitting a range); whether it was missing. */
function fillHole(holes: Hole[], n: number): boolean {
  const i = holes.findIndex((h) => h.from <= n && n <= h.to);
  if (i < 0) return false;
  const h = holes[i] as Hole;
  const parts: Hole[] = [];
  if (h.from < n) parts.push({ ...h, to: n - 1 });
  if (n < h.to) parts.push({ ...h, from: n + 1 });
  holes.splice(i, 1, ...parts);
  return true;
}
