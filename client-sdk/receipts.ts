/**
 * Delivery receipts, both ways.
 *
 * As a recipient: every envelope the inbox processes (except receipts themselves and
 * envelopes from no verified device) leaves a receipt entry in the store, in the same
 * transaction as the message. Entries are signed in batches — one JWS per sender device
 * per flush — and sent back to that device over the pairwise session, like any payload
 * (the outbox keeps them until the relay stored them). With the `log: 'all'` policy each
 * signed receipt is also queued for the relay's transparency log.
 *
 * As a sender: when the relay stored an envelope, one "awaited" record per recipient
 * device keeps the SHA-256 of the exact ciphertext sent to it and a deadline. A receipt
 * that comes back is verified with the recipient device's identity key (from its user's
 * verified device list); each entry is matched to its awaited record: a different hash
 * is TAMPERED, the recipient's flags are raised here too, and the record is done. A
 * record whose deadline passes is MISSING_RECEIPT. Receipts are kept (NS.receipts) so
 * that the application can show them to a third party.
 */
import { decodeBase64url, encodeBase64url } from '../protocol/base64url.js';
import type { IdentityKey } from '../crypto/identity/identity-key.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { EvidenceError } from '../crypto/evidence/errors.js';
import { type ReceiptEntry, type ReceiptFlag, MAX_RECEIPT_ENTRIES, verifyReceipt } from '../crypto/evidence/receipt.js';
import type { Flag, FlagCode, FlagQueue } from './flags.js';
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

export interface ReceiptPolicy {
  /** Sign and send receipts for what this device receives (default true). */
  readonly send?: boolean | undefined;
  /** Expect receipts for what this device sends: keep each ciphertext's hash until its
   * receipt comes, and raise MISSING_RECEIPT past the deadline (default true). */
  readonly expect?: boolean | undefined;
  /** Submit receipts to the relay's log: 'all' this device signs or gets back, or only
   * those for messages sent with `logReceipt` ('requested', the default). */
  readonly log?: 'all' | 'requested' | undefined;
  /** A receipt not back within this after the relay stored the envelope is MISSING_RECEIPT (ms, default 24 h;
   * a recipient offline that long causes it too, so set it to what your recipients' availability allows). */
  readonly deadlineMs?: number | undefined;
  /** Delivery slower than this (sender's clock to ours) is LATE (ms, default 10 min). */
  readonly lateAfterMs?: number | undefined;
  /** A sender clock ahead of ours by more than this is CLOCK_SKEW (ms, default 2 min). */
  readonly clockSkewMs?: number | undefined;
  /** A hole in a sequence not filled or announced as expired within this is a GAP (ms, default 30 s). */
  readonly gapWindowMs?: number | undefined;
  /** Entries wait at most this long to be signed together (ms, default 1,000). */
  readonly flushDelayMs?: number | undefined;
}

export type ResolvedReceiptPolicy = Required<{ [K in keyof ReceiptPolicy]: Exclude<ReceiptPolicy[K], undefined> }>;

export const RECEIPT_DEFAULTS: ResolvedReceiptPolicy = {
  send: true,
  expect: true,
  log: 'requested',
  deadlineMs: 24 * 3600_000,
  lateAfterMs: 10 * 60_000,
  clockSkewMs: 2 * 60_000,
  gapWindowMs: 30_000,
  flushDelayMs: 1_000,
};

/** Longest any of the policy's durations may be (30 days). */
const MAX_POLICY_MS = 30 * 24 * 3600_000;

export function resolveReceiptPolicy(p: ReceiptPolicy | undefined, invalid: (detail: string) => Error): ResolvedReceiptPolicy {
  const out: Record<string, unknown> = { ...RECEIPT_DEFAULTS };
  if (p === undefined) return RECEIPT_DEFAULTS;
  if (typeof p !== 'object' || p === null) throw invalid('receipts must be an object');
  for (const [k, v] of Object.entries(p)) {
    if (v === undefined) continue;
    if (!(k in RECEIPT_DEFAULTS)) throw invalid(`receipts.${k} is not a receipt policy`);
    if (k === 'send' || k === 'expect') {
      if (typeof v !== 'boolean') throw invalid(`receipts.${k} is a boolean`);
    } else if (k === 'log') {
      if (v !== 'all' && v !== 'requested') throw invalid('receipts.log is "all" or "requested"');
    } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > MAX_POLICY_MS) {
      throw invalid(`receipts.${k} is a number of ms, 0..${MAX_POLICY_MS}`);
    }
    out[k] = v;
  }
  return out as ResolvedReceiptPolicy;
}

