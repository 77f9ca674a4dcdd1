/**
 * Mailbox persistence: group-committed SENDs, batched ACKs, backlog reads and expiry.
 * Written against the Database contract, so identical on PostgreSQL and PGlite.
 *
 * A SEND batch is one transaction:
 *   1. look up earlier SENDs with the same envelope ids (idempotent resend / conflict);
 *   2. lock the recipients' mailbox rows in key order (no deadlock between batches or
 *      relays) — which also reads each recipient's current device list;
 *   3. bump next_seq for every target mailbox, giving each envelope its sequence;
 *   4. record the SENDs (idempotency rows), insert every envelope (arrays + unnest) and
 *      send one NOTIFY for the whole commit, all in a single statement.
 */
import type { DeliverFrame } from '../../protocol/envelopes.js';
import { ProtocolError } from '../../protocol/errors.js';
import type { Database, SqlExecutor } from '../storage/database.js';

export const MAILBOX_CHANNEL = 'hermetic_mailbox';

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

/** Thrown inside a batch when a concurrent transaction recorded one of its envelope ids
 * first; the batch is retried and then answers those SENDs as resends. */
class ConcurrentSend extends Error {}

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

interface SentRow {
  sender_user: string;
  sender_device: string;
  envelope_id: Uint8Array;
  content_hash: Uint8Array;
  device_ids: string[];
  seqs: Array<string | number>;
  expires_at_ms: string | number;
}

