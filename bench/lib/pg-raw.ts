/**
 * The database's own ceiling for the relay's hot-path write: 1 KiB envelope rows (the
 * `envelopes` table, created by the relay's migrations) inserted with the same multi-row
 * statement the relay uses (arrays + unnest), one autocommitted statement — one commit —
 * per batch, from several connections in parallel, each writing its own mailboxes with
 * increasing sequences (no conflicts, no waits between connections).
 *
 * Client work is kept out of the way: every array parameter except the sequences is
 * serialized to its PostgreSQL text form once, so the loop measures the server parsing,
 * inserting, WAL-logging and flushing rows, not the driver hex-encoding payloads.
 *
 * The `concatenated` variant (the relay's way on PostgreSQL) passes the batch's payloads
 * as one binary bytea parameter plus offsets and lengths, cut apart by substring() on
 * the server: no hex text on either side. The benchmark tries both and keeps the faster.
 */
import crypto from 'node:crypto';
import pg from 'pg';

export interface RawConfig {
  /** Rows per INSERT (and per commit). */
  readonly batch: number;
  readonly connections: number;
}

export type PayloadEncoding = 'arrays' | 'concatenated';

export interface RawRun {
  readonly config: RawConfig;
  readonly rowsPerSecond: number;
  readonly commitsPerSecond: number;
  readonly rows: number;
  readonly seconds: number;
}

// slot_ms 0: every row in the partition the migrations create (envelopes_0), which has
// the table's indexes; size as the relay stores it. Without idempotency columns: a bare
// insert.
//
// Keyed: the same rows as the relay stores a SEND to one device, each with its content
// hash, so that it also enters the idempotency index (envelopes_send, led by the envelope
// id, which clients choose at random; the ids are fresh in every batch, as the index is
// unique). What the design's own decisions cost beside the bare insert.
function insertSql(encoding: PayloadEncoding, keyed: boolean): string {
  const hashColumn = keyed ? ', send_hash' : '';
  const hashValue = keyed ? ', h' : '';
  if (encoding === 'concatenated') {
    // The hashes, like the payloads, as one binary parameter (as the relay passes them).
    const hash = keyed ? `, substring($12::bytea FROM ((n - 1) * ${CONTENT_HASH_BYTES} + 1)::int FOR ${CONTENT_HASH_BYTES})` : '';
    return `INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size${hashColumn}, payload)
  SELECT 0, u, d, s, e, su, sd, st, ex, l${hash}, substring($9::bytea FROM o FOR l)
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::int8[], $8::int8[], $10::int4[], $11::int4[]) WITH ORDINALITY
      AS v(u, d, s, e, su, sd, st, ex, o, l, n)`;
  }
  return `INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size${hashColumn}, payload)
  SELECT 0, u, d, s, e, su, sd, st, ex, octet_length(p)${hashValue}, p
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::bytea[]${keyed ? ', $10::bytea[]' : ''})
      AS v(u, d, s, e, su, sd, st, ex, p${hashValue})`;
}

/** The size of an envelope id and of a content hash, as the relay stores them. */
const ENVELOPE_ID_BYTES = 16;
const CONTENT_HASH_BYTES = 32;

function textArray(items: readonly string[]): string {
  return `{${items.map((s) => `"${s}"`).join(',')}}`;
}

function byteaArray(items: readonly Buffer[]): string {
  // Each element in bytea hex form (\x...), its backslash escaped inside the array literal.
  return `{${items.map((b) => `"\\\\x${b.toString('hex')}"`).join(',')}}`;
}

interface Writer {
  readonly client: pg.Client;
  readonly fixed: { users: string; devices: string; ids: string; senders: string; senderDevices: string; stored: string; expires: string; payloads: string };
  /** The same payloads for the concatenated variant: one buffer, 1-based offsets, lengths. */
  readonly concatenated: { payloads: Buffer; offsets: string; lengths: string };
  /** The content hashes for the keyed variant (one per row). */
  readonly hashes: readonly Buffer[];
  readonly encoding: PayloadEncoding;
  /** Rows with their idempotency keys (see insertSql). */
  readonly keyed: boolean;
  readonly sql: string;
  readonly mailboxes: number;
  batchNo: number;
}

