/**
 * Mailbox persistence: each device's mailbox is an append-only log with a consumer
 * cursor (migrations/0011). Written against the Database contract, so identical on
 * PostgreSQL and PGlite.
 *
 * - SENDs are group-committed: a batch is one call of hermetic_store_sends (one
 *   statement, so one implicit transaction and one round trip), encoded by send-batch.ts.
 *   It answers resends from the SEND's first envelope row (the idempotency record lives
 *   in the row), locks the recipients' mailbox rows in key order, checks the device
 *   lists and quotas, and appends one row per envelope to the current time partition,
 *   all or nothing.
 * - An ACK moves the mailbox's cursor; nothing is deleted.
 * - Retirement drops whole partitions once they are older than the retirement age,
 *   carrying their unacknowledged, unexpired entries forward first.
 */
import crypto from 'node:crypto';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import { ProtocolError } from '../../protocol/errors.js';
import { type Database, type SqlExecutor, sqlState } from '../storage/database.js';
import {
  DEFAULT_MAILBOX_MAX_BYTES,
  DEFAULT_MAILBOX_MAX_ENVELOPES,
  DEFAULT_RECEIPT_WINDOW_MS,
  DEFAULT_RETIREMENT_AGE_MS,
  DRAIN_PASS_BUDGET_MS,
  MAX_CARRIED_BYTES_PER_STEP,
  MAX_CARRIED_PER_STEP,
  MAX_CLOCK_SKEW_MS,
  MAX_LOCK_HOLDERS_REPORTED,
  PARTITION_LOCK_TIMEOUT_MS,
  PARTITIONS_AHEAD,
  PARTITIONS_PER_RETIREMENT_AGE,
} from '../limits.js';
import { type BatchSend, STORE_SENDS_SQL, type StoreRow, decodeStoreRow, encodeSendBatch, storeSendsArgs } from './send-batch.js';
import { ENVELOPE_ID_BYTES } from '../../protocol/limits.js';
import { MAILBOX_CHANNEL } from '../fleet/notice.js';
import { mailboxKey } from './key.js';

export type SendItem = BatchSend;

export interface StoredTarget {
  readonly deviceId: string;
  readonly seq: number;
}

export type SendResult =
  | { readonly ok: true; readonly duplicate: boolean; readonly stored: readonly StoredTarget[]; readonly storedAtMs: number; readonly expiresAtMs: number }
  | { readonly ok: false; readonly error: ProtocolError };

/** A committed envelope: what DELIVER carries, plus the mailbox it is in. */
export interface StoredEnvelope extends Omit<DeliverFrame, 'type'> {
  readonly userId: string;
  readonly deviceId: string;
  /** mailboxKey(userId, deviceId). */
  readonly mailbox: string;
}

export interface MailboxPosition {
  /** Highest sequence assigned (0 when none). */
  readonly tail: number;
  /** Highest sequence acknowledged. */
  readonly acked: number;
}

/** SQLSTATEs after which a batch is written again from the start, nothing of it having
 * been written: a unique violation (a concurrent batch stored one of these envelope ids
 * first: the retry answers it as a resend), and PostgreSQL's deadlock and serialization
 * failures, which should not happen (locks are taken in key order) but are safe to
 * retry. */
const RETRYABLE = new Set(['23505', '40P01', '40001']);
/** No partition covers the batch's time (the clock moved past the partitions made
 * ahead): they are made, and the batch is written again. */
const NO_PARTITION = '23514';
const MAX_BATCH_RETRIES = 3;

/** Mixes the hash of an envelope id; per process and unknown to clients, so that ids
 * chosen to collide (or merely sharing a prefix, as counters and time-ordered ids do)
 * do not make finding repeats quadratic. */
const ID_HASH_SEED = crypto.randomBytes(4).readUInt32LE(0) | 1;

function word(id: Uint8Array, at: number): number {
  return ((id[at] as number) << 24) | ((id[at + 1] as number) << 16) | ((id[at + 2] as number) << 8) | (id[at + 3] as number);
}

/** A 32-bit hash of all 16 bytes of an envelope id, as a number: no key string per SEND.
 * SENDs with equal hashes are compared whole (sameSend). */