/** What the sender keeps until the recipient device's receipt is back. */
export interface AwaitedRecord {
  readonly v: 1;
  readonly recipient: string;
  readonly deviceId: string;
  readonly messageId: Uint8Array;
  readonly sha256: Uint8Array;
  readonly storedAt: number;
  readonly deadline: number;
  readonly log: boolean;
  /** MISSING_RECEIPT was raised: kept (until `keepUntil`) so that a late receipt is still checked. */
  readonly missing?: boolean | undefined;
  readonly keepUntil?: number | undefined;
}

/** A receipt entry waiting to be signed (recipient side). */
interface PendingEntry {
  readonly v: 1;
  readonly entry: ReceiptEntry;
}

/** A verified receipt entry about an envelope we sent, as the application sees it. */
export interface ReceiptInfo {
  readonly envelopeId: string;
  /** The message it carried, when we still knew (absent for a receipt after its deadline). */
  readonly messageId: string | undefined;
  readonly recipient: { readonly userId: string; readonly deviceId: string };
  readonly disposition: 'processed' | 'rejected';
  readonly reason: string | undefined;
  /** The recipient's flags, plus TAMPERED when the hash differs from what we sent. */
  readonly flags: readonly string[];
  /** Whether the ciphertext hash matches what this device sent. */
  readonly intact: boolean | undefined;
  /** It came after MISSING_RECEIPT was raised for it. */
  readonly late: boolean;
  readonly entry: ReceiptEntry;
  /** The signed receipt (one JWS may cover several entries). */
  readonly jws: string;
}

interface StoredReceipt {
  readonly v: 1;
  readonly recipient: { readonly userId: string; readonly deviceId: string };
  readonly late: boolean;
  readonly jwsKey: string;
  readonly index: number;
  /** The mailbox sequence the entry names (absent in records of earlier versions). */
  readonly seq?: number | undefined;
  readonly messageId: Uint8Array | undefined;
  readonly intact: boolean | undefined;
  readonly at: number;
}

/** Flags raised per receipt for entries about envelopes this device did not send under that id. */
const MAX_UNMATCHED_FLAGS = 8;

/** How long past its last possible delivery an awaited record is kept after MISSING_RECEIPT. */
const TOMBSTONE_SLACK_MS = 24 * 3600_000;

/** Receipt entries kept for what this device sent (the oldest go first beyond it). */
export const MAX_KEPT_RECEIPTS = 100_000;

