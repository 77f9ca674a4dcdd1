/**
 * Mailbox persistence: group-committed SENDs, batched ACKs, backlog reads and expiry.
 * Written against the Database contract, so identical on PostgreSQL and PGlite.
 *
 * A SEND batch is one call of hermetic_store_sends (migrations/0004, changed by 0009),
 * one statement and so one implicit transaction and one round trip, which:
 *   1. looks up earlier SENDs with the same envelope ids whose TTL has not passed
 *      (idempotent resend / conflict; a record past its TTL answers nothing);
 *   2. locks the recipients' mailbox rows in key order (no deadlock between batches or
 *      relays) and checks each SEND's targets against the current device list, then
 *      each target mailbox's quota (MailboxQuota);
 *   3. if any SEND cannot be stored, writes nothing and reports those (they are
 *      answered here and the rest are sent again);
 *   4. otherwise replaces the expired records of reused ids, bumps next_seq and the
 *      quota counters of every target mailbox — the relay has numbered the batch's
 *      envelopes within each mailbox, so each gets next_seq + its place — records the
 *      SENDs (idempotency rows), inserts every envelope (arrays + unnest) and sends one
 *      NOTIFY for the whole commit.
 */
import type { DeliverFrame } from '../../protocol/envelopes.js';
import { ProtocolError } from '../../protocol/errors.js';
import { ENVELOPE_ID_BYTES } from '../../protocol/limits.js';
import { type Database, type SqlExecutor, type SqlParam, sqlState } from '../storage/database.js';
import { DEFAULT_MAILBOX_MAX_BYTES, DEFAULT_MAILBOX_MAX_ENVELOPES } from '../limits.js';

export const MAILBOX_CHANNEL = 'hermetic_mailbox';

/** SHA-256: the SEND content hash the relay records for idempotency. */
const CONTENT_HASH_BYTES = 32;

export interface SendItem {
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly envelopeId: Uint8Array;
  readonly contentHash: Uint8Array;
  readonly recipientUserId: string;
  readonly targets: ReadonlyArray<{ readonly deviceId: string; readonly payload: Uint8Array }>;
  readonly ttlSeconds: number;
}

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
}

export interface MailboxPosition {
  /** Highest sequence assigned (0 when none). */
  readonly tail: number;
  /** Highest sequence acknowledged. */
  readonly acked: number;
}

/** SQLSTATEs after which a batch is written again from the start, nothing of it having
 * been written: HR001, raised by hermetic_store_sends when a concurrent transaction
 * recorded one of the batch's envelope ids first (the retry answers it as a resend);
 * and PostgreSQL's deadlock and serialization failures, which should not happen (locks
 * are taken in key order) but are safe to retry. */
const RETRYABLE = new Set(['HR001', '40P01', '40001']);
const MAX_BATCH_RETRIES = 3;

function key(u: string, d: string): string {
  return `${u}\u0000${d}`;
}