function idHash(id: Uint8Array): number {
  let h = ID_HASH_SEED;
  for (let at = 0; at < ENVELOPE_ID_BYTES; at += 4) {
    h = Math.imul(h ^ word(id, at), 0x9e37_79b1);
    h ^= h >>> 15;
  }
  return h;
}

/** The same SEND as far as idempotency goes: the same sending device and envelope id. */
function sameSend(a: SendItem, b: SendItem): boolean {
  if (a.senderUserId !== b.senderUserId || a.senderDeviceId !== b.senderDeviceId) return false;
  for (let i = 0; i < ENVELOPE_ID_BYTES; i++) if (a.envelopeId[i] !== b.envelopeId[i]) return false;
  return true;
}

/**
 * The SENDs of a batch that are first with their sending device and envelope id, and
 * each later one with the first it repeats.
 */
function findRepeats(items: readonly SendItem[]): { firsts: number[]; repeats: Array<[number, number]> } {
  const latest = new Map<number, number>();
  /** The previous SEND with the same id hash (-1: none), and each SEND's first. */
  const previous = new Int32Array(items.length);
  const firstOf = new Int32Array(items.length);
  const firsts: number[] = [];
  const repeats: Array<[number, number]> = [];
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    const p = idHash(it.envelopeId);
    let j = latest.get(p) ?? -1;
    previous[i] = j;
    latest.set(p, i);
    while (j >= 0 && !sameSend(items[j]!, it)) j = previous[j]!;
    if (j < 0) {
      firstOf[i] = i;
      firsts.push(i);
    } else {
      firstOf[i] = firstOf[j]!;
      repeats.push([i, firstOf[j]!]);
    }
  }
  return { firsts, repeats };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** What one recipient mailbox may hold (server/limits.ts, config HERMETIC_MAILBOX_*). */
/** Mailboxes and the tail the caller knows of each, as columns (index i is one mailbox):
 * the arrays go to the statement as they are. */
export interface TailsToCompare {
  readonly userIds: readonly string[];
  readonly deviceIds: readonly string[];
  readonly tails: readonly number[];
}

export interface MailboxQuota {
  /** Payload bytes of the envelopes stored and not yet acknowledged or retired. */
  readonly maxBytes: number;
  /** Envelopes stored and not yet acknowledged or retired. */
  readonly maxEnvelopes: number;
}

/** How long envelope partitions live (HERMETIC_RETIREMENT_AGE_S). */
export interface Retention {
  /** A partition is drained (its live entries carried forward) once its end is this
   * long ago. */
  readonly retirementAgeMs: number;
  /** A drained partition is dropped once it has been drained this long: receipts for
   * its acknowledged envelopes are confirmed until then (default
   * DEFAULT_RECEIPT_WINDOW_MS). */
  readonly receiptWindowMs?: number;
  /** Envelopes and payload bytes carried per drain step, each step its own transaction
   * (defaults MAX_CARRIED_PER_STEP, MAX_CARRIED_BYTES_PER_STEP). */
  readonly carryStep?: { readonly rows: number; readonly bytes: number };
  /** A pass starts no further drain step after this long (default DRAIN_PASS_BUDGET_MS). */
  readonly drainBudgetMs?: number;
}

export interface MailboxStoreOptions {
  readonly now?: () => number;
  readonly quota?: MailboxQuota;
  readonly retention?: Retention;
  /** NOTIFY channel for each commit's notice; null: none (announced on another bus). */
  readonly channel?: string | null;
  /** Partition upkeep refuses to run when `now` differs from the database's clock by
   * more than this (default MAX_CLOCK_SKEW_MS; Infinity: never, for injected clocks). */
  readonly maxClockSkewMs?: number;
}

/** This relay's clock is too far from the database's to make or retire partitions. */
export class ClockSkewError extends Error {
  constructor(readonly skewMs: number) {
    super(`the relay's clock is ${Math.round(skewMs / 1000)} s ${skewMs > 0 ? 'ahead of' : 'behind'} the database's (at most ${MAX_CLOCK_SKEW_MS / 1000} s allowed): envelope partitions are neither made nor retired until it is corrected`);
    this.name = 'ClockSkewError';
  }
}