export class MailboxStore {
  constructor(
    private readonly db: Database,
    private readonly nodeId: string,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Per lane, settles once the batch started last holds its mailbox locks. Within a lane
   * batches lock mailboxes in the order they were started, so that when two are in
   * flight the later one cannot number a mailbox first: SENDs pipelined on one
   * connection keep their send order. A recipient always goes to the same lane (see
   * MailboxService), so lanes lock disjoint rows and run side by side.
   */
  private readonly lockTurns = new Map<number, Promise<void>>();

  /** Writes a batch of SENDs in one transaction; one result per item, in order. */
  async storeBatch(items: readonly SendItem[], lane = 0): Promise<{ results: SendResult[]; committed: StoredEnvelope[] }> {
    const previous = this.lockTurns.get(lane);
    let locked!: () => void;
    this.lockTurns.set(lane, new Promise<void>((r) => (locked = r)));
    try {
      // Wait outside any transaction, holding nothing the earlier batch could need.
      await previous;
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.db.transaction((tx) => this.storeBatchTx(tx, items, locked));
        } catch (err) {
          if (err instanceof ConcurrentSend && attempt < MAX_BATCH_RETRIES) continue;
          throw err;
        }
      }
    } finally {
      locked();
    }
  }

  private async storeBatchTx(tx: SqlExecutor, items: readonly SendItem[], locked: () => void): Promise<{ results: SendResult[]; committed: StoredEnvelope[] }> {
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
    const unique = [...firstIndex.values()];

    // 1. Earlier SENDs with the same ids.
    const prior = await tx.query<SentRow>(
      `SELECT s.sender_user, s.sender_device, s.envelope_id, s.content_hash, s.device_ids, s.seqs, s.expires_at_ms
         FROM sent_envelopes s
         JOIN unnest($1::text[], $2::text[], $3::bytea[]) AS k(u, d, e)
           ON s.sender_user = k.u AND s.sender_device = k.d AND s.envelope_id = k.e`,
      [unique.map((i) => items[i]!.senderUserId), unique.map((i) => items[i]!.senderDeviceId), unique.map((i) => items[i]!.envelopeId)],
    );
    const priorByKey = new Map(prior.map((r) => [`${r.sender_user}\u0000${r.sender_device}\u0000${Buffer.from(r.envelope_id).toString('hex')}`, r]));
    const fresh: number[] = [];
    for (const i of unique) {
      const it = items[i]!;
      const p = priorByKey.get(sendKey(it));
      if (!p) {
        fresh.push(i);
      } else if (sameBytes(new Uint8Array(p.content_hash), it.contentHash)) {
        results[i] = {
          ok: true,
          duplicate: true,
          stored: p.device_ids.map((d, j) => ({ deviceId: d, seq: Number(p.seqs[j]) })),
          storedAtMs: nowMs,
          expiresAtMs: Number(p.expires_at_ms),
        };
      } else {
        results[i] = { ok: false, error: new ProtocolError('ENVELOPE_ID_CONFLICT', 'this envelope id was already used with different content; the original is kept') };
      }
    }

    // 2. Lock recipients' mailboxes in key order; the rows are also the device lists.
    const recipients = [...new Set(fresh.map((i) => items[i]!.recipientUserId))];
    const devicesByUser = new Map<string, string[]>();
    if (recipients.length > 0) {
      const rows = await tx.query<{ user_id: string; device_id: string }>(
        `SELECT user_id, device_id FROM mailboxes WHERE user_id = ANY($1::text[])
          ORDER BY user_id, device_id FOR UPDATE`,
        [recipients],
      );
      for (const r of rows) {
        const list = devicesByUser.get(r.user_id);
        if (list) list.push(r.device_id);
        else devicesByUser.set(r.user_id, [r.device_id]);
      }
    }
    locked();
    const accepted: number[] = [];
    for (const i of fresh) {
      const it = items[i]!;
      const all = devicesByUser.get(it.recipientUserId) ?? [];
      // Sending to one's own user: every other device, never the sending device itself.
      const expected = it.recipientUserId === it.senderUserId ? all.filter((d) => d !== it.senderDeviceId) : all;
      const targets = new Set(it.targets.map((t) => t.deviceId));
      const missing = expected.filter((d) => !targets.has(d));
      const extra = [...targets].filter((d) => !expected.includes(d));
      if (missing.length > 0 || extra.length > 0 || expected.length === 0) {
        results[i] = {
          ok: false,
          error: new ProtocolError('DEVICE_LIST_MISMATCH', 'the targets do not match the recipient\'s current devices', {
            userId: it.recipientUserId,
            devices: expected,
            missing,
            extra,
          }),
        };
      } else {
        accepted.push(i);
      }
    }

    const committed: StoredEnvelope[] = [];
    if (accepted.length > 0) {
      // 3. Assign sequences: one UPDATE for every target mailbox of the batch.
      const counts = new Map<string, { u: string; d: string; n: number }>();
      for (const i of accepted) {
        const it = items[i]!;
        for (const t of it.targets) {
          const k = key(it.recipientUserId, t.deviceId);
          const c = counts.get(k);
          if (c) c.n++;
          else counts.set(k, { u: it.recipientUserId, d: t.deviceId, n: 1 });
        }
      }
      const cs = [...counts.values()];
      const bumped = await tx.query<{ user_id: string; device_id: string; first: string | number }>(
        `UPDATE mailboxes m SET next_seq = m.next_seq + v.n
           FROM unnest($1::text[], $2::text[], $3::int8[]) AS v(u, d, n)
          WHERE m.user_id = v.u AND m.device_id = v.d
          RETURNING m.user_id, m.device_id, m.next_seq - v.n AS first`,
        [cs.map((c) => c.u), cs.map((c) => c.d), cs.map((c) => c.n)],
      );
      const nextSeq = new Map(bumped.map((r) => [key(r.user_id, r.device_id), Number(r.first)]));

      const sent = { u: [] as string[], d: [] as string[], e: [] as Uint8Array[], h: [] as Uint8Array[], r: [] as string[], ds: [] as string[], ss: [] as string[], x: [] as number[] };
      for (const i of accepted) {
        const it = items[i]!;
        const expiresAtMs = nowMs + it.ttlSeconds * 1000;
        const stored: StoredTarget[] = [];
        for (const t of it.targets) {
          const k = key(it.recipientUserId, t.deviceId);
          const seq = nextSeq.get(k);
          if (seq === undefined) throw new Error('mailbox vanished during the batch');
          nextSeq.set(k, seq + 1);
          stored.push({ deviceId: t.deviceId, seq });
          committed.push({
            userId: it.recipientUserId,
            deviceId: t.deviceId,
            seq,
            envelopeId: it.envelopeId,
            senderUserId: it.senderUserId,
            senderDeviceId: it.senderDeviceId,
            storedAtMs: nowMs,
            expiresAtMs,
            payload: t.payload,
          });
        }
        results[i] = { ok: true, duplicate: false, stored, storedAtMs: nowMs, expiresAtMs };
        sent.u.push(it.senderUserId);
        sent.d.push(it.senderDeviceId);
        sent.e.push(it.envelopeId);
        sent.h.push(it.contentHash);
        sent.r.push(it.recipientUserId);
        // Postgres arrays of arrays must be rectangular; store the lists as literals.
        sent.ds.push(pgTextArray(stored.map((s) => s.deviceId)));
        sent.ss.push(`{${stored.map((s) => s.seq).join(',')}}`);
        sent.x.push(expiresAtMs);
      }

      // On PostgreSQL all payloads travel as ONE binary bytea parameter cut apart in SQL:
      // `pg` sends an array of bytea as hex text, which the server parses inside the
      // window in which this batch holds the mailbox locks (measured: half the
      // statement's time). PGlite is in-process and is faster with the plain array.
      const packed = this.db.driver === 'pg';
      const payloads = packed ? packPayloads(committed) : undefined;
      // 4 and 5. Idempotency rows, the envelopes and the NOTIFY in one statement (one
      // round trip). A concurrent transaction that recorded one of these ids first makes
      // the count fall short: the batch is rolled back and retried.
      const written = await tx.query<{ recorded: string | number }>(
        `WITH recorded AS (
           INSERT INTO sent_envelopes (sender_user, sender_device, envelope_id, content_hash, recipient_user, device_ids, seqs, expires_at_ms)
           SELECT u, d, e, h, r, ds::text[], ss::int8[], x
             FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::text[], $8::int8[])
               AS v(u, d, e, h, r, ds, ss, x)
           ON CONFLICT DO NOTHING
           RETURNING 1
         ), stored AS (
           INSERT INTO envelopes (user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, payload)
           SELECT v.u, v.d, v.s, v.e, v.su, v.sd, v.st, v.x, ${packed ? 'substring($17::bytea FROM v.o FOR v.l)' : 'v.o'}
             FROM unnest($9::text[], $10::text[], $11::int8[], $12::bytea[], $13::text[], $14::text[], $15::int8[], $16::int8[],
                         ${packed ? '$18::int4[], $19::int4[]' : '$17::bytea[]'})
               AS v(u, d, s, e, su, sd, st, x, o${packed ? ', l' : ''})
           RETURNING 1
         )
         SELECT (SELECT count(*) FROM recorded) AS recorded, (SELECT count(*) FROM stored) AS stored,
                pg_notify(${packed ? '$20, $21' : '$18, $19'})`,
        [
          sent.u,
          sent.d,
          sent.e,
          sent.h,
          sent.r,
          sent.ds,
          sent.ss,
          sent.x,
          committed.map((c) => c.userId),
          committed.map((c) => c.deviceId),
          committed.map((c) => c.seq),
          committed.map((c) => c.envelopeId),
          committed.map((c) => c.senderUserId),
          committed.map((c) => c.senderDeviceId),
          committed.map((c) => c.storedAtMs),
          committed.map((c) => c.expiresAtMs),
          ...(payloads ? [payloads.blob, payloads.offsets, payloads.lengths] : [committed.map((c) => c.payload)]),
          MAILBOX_CHANNEL,
          encodeTailsNotice(this.nodeId, committed),
        ],
      );
      if (Number(written[0]?.recorded) !== accepted.length) throw new ConcurrentSend();
    }

    for (const [i, first] of repeats) {
      const r = results[first]!;
      const same = sameBytes(items[i]!.contentHash, items[first]!.contentHash);
      results[i] = !r.ok
        ? r
        : same
          ? { ...r, duplicate: true }
          : { ok: false, error: new ProtocolError('ENVELOPE_ID_CONFLICT', 'this envelope id was already used with different content; the original is kept') };
    }
    return { results: results as SendResult[], committed };
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
    // One statement, so one implicit transaction and one round trip: the cursor moves
    // and the envelopes it covers go together.
    await this.db.query(
      `WITH moved AS (
         INSERT INTO mailbox_cursors (user_id, device_id, acked_seq)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
         ON CONFLICT (user_id, device_id) DO UPDATE
           SET acked_seq = GREATEST(mailbox_cursors.acked_seq, EXCLUDED.acked_seq)
       )
       DELETE FROM envelopes e
        USING unnest($1::text[], $2::text[], $3::int8[]) AS a(u, d, s)
        WHERE e.user_id = a.u AND e.device_id = a.d AND e.seq <= a.s`,
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

  /** Current tails of many mailboxes in one statement (the periodic catch-up). */
  async tails(boxes: ReadonlyArray<{ userId: string; deviceId: string }>): Promise<Map<string, number>> {
    if (boxes.length === 0) return new Map();
    const rows = await this.db.query<{ user_id: string; device_id: string; next_seq: string | number }>(
      `SELECT m.user_id, m.device_id, m.next_seq FROM mailboxes m
         JOIN unnest($1::text[], $2::text[]) AS b(u, d) ON m.user_id = b.u AND m.device_id = b.d`,
      [boxes.map((b) => b.userId), boxes.map((b) => b.deviceId)],
    );
    return new Map(rows.map((r) => [key(r.user_id, r.device_id), Number(r.next_seq) - 1]));
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

  /** Removes expired envelopes and idempotency rows, at most `limit` of each per call. */
  async sweepExpired(limit: number): Promise<{ envelopes: number; sends: number }> {
    const nowMs = this.now();
    const env = await this.db.query(
      `DELETE FROM envelopes WHERE ctid IN (
         SELECT ctid FROM envelopes WHERE expires_at_ms <= $1 LIMIT $2)
       RETURNING 1`,
      [nowMs, limit],
    );
    const sends = await this.db.query(
      `DELETE FROM sent_envelopes WHERE ctid IN (
         SELECT ctid FROM sent_envelopes WHERE expires_at_ms <= $1 LIMIT $2)
       RETURNING 1`,
      [nowMs, limit],
    );
    return { envelopes: env.length, sends: sends.length };
  }
}

/** Concatenates payloads, with 1-based offsets and lengths for SQL substring(). */
function packPayloads(envs: readonly StoredEnvelope[]): { blob: Buffer; offsets: number[]; lengths: number[] } {
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 1;
  for (const e of envs) {
    offsets.push(at);
    lengths.push(e.payload.length);
    at += e.payload.length;
  }
  return { blob: Buffer.concat(envs.map((e) => e.payload), at - 1), offsets, lengths };
}

/** A text[] literal with every element quoted, so any device id is safe inside it. */
function pgTextArray(items: readonly string[]): string {
  return `{${items.map((s) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(',')}}`;
}

/** Bound from Postgres: a NOTIFY payload must be shorter than 8000 bytes. */
const MAX_NOTIFY_PAYLOAD = 7900;

export type MailboxNotice =
  | { readonly node: string; readonly kind: 'tails'; readonly tails: ReadonlyArray<readonly [string, string, number]> }
  | { readonly node: string; readonly kind: 'all' }
  | { readonly node: string; readonly kind: 'connected'; readonly userId: string; readonly deviceId: string; readonly at: number };

export function encodeConnectedNotice(nodeId: string, userId: string, deviceId: string, at: number): string {
  return JSON.stringify({ node: nodeId, kind: 'connected', userId, deviceId, at });
}

export function encodeTailsNotice(nodeId: string, committed: readonly StoredEnvelope[]): string {
  const tails = new Map<string, [string, string, number]>();
  for (const c of committed) {
    const k = key(c.userId, c.deviceId);
    const t = tails.get(k);
    if (!t || t[2] < c.seq) tails.set(k, [c.userId, c.deviceId, c.seq]);
  }
  const text = JSON.stringify({ node: nodeId, kind: 'tails', tails: [...tails.values()] });
  // Too many mailboxes for one notice: tell listeners to check all their devices.
  return text.length <= MAX_NOTIFY_PAYLOAD ? text : JSON.stringify({ node: nodeId, kind: 'all' });
}

export function decodeNotice(payload: string): MailboxNotice | undefined {
  try {
    const v = JSON.parse(payload) as { node?: unknown; kind?: unknown; tails?: unknown; userId?: unknown; deviceId?: unknown; at?: unknown };
    if (typeof v.node !== 'string') return undefined;
    if (v.kind === 'all') return { node: v.node, kind: 'all' };
    if (v.kind === 'connected' && typeof v.userId === 'string' && typeof v.deviceId === 'string' && typeof v.at === 'number') {
      return { node: v.node, kind: 'connected', userId: v.userId, deviceId: v.deviceId, at: v.at };
    }
    if (v.kind === 'tails' && Array.isArray(v.tails)) {
      const tails = v.tails.filter(
        (t): t is [string, string, number] => Array.isArray(t) && typeof t[0] === 'string' && typeof t[1] === 'string' && typeof t[2] === 'number',
      );
      return { node: v.node, kind: 'tails', tails };
    }
  } catch {
    /* not ours */
  }
  return undefined;
}