function sendKey(it: SendItem): string {
  return `${it.senderUserId}\u0000${it.senderDeviceId}\u0000${Buffer.from(it.envelopeId).toString('hex')}`;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** A row of hermetic_store_sends (migrations/0004, 0009): see the kinds there. */
interface StoreRow {
  r_kind: number;
  r_item: number | null;
  r_seq: string | number | null;
  r_devices: string[] | null;
  r_seqs: Array<string | number> | null;
  r_expires: string | number | null;
}

const ROW_MAILBOX = 0;
const ROW_RESEND = 1;
const ROW_CONFLICT = 2;
const ROW_DEVICE_MISMATCH = 3;
const ROW_MAILBOX_FULL = 4;

/** What one recipient mailbox may hold (server/limits.ts, config HERMETIC_MAILBOX_*). */
export interface MailboxQuota {
  /** Payload bytes of the envelopes stored and not yet acknowledged or expired. */
  readonly maxBytes: number;
  /** Envelopes stored and not yet acknowledged or expired. */
  readonly maxEnvelopes: number;
}

function conflictError(): ProtocolError {
  return new ProtocolError('ENVELOPE_ID_CONFLICT', 'this envelope id was already used with different content; the original is kept');
}

export class MailboxStore {
  constructor(
    private readonly db: Database,
    private readonly nodeId: string,
    private readonly now: () => number = Date.now,
    private readonly quota: MailboxQuota = { maxBytes: DEFAULT_MAILBOX_MAX_BYTES, maxEnvelopes: DEFAULT_MAILBOX_MAX_ENVELOPES },
  ) {}

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
        if (state !== undefined && RETRYABLE.has(state) && attempt < MAX_BATCH_RETRIES) continue;
        throw err;
      }
    }
  }

  private async storeOnce(items: readonly SendItem[]): Promise<{ results: SendResult[]; committed: StoredEnvelope[] }> {
    const results: Array<SendResult | undefined> = new Array(items.length);
    const nowMs = this.now();

    // Resends inside this very batch are answered from the first occurrence.
    const firstIndex = new Map<string, number>();
    const repeats: Array<[number, number]> = [];
    items.forEach((it, i) => {
      const k = sendKey(it);
      const first = firstIndex.get(k);
      if (first === undefined) firstIndex.set(k, i);
      else repeats.push([i, first]);
    });

    // The function stores all of the SENDs it is given or none: those it reports
    // (resends, conflicts, device-list mismatches) are answered and the rest go again.
    let pending = [...firstIndex.values()];
    const committed: StoredEnvelope[] = [];
    while (pending.length > 0) {
      const call = this.prepare(items, pending, nowMs);
      const rows = await this.db.query<StoreRow>(
        `SELECT * FROM hermetic_store_sends($1::int8, $2::text, $3::text, $4::int8, $5::int8, $6::text,
           $7::text, $8::text, $9::int4[],
           $10::text, $11::text, $12::int4[], $13::int4[], $14::int4[],
           $15::text, $16::text, $17::bytea, $18::int8[],
           $19::bytea, $20::text, $21::int4[], $22::int4[],
           $23::bytea[], $24::bytea, $25::int4[], $26::int4[])`,
        [nowMs, MAILBOX_CHANNEL, this.nodeId, this.quota.maxBytes, this.quota.maxEnvelopes, ...call.params],
      );
      const refused = new Set<number>();
      const firstSeq: number[] = [];
      for (const r of rows) {
        if (r.r_kind === ROW_MAILBOX) {
          firstSeq[r.r_item! - 1] = Number(r.r_seq);
          continue;
        }
        const i = call.itemAt.get(r.r_item!);
        if (i === undefined) throw new Error(`store answered for an unknown position ${r.r_item}`);
        refused.add(i);
        results[i] = this.refusal(items[i]!, r, nowMs);
      }
      if (refused.size > 0) {
        pending = pending.filter((i) => !refused.has(i));
        continue;
      }
      // Stored: each envelope's sequence is its mailbox's first plus its place there.
      const stored = new Map<number, StoredTarget[]>();
      for (const t of call.targets) {
        const it = items[t.item]!;
        const first = firstSeq[t.box];
        if (first === undefined) throw new Error('a stored envelope\'s mailbox is missing from the answer');
        const seq = first + t.rank;
        committed.push({
          userId: it.recipientUserId,
          deviceId: t.deviceId,
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

  /** The parameters hermetic_store_sends takes (migrations/0004) for the SENDs `indexes`. */
  private prepare(items: readonly SendItem[], indexes: readonly number[], nowMs: number) {
    const recipients = new Map<string, number>();
    const boxes = new Map<string, { index: number; count: number }>();
    const c = { user: [] as string[], device: [] as string[], count: [] as number[] };
    const t = {
      recipient: [] as string[], device: [] as string[], box: [] as number[], rank: [] as number[], first: [] as number[],
      senderUser: [] as string[], senderDevice: [] as string[], envelopeId: [] as Uint8Array[], expires: [] as number[],
      hash: [] as Uint8Array[], devices: [] as string[], count: [] as Array<number | null>, recipientIndex: [] as Array<number | null>,
      payload: [] as Uint8Array[],
    };
    const targets: Array<{ item: number; deviceId: string; box: number; rank: number; payload: Uint8Array }> = [];
    const itemAt = new Map<number, number>();
    for (const i of indexes) {
      const it = items[i]!;
      let ri = recipients.get(it.recipientUserId);
      if (ri === undefined) recipients.set(it.recipientUserId, (ri = recipients.size + 1));
      const first = t.recipient.length + 1;
      itemAt.set(first, i);
      it.targets.forEach((target, n) => {
        const k = key(it.recipientUserId, target.deviceId);
        let box = boxes.get(k);
        if (!box) {
          boxes.set(k, (box = { index: boxes.size, count: 0 }));
          c.user.push(it.recipientUserId);
          c.device.push(target.deviceId);
          c.count.push(0);
        }
        const rank = box.count++;
        c.count[box.index] = box.count;
        targets.push({ item: i, deviceId: target.deviceId, box: box.index, rank, payload: target.payload });
        t.recipient.push(it.recipientUserId);
        t.device.push(target.deviceId);
        t.box.push(box.index + 1);
        t.rank.push(rank);
        t.first.push(first);
        t.senderUser.push(it.senderUserId);
        t.senderDevice.push(it.senderDeviceId);
        t.envelopeId.push(it.envelopeId);
        t.expires.push(nowMs + it.ttlSeconds * 1000);
        t.hash.push(it.contentHash);
        // Quoted: a device may be called "NULL". Device ids hold no quote or backslash.
        t.devices.push(n === 0 ? `{${it.targets.map((x) => `"${x.deviceId}"`).join(',')}}` : '');
        t.count.push(n === 0 ? it.targets.length : null);
        t.recipientIndex.push(n === 0 ? ri : null);
        t.payload.push(target.payload);
      });
    }
    // On PostgreSQL all payloads travel as ONE binary bytea parameter cut apart in SQL:
    // `pg` sends an array of bytea as hex text, which the server would parse while the
    // batch holds the mailbox locks. PGlite is in-process and is faster with the array.
    const packed = this.db.driver === 'pg' ? packPayloads(t.payload) : undefined;
    const params: SqlParam[] = [
      words([...recipients.keys()]),
      words(c.user), words(c.device), ints(c.count),
      words(t.recipient), words(t.device), ints(t.box), ints(t.rank), ints(t.first),
      words(t.senderUser), words(t.senderDevice), fixedWidth(t.envelopeId, ENVELOPE_ID_BYTES), ints(t.expires),
      fixedWidth(t.hash, CONTENT_HASH_BYTES), t.devices.join(' '), ints(t.count), ints(t.recipientIndex),
      packed ? null : t.payload,
      packed ? packed.blob : null,
      packed ? packed.offsets : null,
      packed ? packed.lengths : null,
    ];
    return { params, targets, itemAt };
  }

  /** The answer to a SEND the store refused to write (see the row kinds). */
  private refusal(it: SendItem, r: StoreRow, nowMs: number): SendResult {
    if (r.r_kind === ROW_RESEND) {
      const seqs = r.r_seqs!;
      return {
        ok: true,
        duplicate: true,
        stored: r.r_devices!.map((d, k) => ({ deviceId: d, seq: Number(seqs[k]) })),
        storedAtMs: nowMs,
        expiresAtMs: Number(r.r_expires),
      };
    }
    if (r.r_kind === ROW_CONFLICT) return { ok: false, error: conflictError() };
    if (r.r_kind === ROW_MAILBOX_FULL) {
      return {
        ok: false,
        error: new ProtocolError('MAILBOX_FULL', 'a target mailbox is full; nothing was stored: retry once the recipient has caught up', {
          userId: it.recipientUserId,
          devices: r.r_devices!,
          maxBytes: this.quota.maxBytes,
          maxEnvelopes: this.quota.maxEnvelopes,
        }),
      };
    }
    if (r.r_kind !== ROW_DEVICE_MISMATCH) throw new Error(`unknown store answer kind ${r.r_kind}`);
    const expected = r.r_devices!;
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

  /** Applies cumulative ACKs (highest per mailbox) and removes what they cover. */
  async ackBatch(acks: ReadonlyArray<{ userId: string; deviceId: string; seq: number }>): Promise<void> {
    if (acks.length === 0) return;
    const max = new Map<string, { u: string; d: string; s: number }>();
    for (const a of acks) {
      const k = key(a.userId, a.deviceId);
      const cur = max.get(k);
      if (!cur || cur.s < a.seq) max.set(k, { u: a.userId, d: a.deviceId, s: a.seq });
    }
    // Sorted, so that concurrent ACK batches lock cursor rows in the same order.
    const v = [...max.values()].sort((a, b) => (a.u < b.u ? -1 : a.u > b.u ? 1 : a.d < b.d ? -1 : a.d > b.d ? 1 : 0));
    const params = [v.map((x) => x.u), v.map((x) => x.d), v.map((x) => x.s)];
    // One statement (hermetic_apply_acks, migrations/0005): one implicit transaction and
    // one round trip; the cursor moves and the envelopes it covers go together. Its
    // commit does not wait for the WAL flush: a lost ACK only means redelivery.
    await this.db.query(
      'SELECT hermetic_apply_acks($1::text[], $2::text[], $3::int8[])',
      params,
    );
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
  async tailsAhead(boxes: ReadonlyArray<{ userId: string; deviceId: string; tail: number }>): Promise<Map<string, number | undefined>> {
    if (boxes.length === 0) return new Map();
    const rows = await this.db.query<{ user_id: string; device_id: string; next_seq: string | number | null }>(
      `SELECT b.u AS user_id, b.d AS device_id, m.next_seq
         FROM unnest($1::text[], $2::text[], $3::int8[]) AS b(u, d, t)
         LEFT JOIN mailboxes m ON m.user_id = b.u AND m.device_id = b.d
        WHERE m.next_seq IS NULL OR m.next_seq - 1 > b.t`,
      [boxes.map((b) => b.userId), boxes.map((b) => b.deviceId), boxes.map((b) => b.tail)],
    );
    return new Map(rows.map((r) => [key(r.user_id, r.device_id), r.next_seq === null ? undefined : Number(r.next_seq) - 1]));
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
      // Expired rows are skipped here, not only when the sweeper removes them: expiry is
      // exact, and the reader announces the gap they leave.
      [userId, deviceId, afterSeq, limit, this.now()],
    );
    return rows.map((r) => ({
      userId,
      deviceId,
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
   * Removes at most `limit` expired SEND records, oldest first, and, by primary key, the
   * envelopes they stored that are still there (an envelope expires with its SEND's
   * record, which names its mailboxes and sequences), crediting their mailboxes' quota.
   * One statement (hermetic_sweep, migrations/0009), so both go together.
   */
  async sweepExpired(limit: number): Promise<{ envelopes: number; sends: number }> {
    const rows = await this.db.query<{ r_sends: string | number | null; r_envelopes: string | number | null }>(
      'SELECT r_sends, r_envelopes FROM hermetic_sweep($1::int8, $2::int4)',
      [this.now(), limit],
    );
    return { envelopes: Number(rows[0]?.r_envelopes ?? 0), sends: Number(rows[0]?.r_sends ?? 0) };
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
 * Ids as one space-separated string, split by string_to_array() in SQL: far cheaper to
 * encode and to parse than a text[] parameter. User ids are printable ASCII without
 * spaces and device ids are [A-Za-z0-9_-] (both checked where they enter), so a space
 * never occurs inside one; checked again here, as a wrong split would misfile data.
 */
function words(ids: readonly string[]): string {
  for (const id of ids) if (id.length === 0 || id.includes(' ')) throw new Error(`an id cannot be empty or contain a space: ${JSON.stringify(id)}`);
  return ids.join(' ');
}

/** An integer array literal (NULL for null). */
function ints(values: ReadonlyArray<number | null>): string {
  return `{${values.map((v) => (v === null ? 'NULL' : String(v))).join(',')}}`;
}

/** Equal-length byte strings concatenated, read back in SQL with substring(). */
function fixedWidth(parts: readonly Uint8Array[], width: number): Buffer {
  for (const p of parts) if (p.length !== width) throw new Error(`expected ${width} bytes, got ${p.length}`);
  return Buffer.concat(parts, parts.length * width);
}

/** Concatenates payloads, with 1-based offsets and lengths for SQL substring(). */
function packPayloads(payloads: readonly Uint8Array[]): { blob: Buffer; offsets: number[]; lengths: number[] } {
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 1;
  for (const p of payloads) {
    offsets.push(at);
    lengths.push(p.length);
    at += p.length;
  }
  return { blob: Buffer.concat(payloads, at - 1), offsets, lengths };
}

export type MailboxNotice =
  | { readonly node: string; readonly kind: 'tails'; readonly tails: ReadonlyArray<readonly [string, string, number]> }
  | { readonly node: string; readonly kind: 'all' }
  | { readonly node: string; readonly kind: 'connected'; readonly userId: string; readonly deviceId: string; readonly at: number }
  /** A device was revoked: every relay closes its connection (sent with node ''). */
  | { readonly node: string; readonly kind: 'revoked'; readonly userId: string; readonly deviceId: string };

/**
 * Removes a device's mailbox contents when the device leaves its user's list (its
 * `mailboxes` row goes with the `devices` row). In the caller's transaction; the notice
 * is delivered on commit, to every relay, which then closes the device's connection.
 */
export async function removeMailbox(tx: SqlExecutor, userId: string, deviceId: string): Promise<void> {
  await tx.query('DELETE FROM envelopes WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
  await tx.query('DELETE FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
  await tx.query('SELECT pg_notify($1, $2)', [MAILBOX_CHANNEL, JSON.stringify({ node: '', kind: 'revoked', userId, deviceId })]);
}

export function encodeConnectedNotice(nodeId: string, userId: string, deviceId: string, at: number): string {
  return JSON.stringify({ node: nodeId, kind: 'connected', userId, deviceId, at });
}

/** Sequences and times in notices: JSON numbers can be fractions, negative or beyond 2^53 (1e400 parses as Infinity). */
const isSafeNat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export function decodeNotice(payload: string): MailboxNotice | undefined {
  try {
    const v = JSON.parse(payload) as { node?: unknown; kind?: unknown; tails?: unknown; userId?: unknown; deviceId?: unknown; at?: unknown };
    if (typeof v.node !== 'string') return undefined;
    if (v.kind === 'all') return { node: v.node, kind: 'all' };
    if (v.kind === 'revoked' && typeof v.userId === 'string' && typeof v.deviceId === 'string') {
      return { node: v.node, kind: 'revoked', userId: v.userId, deviceId: v.deviceId };
    }
    if (v.kind === 'connected' && typeof v.userId === 'string' && typeof v.deviceId === 'string' && isSafeNat(v.at)) {
      return { node: v.node, kind: 'connected', userId: v.userId, deviceId: v.deviceId, at: v.at };
    }
    if (v.kind === 'tails' && Array.isArray(v.tails)) {
      const tails = v.tails.filter(
        (t): t is [string, string, number] => Array.isArray(t) && typeof t[0] === 'string' && typeof t[1] === 'string' && isSafeNat(t[2]),
      );
      return { node: v.node, kind: 'tails', tails };
    }
  } catch {
    /* not ours */
  }
  return undefined;
}