/** What one retirement pass did. */
export interface Retired {
  /** Partitions dropped. */
  readonly partitions: number;
  /** Unacknowledged, unexpired entries carried forward. */
  readonly carried: number;
  /** Expired, unacknowledged entries dropped (and credited to their quota). */
  readonly expired: number;
  /**
   * Set when a drop could not get its table locks in time and was left for the next
   * pass: the partition, and the other sessions then holding a lock on it or on the
   * envelope table (by kind; no statement text).
   */
  readonly deferred?: { readonly partition: string; readonly holders: readonly LockHolder[] };
  /**
   * Set when a drain failed (a lost connection, a timeout): that partition and the newer
   * ones are drained by a later pass; the drops of this pass were still made.
   */
  readonly drainFailed?: { readonly partition: string; readonly error: Error };
  /** The pass's drain budget ran out with partitions left to drain: the next pass should
   * come soon (RETIREMENT_CATCH_UP_DELAY_MS), not a tick later. */
  readonly behind: boolean;
}

/** A session holding a lock that a partition drop waited for. */
export interface LockHolder {
  /** `client backend`, `autovacuum worker`, … (pg_stat_activity.backend_type). */
  readonly backendType: string;
  /** `active`, `idle in transaction`, … */
  readonly state: string | null;
  /** The table it holds the lock on, and the lock mode. */
  readonly relation: string;
  readonly mode: string;
  /** How long its transaction has been open, in milliseconds. */
  readonly xactMs: number | null;
}

function conflictError(): ProtocolError {
  return new ProtocolError('ENVELOPE_ID_CONFLICT', 'this envelope id was already used with different content; the original is kept');
}

export class MailboxStore {
  private readonly now: () => number;
  private readonly quota: MailboxQuota;
  readonly retirementAgeMs: number;
  readonly receiptWindowMs: number;
  private readonly carryStep: { readonly rows: number; readonly bytes: number };
  private readonly drainBudgetMs: number;
  /** Width of one time partition. */
  readonly partitionMs: number;
  private readonly channel: string | null;
  private readonly maxClockSkewMs: number;

  constructor(
    private readonly db: Database,
    private readonly nodeId: string,
    opts: MailboxStoreOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.quota = opts.quota ?? { maxBytes: DEFAULT_MAILBOX_MAX_BYTES, maxEnvelopes: DEFAULT_MAILBOX_MAX_ENVELOPES };
    this.retirementAgeMs = opts.retention?.retirementAgeMs ?? DEFAULT_RETIREMENT_AGE_MS;
    this.receiptWindowMs = opts.retention?.receiptWindowMs ?? DEFAULT_RECEIPT_WINDOW_MS;
    this.carryStep = opts.retention?.carryStep ?? { rows: MAX_CARRIED_PER_STEP, bytes: MAX_CARRIED_BYTES_PER_STEP };
    this.drainBudgetMs = opts.retention?.drainBudgetMs ?? DRAIN_PASS_BUDGET_MS;
    // hermetic_drain_partition takes the rows as int4 and refuses a step of less than one
    // entry: a step it refuses would fail every pass, and the log would never shrink.
    const { rows, bytes } = this.carryStep;
    if (!Number.isSafeInteger(rows) || rows < 1 || rows > 2 ** 31 - 1 || !Number.isSafeInteger(bytes) || bytes < 1) {
      throw new RangeError(`a drain step must carry at least one envelope and one byte (rows ${rows}, bytes ${bytes})`);
    }
    if (!(this.drainBudgetMs >= 0)) throw new RangeError(`the drain budget must be 0 ms or more (${this.drainBudgetMs})`);
    this.partitionMs = Math.max(1, Math.floor(this.retirementAgeMs / PARTITIONS_PER_RETIREMENT_AGE));
    this.channel = opts.channel === undefined ? MAILBOX_CHANNEL : opts.channel;
    this.maxClockSkewMs = opts.maxClockSkewMs ?? MAX_CLOCK_SKEW_MS;
  }