async function openWriter(url: string, index: number, batch: number, mailboxes: number, payloadBytes: number, encoding: PayloadEncoding, keyed: boolean): Promise<Writer> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const now = Date.now();
  const rows = Array.from({ length: batch }, (_, k) => k);
  const payloads = rows.map(() => crypto.randomBytes(payloadBytes));
  return {
    client,
    mailboxes,
    batchNo: 0,
    encoding,
    keyed,
    sql: insertSql(encoding, keyed),
    concatenated: {
      payloads: Buffer.concat(payloads),
      offsets: `{${rows.map((k) => k * payloadBytes + 1).join(',')}}`,
      lengths: `{${rows.map(() => payloadBytes).join(',')}}`,
    },
    hashes: rows.map(() => crypto.randomBytes(CONTENT_HASH_BYTES)),
    fixed: {
      users: textArray(rows.map((k) => `recipient-${index}-${k % mailboxes}`)),
      devices: textArray(rows.map(() => 'dev-1')),
      ids: byteaArray(rows.map(() => crypto.randomBytes(ENVELOPE_ID_BYTES))),
      senders: textArray(rows.map((k) => `sender-${index}-${k % mailboxes}`)),
      senderDevices: textArray(rows.map(() => 'dev-1')),
      stored: `{${rows.map(() => now).join(',')}}`,
      expires: `{${rows.map(() => now + 3_600_000).join(',')}}`,
      payloads: byteaArray(payloads),
    },
  };
}

/** `count` random envelope ids as a bytea[] literal, from one random draw. */
function freshIds(count: number): string {
  const hex = crypto.randomBytes(count * ENVELOPE_ID_BYTES).toString('hex');
  const width = ENVELOPE_ID_BYTES * 2;
  const items: string[] = new Array(count);
  for (let k = 0; k < count; k++) items[k] = `"\\\\x${hex.slice(k * width, (k + 1) * width)}"`;
  return `{${items.join(',')}}`;
}

/** One batch: row k goes to mailbox k mod M, sequences continue from the previous batch. */
function insertBatch(w: Writer, batch: number): Promise<unknown> {
  const perBox = Math.ceil(batch / w.mailboxes);
  const base = w.batchNo++ * perBox + 1;
  const seqs: number[] = new Array(batch);
  for (let k = 0; k < batch; k++) seqs[k] = base + Math.floor(k / w.mailboxes);
  const f = w.fixed;
  const seqArray = `{${seqs.join(',')}}`;
  // Envelope ids are fresh per batch when keyed (the idempotency index is unique).
  const ids = w.keyed ? freshIds(batch) : f.ids;
  if (w.encoding === 'concatenated') {
    const c = w.concatenated;
    const keys = w.keyed ? [Buffer.concat(w.hashes)] : [];
    return w.client.query(w.sql, [f.users, f.devices, seqArray, ids, f.senders, f.senderDevices, f.stored, f.expires, c.payloads, c.offsets, c.lengths, ...keys]);
  }
  const keys = w.keyed ? [byteaArray(w.hashes)] : [];
  return w.client.query(w.sql, [f.users, f.devices, seqArray, ids, f.senders, f.senderDevices, f.stored, f.expires, f.payloads, ...keys]);
}

/**
 * Inserts for `warmupMs` plus `seconds`, counting rows committed in the second part.
 * `mailboxes` is the total number of mailboxes written (split across connections).
 */
export async function rawInsertRun(
  url: string,
  config: RawConfig,
  opts: {
    seconds: number;
    warmupMs: number;
    mailboxes: number;
    payloadBytes: number;
    encoding?: PayloadEncoding;
    /** Rows with their idempotency keys (see insertSql). */
    keyed?: boolean;
    /** Called when the counted part starts and when it ends (connections still open). */
    onWindow?: (edge: 'start' | 'end') => void;
  },
): Promise<RawRun> {
  const perConn = Math.max(1, Math.ceil(opts.mailboxes / config.connections));
  const writers = await Promise.all(
    Array.from({ length: config.connections }, (_, i) => openWriter(url, i, config.batch, perConn, opts.payloadBytes, opts.encoding ?? 'arrays', opts.keyed ?? false)),
  );
  try {
    let counting = false;
    let stopping = false;
    let rows = 0;
    let commits = 0;
    const loops = writers.map(async (w) => {
      while (!stopping) {
        await insertBatch(w, config.batch);
        if (counting && !stopping) {
          rows += config.batch;
          commits++;
        }
      }
    });
    await new Promise((r) => setTimeout(r, opts.warmupMs));
    counting = true;
    opts.onWindow?.('start');
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, opts.seconds * 1000));
    stopping = true;
    const seconds = (performance.now() - t0) / 1000;
    opts.onWindow?.('end');
    await Promise.all(loops);
    return { config, rowsPerSecond: Math.round(rows / seconds), commitsPerSecond: Math.round(commits / seconds), rows, seconds };
  } finally {
    await Promise.all(writers.map((w) => w.client.end().catch(() => undefined)));
  }
}