const awaitedKey = (envelopeId: string, deviceId: string) => `a:${envelopeId}:${deviceId}`;
const receivedKey = (envelopeId: string, userId: string, deviceId: string) => `r:${envelopeId}:${userId} ${deviceId}`;
const pendingPrefix = (userId: string, deviceId: string) => `p:${userId} ${deviceId}:`;
export const LOG_QUEUE_PREFIX = 'l:';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class Receipts {
  /** Something may wait in the log queue (true at start: an earlier run may have left some). */
  logQueued = true;

  constructor(
    readonly policy: ResolvedReceiptPolicy,
    private readonly backend: CryptoBackend,
    private readonly flags: FlagQueue,
    private readonly userId: string,
    private readonly deviceId: string,
  ) {}

  sha256(bytes: Uint8Array): Uint8Array {
    return this.backend.sha256(bytes);
  }

  // -------------------------------------------------------------------------------
  // Sender side
  // -------------------------------------------------------------------------------

  /** The relay stored an envelope: await a receipt from each device it went to. */
  awaitReceipts(tx: StoreTx, e: { envelopeId: Uint8Array; recipient: string; messageId: Uint8Array; targets: ReadonlyArray<{ deviceId: string; payload: Uint8Array }>; log: boolean; ttlSeconds: number }, storedAt: number, now: number): void {
    const env = encodeBase64url(e.envelopeId);
    let last: { payload: Uint8Array; hash: Uint8Array } | undefined;
    for (const t of e.targets) {
      // A group message has one ciphertext for every device: hash it once.
      const hash = last !== undefined && last.payload === t.payload ? last.hash : this.backend.sha256(t.payload);
      last = { payload: t.payload, hash };
      const rec: AwaitedRecord = {
        v: 1,
        recipient: e.recipient,
        deviceId: t.deviceId,
        messageId: e.messageId,
        sha256: hash,
        storedAt,
        deadline: now + this.policy.deadlineMs,
        log: e.log || this.policy.log === 'all',
        // A receipt can come as long as the relay may deliver the envelope.
        keepUntil: now + Math.max(this.policy.deadlineMs, e.ttlSeconds * 1000) + TOMBSTONE_SLACK_MS,
      };
      tx.put(NS.receipts, awaitedKey(env, t.deviceId), encodeRecord(rec));
    }
  }

  /**
   * A receipt payload from `from` (the device that sent the envelope carrying it), whose
   * verified identity key is `key`. Verifies it, matches its entries, raises flags, keeps
   * it. Returns what to tell the application after the commit; throws EvidenceError when
   * it does not verify (the caller flags that).
   */
  async received(tx: StoreTx, jws: string, from: { userId: string; deviceId: string }, key: IdentityKey, now: number): Promise<ReceiptInfo[]> {
    const r = verifyReceipt(jws, key, this.backend);
    const rec = r.payload.recipient;
    if (rec.user !== from.userId || rec.device !== from.deviceId) {
      throw new EvidenceError('INVALID_RECEIPT', `receipt: signed for ${rec.user}/${rec.device}, but it came from ${from.userId}/${from.deviceId}`);
    }
    const jwsKey = `j:${encodeBase64url(this.backend.sha256(encoder.encode(jws)))}`;
    let keep = false;
    let log = false;
    let unmatched = 0;
    const out: ReceiptInfo[] = [];
    for (const [index, entry] of r.payload.entries.entries()) {
      if (entry.sender.user !== this.userId || entry.sender.device !== this.deviceId) continue; // about another device's envelope: not ours to check
      const rk = receivedKey(entry.envelopeId, rec.user, rec.device);
      const prior = await tx.get(NS.receiptsKept, rk);
      if (prior !== undefined) {
        // This device already reported the envelope. The same entry again says nothing new;
        // an entry for another delivery of it (the relay delivered it twice) brings the
        // recipient's flags about that delivery (DUPLICATE), with the receipt as evidence.
        const first = decodeRecord<StoredReceipt>(prior).seq;
        if (first === undefined || first === entry.seq) continue;
        for (const f of entry.flags) {
          this.#flag(tx, f, rec.user, rec.device, entry, now, `${rec.user}/${rec.device} reported ${f} for another delivery of envelope ${entry.envelopeId} (sequence ${entry.seq}, first at ${first}) in its signed receipt`, {
            envelopeId: entry.envelopeId,
            reportedBy: { userId: rec.user, deviceId: rec.device },
            entry,
            firstSeq: first,
            jws,
          });
        }
        continue;
      }
      const ak = awaitedKey(entry.envelopeId, rec.device);
      const raw = await tx.get(NS.receipts, ak);
      const awaited = raw === undefined ? undefined : decodeRecord<AwaitedRecord>(raw);
      // Only entries about envelopes this device sent to that device are kept and checked:
      // anything else (unknown ids, another user's) can neither push genuine receipts out of
      // the store nor flood the application. What the relay invented in our name (an old
      // ciphertext replayed under a new id) is still worth saying: REPLAY and DUPLICATE of
      // such entries are raised, at most MAX_UNMATCHED_FLAGS per receipt.
      if (awaited === undefined || awaited.recipient !== rec.user) {
        for (const f of entry.flags) {
          if ((f !== 'REPLAY' && f !== 'DUPLICATE') || unmatched >= MAX_UNMATCHED_FLAGS) continue;
          unmatched++;
          this.#flag(tx, f, rec.user, rec.device, entry, now, `${rec.user}/${rec.device} reported ${f} for envelope ${entry.envelopeId}, which this device did not send under that id (a copy of something it sent?), in its signed receipt`, {
            envelopeId: entry.envelopeId,
            reportedBy: { userId: rec.user, deviceId: rec.device },
            entry,
            jws,
          });
        }
        continue;
      }
      const intact = encodeBase64url(awaited.sha256) === entry.sha256;
      const late = awaited.missing === true;
      tx.delete(NS.receipts, ak);
      if (awaited.log) log = true;
      const flags: string[] = [...entry.flags];
      const evidence = { envelopeId: entry.envelopeId, reportedBy: { userId: rec.user, deviceId: rec.device }, entry, ...(late ? { afterDeadline: true } : {}) };
      if (!intact) {
        flags.push('TAMPERED');
        this.#flag(tx, 'TAMPERED', rec.user, rec.device, entry, now, `the recipient received other bytes than this device sent (SHA-256 ${entry.sha256}, sent ${encodeBase64url(awaited.sha256)})`, { ...evidence, sentSha256: encodeBase64url(awaited.sha256), receivedSha256: entry.sha256 });
      }
      for (const f of entry.flags) this.#flag(tx, f, rec.user, rec.device, entry, now, `${rec.user}/${rec.device} reported ${f} for envelope ${entry.envelopeId} in its signed receipt`, evidence);
      tx.put(NS.receiptsKept, rk, encodeRecord({ v: 1, recipient: { userId: rec.user, deviceId: rec.device }, late, jwsKey, index, seq: entry.seq, messageId: awaited.messageId, intact, at: now } satisfies StoredReceipt));
      keep = true;
      out.push({
        envelopeId: entry.envelopeId,
        messageId: encodeBase64url(awaited.messageId),
        recipient: { userId: rec.user, deviceId: rec.device },
        disposition: entry.disposition,
        reason: entry.reason,
        flags,
        intact,
        late,
        entry,
        jws,
      });
    }
    if (keep) tx.put(NS.receiptsKept, jwsKey, encoder.encode(jws));
    if (log || (keep && this.policy.log === 'all')) this.queueForLog(tx, jws);
    return out;
  }

  /**
   * Awaited receipts past their deadline: MISSING_RECEIPT each, once. The record stays (a
   * tombstone with the hash) until the envelope could no longer be delivered, so a late
   * receipt is still checked (TAMPERED cannot be hidden by holding receipts back).
   * Returns how many flags it raised.
   */
  async sweepMissing(tx: StoreTx, now: number): Promise<number> {
    let n = 0;
    for (const [k, raw] of await tx.list(NS.receipts, 'a:')) {
      const a = decodeRecord<AwaitedRecord>(raw);
      if (a.missing === true) {
        if ((a.keepUntil ?? 0) <= now) tx.delete(NS.receipts, k);
        continue;
      }
      if (a.deadline > now) continue;
      const envelopeId = k.slice(2, k.lastIndexOf(':'));
      this.flags.add(tx, {
        code: 'MISSING_RECEIPT',
        userId: a.recipient,
        deviceId: a.deviceId,
        envelopeId,
        at: now,
        detail: `no receipt from ${a.recipient}/${a.deviceId} for envelope ${envelopeId} within ${this.policy.deadlineMs} ms of the relay storing it`,
        evidence: { envelopeId, messageId: encodeBase64url(a.messageId), storedAt: a.storedAt, deadline: a.deadline, sha256: encodeBase64url(a.sha256) },
      });
      tx.put(NS.receipts, k, encodeRecord({ ...a, missing: true } satisfies AwaitedRecord));
      n++;
    }
    return n;
  }

  /** Receipts kept for envelopes this device sent (all, or for one envelope or message id). */
  async list(tx: StoreTx, filter?: { envelopeId?: string; messageId?: string }): Promise<ReceiptInfo[]> {
    const rows = await tx.list(NS.receiptsKept, filter?.envelopeId ? `r:${filter.envelopeId}:` : 'r:');
    const out: ReceiptInfo[] = [];
    const cache = new Map<string, string | undefined>();
    for (const [k, raw] of rows) {
      const s = decodeRecord<StoredReceipt>(raw);
      const messageId = s.messageId ? encodeBase64url(s.messageId) : undefined;
      if (filter?.messageId !== undefined && messageId !== filter.messageId) continue;
      if (!cache.has(s.jwsKey)) {
        const j = await tx.get(NS.receiptsKept, s.jwsKey);
        cache.set(s.jwsKey, j === undefined ? undefined : decoder.decode(j));
      }
      const jws = cache.get(s.jwsKey);
      if (jws === undefined) continue;
      // Kept receipts were verified when they came; here they are only read back.
      const entry = (JSON.parse(decoder.decode(decodeBase64url(jws.split('.')[1] as string) as Uint8Array)) as { entries: ReceiptEntry[] }).entries[s.index] as ReceiptEntry;
      out.push({ envelopeId: entry.envelopeId, messageId, recipient: s.recipient, disposition: entry.disposition, reason: entry.reason, flags: [...entry.flags, ...(s.intact === false ? ['TAMPERED'] : [])], intact: s.intact, late: s.late, entry, jws });
    }
    return out;
  }

  #flag(tx: StoreTx, code: FlagCode, userId: string, deviceId: string, entry: ReceiptEntry, now: number, detail: string, evidence: Record<string, unknown>): void {
    const flag: Flag = { code, userId, deviceId, envelopeId: entry.envelopeId, seq: entry.seq, at: now, detail, evidence };
    this.flags.add(tx, flag);
  }

  // -------------------------------------------------------------------------------
  // Recipient side
  // -------------------------------------------------------------------------------

  /** Keeps a receipt entry to sign with the next batch for its sender device. */
  addPending(tx: StoreTx, entry: ReceiptEntry): void {
    if (!this.policy.send && this.policy.log !== 'all') return;
    tx.put(NS.receiptsPending, `${pendingPrefix(entry.sender.user, entry.sender.device)}${String(entry.seq).padStart(16, '0')}:${entry.envelopeId}`, encodeRecord({ v: 1, entry } satisfies PendingEntry));
  }

  /**
   * Pending entries, grouped by sender user (a receipt goes to every device of that user,
   * since a SEND reaches all of a user's devices; each device takes its own entries), at
   * most MAX_RECEIPT_ENTRIES per group.
   */
  async pending(tx: StoreTx): Promise<Array<{ userId: string; keys: string[]; entries: ReceiptEntry[]; more: boolean }>> {
    const groups = new Map<string, { userId: string; keys: string[]; entries: ReceiptEntry[]; more: boolean; envelopes: Set<string> }>();
    for (const [k, raw] of await tx.list(NS.receiptsPending, 'p:')) {
      const userId = k.slice(2, k.indexOf(' ', 2));
      let g = groups.get(userId);
      if (g === undefined) {
        g = { userId, keys: [], entries: [], more: false, envelopes: new Set() };
        groups.set(userId, g);
      }
      // One entry per envelope in a receipt (a relay that delivered one twice gives two):
      // the second goes in the next receipt.
      const entry = decodeRecord<PendingEntry>(raw).entry;
      const envelope = `${entry.sender.device} ${entry.envelopeId}`;
      if (g.entries.length >= MAX_RECEIPT_ENTRIES || g.envelopes.has(envelope)) {
        g.more = true; // the next flush takes the rest
        continue;
      }
      g.envelopes.add(envelope);
      g.keys.push(k);
      g.entries.push(entry);
    }
    return [...groups.values()].map(({ userId, keys, entries, more }) => ({ userId, keys, entries, more }));
  }

  /** Forgets kept receipts older than `cutoff` (ms), and the oldest beyond MAX_KEPT_RECEIPTS. */
  async prune(tx: StoreTx, cutoff: number): Promise<void> {
    const live = new Set<string>();
    const rows = (await tx.list(NS.receiptsKept, 'r:')).map(([k, raw]) => ({ k, r: decodeRecord<StoredReceipt>(raw) })).sort((a, b) => a.r.at - b.r.at);
    const excess = rows.length - MAX_KEPT_RECEIPTS;
    rows.forEach(({ k, r }, i) => {
      if (r.at < cutoff || i < excess) tx.delete(NS.receiptsKept, k);
      else live.add(r.jwsKey);
    });
    for (const [k] of await tx.list(NS.receiptsKept, 'j:')) if (!live.has(k)) tx.delete(NS.receiptsKept, k);
  }

  /** Queues a signed receipt for the relay's log (once per receipt). */
  queueForLog(tx: StoreTx, jws: string): void {
    this.logQueued = true;
    tx.put(NS.receiptsLog, `${LOG_QUEUE_PREFIX}${encodeBase64url(this.backend.sha256(encoder.encode(jws)))}`, encoder.encode(jws));
  }
}

export type { ReceiptFlag };