  /**
   * Writes a batch of SENDs in one statement (hermetic_store_sends: one round trip, one
   * commit); one result per item, in order. Callers run one batch at a time per set of
   * recipients, so SENDs pipelined on one connection are numbered in send order.
   */
  async storeBatch(items: readonly SendItem[]): Promise<{ results: SendResult[]; committed: StoredEnvelope[] }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.storeOnce(items);
      } catch (err) {
        const state = sqlState(err);
        if (attempt >= MAX_BATCH_RETRIES) throw err;
        if (state === NO_PARTITION) await this.ensurePartitions();
        else if (state === undefined || !RETRYABLE.has(state)) throw err;
      }
    }
  }

  private async storeOnce(items: readonly SendItem[]): Promise<{ results: SendResult[]; committed: StoredEnvelope[] }> {
    const results: Array<SendResult | undefined> = new Array(items.length);
    const nowMs = this.now();

    // Resends inside this very batch are answered from the first occurrence.
    const { firsts, repeats } = findRepeats(items);

    // The function stores all of the SENDs it is given or none: those it reports
    // (resends, conflicts, device-list mismatches, full mailboxes) are answered and the
    // rest go again.
    let pending = firsts;
    const committed: StoredEnvelope[] = [];
    while (pending.length > 0) {
      const batch = encodeSendBatch(items, pending, nowMs, this.db.packByteArrays);
      const rows = await this.db.query<StoreRow>(
        STORE_SENDS_SQL,
        storeSendsArgs({
          nowMs,
          channel: this.channel,
          node: this.nodeId,
          maxBytes: this.quota.maxBytes,
          maxEnvelopes: this.quota.maxEnvelopes,
          ...batch.params,
        }),
      );
      const refused = new Set<number>();
      const firstSeq: number[] = [];
      for (const row of rows) {
        const answer = decodeStoreRow(row);
        if (answer.kind === 'stored') {
          firstSeq[answer.box] = answer.firstSeq;
          continue;
        }
        const i = batch.itemAt.get(answer.item);
        if (i === undefined) throw new Error(`store answered for an unknown position ${answer.item}`);
        refused.add(i);
        results[i] = this.refusal(items[i]!, answer, nowMs);
      }
      if (refused.size > 0) {
        pending = pending.filter((i) => !refused.has(i));
        continue;
      }
      // Stored: each envelope's sequence is its mailbox's first plus its place there.
      const stored = new Map<number, StoredTarget[]>();
      for (const t of batch.targets) {
        const it = items[t.item]!;
        const first = firstSeq[t.box];
        if (first === undefined) throw new Error('a stored envelope\'s mailbox is missing from the answer');
        const seq = first + t.rank;
        committed.push({
          userId: it.recipientUserId,
          deviceId: t.deviceId,
          mailbox: batch.mailboxes[t.box]!,
          seq,
          envelopeId: it.envelopeId,
          senderUserId: it.senderUserId,
          senderDeviceId: it.senderDeviceId,
          storedAtMs: nowMs,
          expiresAtMs: nowMs + it.ttlSeconds * 1000,
          payload: t.payload,
        });
        const list = stored.get(t.item);
        if (list) list.push({ deviceId: t.deviceId, seq });
        else stored.set(t.item, [{ deviceId: t.deviceId, seq }]);
      }
      for (const i of pending) {
        results[i] = { ok: true, duplicate: false, stored: stored.get(i)!, storedAtMs: nowMs, expiresAtMs: nowMs + items[i]!.ttlSeconds * 1000 };
      }
      break;
    }

    for (const [i, first] of repeats) {
      const r = results[first]!;
      const same = sameBytes(items[i]!.contentHash, items[first]!.contentHash);
      results[i] = !r.ok ? r : same ? { ...r, duplicate: true } : { ok: false, error: conflictError() };
    }
    return { results: results as SendResult[], committed };
  }

  /** The answer to a SEND the store refused to write. */
  private refusal(it: SendItem, answer: Exclude<ReturnType<typeof decodeStoreRow>, { kind: 'stored' }>, nowMs: number): SendResult {
    switch (answer.kind) {
      case 'resend':
        return {
          ok: true,
          duplicate: true,
          stored: answer.devices.map((d, k) => ({ deviceId: d, seq: answer.seqs[k]! })),
          storedAtMs: nowMs,
          expiresAtMs: answer.expiresAtMs,
        };
      case 'conflict':
        return { ok: false, error: conflictError() };
      case 'mailbox-full':
        return {
          ok: false,
          error: new ProtocolError('MAILBOX_FULL', 'a target mailbox is full; nothing was stored: retry once the recipient has caught up', {
            userId: it.recipientUserId,
            devices: answer.devices,
            maxBytes: this.quota.maxBytes,
            maxEnvelopes: this.quota.maxEnvelopes,
          }),
        };
      case 'device-mismatch': {
        const expected = answer.devices;
        const targets = new Set(it.targets.map((x) => x.deviceId));
        return {
          ok: false,
          error: new ProtocolError('DEVICE_LIST_MISMATCH', 'the targets do not match the recipient\'s current devices', {
            userId: it.recipientUserId,
            devices: expected,
            missing: expected.filter((d) => !targets.has(d)),
            extra: [...targets].filter((d) => !expected.includes(d)),
          }),
        };
      }
    }
  }

  /** Applies cumulative ACKs (highest per mailbox): each cursor moves; nothing is deleted. */
  async ackBatch(acks: ReadonlyArray<{ userId: string; deviceId: string; seq: number }>): Promise<void> {
    if (acks.length === 0) return;
    const max = new Map<string, { u: string; d: string; s: number }>();
    for (const a of acks) {
      const k = mailboxKey(a.userId, a.deviceId);
      const cur = max.get(k);
      if (!cur || cur.s < a.seq) max.set(k, { u: a.userId, d: a.deviceId, s: a.seq });
    }
    const v = [...max.values()];
    // One statement (hermetic_apply_acks, migrations/0011): one implicit transaction and
    // one round trip; it locks the cursor rows in key order itself. Its commit does not
    // wait for the WAL flush: a lost ACK only means redelivery.
    await this.db.query('SELECT hermetic_apply_acks($1::text[], $2::text[], $3::int8[])', [v.map((x) => x.u), v.map((x) => x.d), v.map((x) => x.s)]);
  }

  async position(userId: string, deviceId: string): Promise<MailboxPosition | undefined> {
    const rows = await this.db.query<{ next_seq: string | number; acked_seq: string | number | null }>(
      `SELECT m.next_seq, c.acked_seq FROM mailboxes m
         LEFT JOIN mailbox_cursors c ON c.user_id = m.user_id AND c.device_id = m.device_id
        WHERE m.user_id = $1 AND m.device_id = $2`,
      [userId, deviceId],
    );
    const r = rows[0];
    return r && { tail: Number(r.next_seq) - 1, acked: Number(r.acked_seq ?? 0) };
  }

  /**
   * Of many mailboxes, each with the tail the caller knows, those whose tail is beyond
   * it, with their tail, and those that are gone (tail undefined: the device was
   * revoked), in one statement (the periodic catch-up). The comparison is made here, so
   * that mailboxes without news cost no row.
   */
  async tailsAhead(boxes: TailsToCompare): Promise<Map<string, number | undefined>> {
    if (boxes.userIds.length === 0) return new Map();
    const rows = await this.db.query<{ user_id: string; device_id: string; next_seq: string | number | null }>(
      `SELECT b.u AS user_id, b.d AS device_id, m.next_seq
         FROM unnest($1::text[], $2::text[], $3::int8[]) AS b(u, d, t)
         LEFT JOIN mailboxes m ON m.user_id = b.u AND m.device_id = b.d
        WHERE m.next_seq IS NULL OR m.next_seq - 1 > b.t`,
      [boxes.userIds, boxes.deviceIds, boxes.tails],
    );
    return new Map(rows.map((r) => [mailboxKey(r.user_id, r.device_id), r.next_seq === null ? undefined : Number(r.next_seq) - 1]));
  }

  /** Envelopes after `afterSeq`, in order, at most `limit`. */
  async fetch(userId: string, deviceId: string, afterSeq: number, limit: number): Promise<StoredEnvelope[]> {
    const rows = await this.db.query<{
      seq: string | number;
      envelope_id: Uint8Array;
      sender_user: string;
      sender_device: string;
      stored_at_ms: string | number;
      expires_at_ms: string | number;
      payload: Uint8Array;
    }>(
      `SELECT seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, payload
         FROM envelopes WHERE user_id = $1 AND device_id = $2 AND seq > $3 AND expires_at_ms > $5
        ORDER BY seq LIMIT $4`,
      // Expired rows are skipped here, not only when retirement drops them: expiry is
      // exact, and the reader announces the gap they leave.
      [userId, deviceId, afterSeq, limit, this.now()],
    );
    const mailbox = mailboxKey(userId, deviceId);
    return rows.map((r) => ({
      userId,
      deviceId,
      mailbox,
      seq: Number(r.seq),
      envelopeId: new Uint8Array(r.envelope_id),
      senderUserId: r.sender_user,
      senderDeviceId: r.sender_device,
      storedAtMs: Number(r.stored_at_ms),
      expiresAtMs: Number(r.expires_at_ms),
      payload: r.payload,
    }));
  }

  /**
   * Makes the time partitions covering now and PARTITIONS_AHEAD widths ahead (relays
   * sharing the database take turns). Returns how many were made. Throws ClockSkewError,
   * making none, when `nowMs` is too far from the database's clock (checked in the same
   * statement).
   */
  async ensurePartitions(nowMs = this.now()): Promise<number> {
    const rows = await this.db.query<{ n: number | null; db_ms: string | number }>(
      `SELECT x.db_ms, CASE WHEN abs($1::int8 - x.db_ms) <= $5::int8
                            THEN hermetic_ensure_partitions($1::int8, $2::int8, $3::int8, $4::int4) END AS n
         FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8 AS db_ms) x`,
      [nowMs, this.partitionMs, this.partitionMs * PARTITIONS_AHEAD, PARTITION_LOCK_TIMEOUT_MS, Math.min(this.maxClockSkewMs, Number.MAX_SAFE_INTEGER)],
    );
    const r = rows[0];
    if (!r) throw new Error('no answer from the partition upkeep');
    if (r.n === null) throw new ClockSkewError(nowMs - Number(r.db_ms));
    return Number(r.n);
  }

  /**
   * One retirement pass. Every partition whose end is more than the retirement age
   * before `nowMs` is drained, oldest first: its unacknowledged, unexpired entries move
   * to the current partition in steps of bounded size (each a transaction), and the
   * last step credits the expired ones and records the time. A pass starts no step
   * after its drain budget; the next one goes on. Every partition drained at least the
   * receipt window before `nowMs` is then dropped (a drop that cannot get the table
   * lock in time is left for the next pass and reported in `deferred`; the partition
   * holds nothing any read returns meanwhile). A drain that fails is reported in
   * `drainFailed`, not thrown: the drops still run.
   */
  async retire(nowMs = this.now()): Promise<Retired> {
    await this.ensurePartitions(nowMs);
    const old = await this.db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE to_ms <= $1 AND NOT drained ORDER BY from_ms', [
      nowMs - this.retirementAgeMs,
    ]);
    let partitions = 0;
    let carried = 0;
    let expired = 0;
    // Each partition in steps (hermetic_drain_partition carries a bounded number of
    // entries per transaction), until its last step marks it drained. The pass starts
    // no step after its budget: the next pass goes on with the same partition. A drain
    // that fails stops the drains of this pass (the next ones are newer) but not the
    // drops below: they need only partitions already drained, and a failing drain must
    // not keep the log from shrinking.
    let drainFailed: Retired['drainFailed'];
    const started = performance.now();
    const spent = (): boolean => performance.now() - started > this.drainBudgetMs;
    let behind = false;
    drains: for (const [i, { name }] of old.entries()) {
      let done = false;
      while (!done) {
        try {
          const step = await this.db.transaction(async (tx) => {
            const r = await tx.query<{ r_carried: string | number; r_expired: string | number; r_done: boolean }>(
              'SELECT r_carried, r_expired, r_done FROM hermetic_drain_partition($1::text, $2::int8, $3::int4, $4::int8)',
              [name, nowMs, this.carryStep.rows, this.carryStep.bytes],
            );
            await tx.query('UPDATE envelope_partitions SET drained_at_ms = $2 WHERE name = $1 AND drained AND drained_at_ms IS NULL', [name, nowMs]);
            return r[0];
          });
          carried += Number(step?.r_carried ?? 0);
          expired += Number(step?.r_expired ?? 0);
          done = step?.r_done !== false;
        } catch (err) {
          drainFailed = { partition: name, error: err instanceof Error ? err : new Error(String(err)) };
          break drains;
        }
        if (spent()) {
          behind = !done || i < old.length - 1;
          break drains;
        }
      }
    }
    // A partition drained without its time (before migrations/0012, or by a relay of an
    // earlier version sharing the database) gets this pass's time, so that it still waits
    // out the window.
    await this.db.query('UPDATE envelope_partitions SET drained_at_ms = $1 WHERE drained AND drained_at_ms IS NULL', [nowMs]);
    const due = await this.db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE drained AND drained_at_ms <= $1 ORDER BY from_ms', [
      nowMs - this.receiptWindowMs,
    ]);
    let deferred: Retired['deferred'];
    for (const { name } of due) {
      try {
        const dropped = await this.db.query<{ ok: boolean }>('SELECT hermetic_drop_partition($1::text, $2::int4) AS ok', [name, PARTITION_LOCK_TIMEOUT_MS]);
        if (dropped[0]?.ok) partitions++;
      } catch (err) {
        // 55P03: the table lock was not free in time; the next pass drops it. Nor is it
        // tried again for the other partitions of this pass: each attempt holds every
        // statement on the table behind it for up to the lock timeout, and what kept the
        // lock from it (a long transaction) is most likely still there.
        if (sqlState(err) !== '55P03') throw err;
        // The report is for the operator: failing to list the holders must not cost the
        // pass its result (what it carried and dropped, a failed drain).
        deferred = { partition: name, holders: await this.lockHolders(name).catch(() => []) };
        break;
      }
    }
    return { partitions, carried, expired, behind, ...(deferred && { deferred }), ...(drainFailed && { drainFailed }) };
  }

  /** The other sessions holding a lock on partition `name` or on the envelope table. */
  private async lockHolders(name: string): Promise<LockHolder[]> {
    const rows = await this.db.query<{ backend_type: string; state: string | null; relation: string; mode: string; xact_ms: string | number | null }>(
      `SELECT a.backend_type, a.state, c.relname AS relation, l.mode,
              (extract(epoch FROM clock_timestamp() - a.xact_start) * 1000)::int8 AS xact_ms
         FROM pg_locks l
         JOIN pg_class c ON c.oid = l.relation
         JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.granted AND l.pid <> pg_backend_pid() AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.relation IN (to_regclass($1), to_regclass('envelopes'))
        ORDER BY a.xact_start NULLS LAST
        LIMIT $2`,
      [name, MAX_LOCK_HOLDERS_REPORTED],
    );
    return rows.map((r) => ({
      backendType: r.backend_type,
      state: r.state,
      relation: r.relation,
      mode: r.mode,
      xactMs: r.xact_ms === null ? null : Number(r.xact_ms),
    }));
  }

  /** What a mailbox holds by the quota's counters (migrations/0009). */
  async held(userId: string, deviceId: string): Promise<{ bytes: number; envelopes: number } | undefined> {
    const rows = await this.db.query<{ b: string | number; n: string | number }>(
      `SELECT m.in_bytes - coalesce(c.out_bytes, 0) AS b, m.in_count - coalesce(c.out_count, 0) AS n
         FROM mailboxes m LEFT JOIN mailbox_cursors c ON c.user_id = m.user_id AND c.device_id = m.device_id
        WHERE m.user_id = $1 AND m.device_id = $2`,
      [userId, deviceId],
    );
    const r = rows[0];
    return r && { bytes: Number(r.b), envelopes: Number(r.n) };
  }
}

/**
 * Removes a device's mailbox contents when the device leaves its user's list (its
 * `mailboxes` row goes with the `devices` row). In the caller's transaction; the caller
 * sends the 'revoked' notice (server/fleet/notice.ts) with it or after its commit.
 */
export async function removeMailbox(tx: SqlExecutor, userId: string, deviceId: string): Promise<void> {
  // The cursor row first (made if missing, then locked), as retirement's drain and the
  // ACK take it before the envelopes: deleting the envelopes first waited for a drain
  // holding the cursor while the drain waited for those envelopes (a deadlock), or
  // failed on rows the drain had moved to another partition.
  await tx.query('INSERT INTO mailbox_cursors (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [userId, deviceId]);
  await tx.query('SELECT 1 FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2 FOR UPDATE', [userId, deviceId]);
  await tx.query('DELETE FROM envelopes WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
  await tx.query('DELETE FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
}
