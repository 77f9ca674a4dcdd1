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
// the table's indexes; size as the relay stores it. No idempotency columns: a bare insert.
const INSERT = `INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size, payload)
  SELECT 0, u, d, s, e, su, sd, st, ex, octet_length(p), p
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::bytea[])
      AS v(u, d, s, e, su, sd, st, ex, p)`;

const INSERT_CONCATENATED = `INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size, payload)
  SELECT 0, u, d, s, e, su, sd, st, ex, l, substring($9::bytea FROM o FOR l)
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::int8[], $8::int8[], $10::int4[], $11::int4[])
      AS v(u, d, s, e, su, sd, st, ex, o, l)`;

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
  readonly encoding: PayloadEncoding;
  readonly mailboxes: number;
  batchNo: number;
}

async function openWriter(url: string, index: number, batch: number, mailboxes: number, payloadBytes: number, encoding: PayloadEncoding): Promise<Writer> {
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
    concatenated: {
      payloads: Buffer.concat(payloads),
      offsets: `{${rows.map((k) => k * payloadBytes + 1).join(',')}}`,
      lengths: `{${rows.map(() => payloadBytes).join(',')}}`,
    },
    fixed: {
      users: textArray(rows.map((k) => `recipient-${index}-${k % mailboxes}`)),
      devices: textArray(rows.map(() => 'dev-1')),
      ids: byteaArray(rows.map(() => crypto.randomBytes(16))),
      senders: textArray(rows.map((k) => `sender-${index}-${k % mailboxes}`)),
      senderDevices: textArray(rows.map(() => 'dev-1')),
      stored: `{${rows.map(() => now).join(',')}}`,
      expires: `{${rows.map(() => now + 3_600_000).join(',')}}`,
      payloads: byteaArray(payloads),
    },
  };
}

/** One batch: row k goes to mailbox k mod M, sequences continue from the previous batch. */
function insertBatch(w: Writer, batch: number): Promise<unknown> {
  const perBox = Math.ceil(batch / w.mailboxes);
  const base = w.batchNo++ * perBox + 1;
  const seqs: number[] = new Array(batch);
  for (let k = 0; k < batch; k++) seqs[k] = base + Math.floor(k / w.mailboxes);
  const f = w.fixed;
  const seqArray = `{${seqs.join(',')}}`;
  if (w.encoding === 'concatenated') {
    const c = w.concatenated;
    return w.client.query(INSERT_CONCATENATED, [f.users, f.devices, seqArray, f.ids, f.senders, f.senderDevices, f.stored, f.expires, c.payloads, c.offsets, c.lengths]);
  }
  return w.client.query(INSERT, [f.users, f.devices, seqArray, f.ids, f.senders, f.senderDevices, f.stored, f.expires, f.payloads]);
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
    /** Called when the counted part starts and when it ends (connections still open). */
    onWindow?: (edge: 'start' | 'end') => void;
  },
): Promise<RawRun> {
  const perConn = Math.max(1, Math.ceil(opts.mailboxes / config.connections));
  const writers = await Promise.all(
    Array.from({ length: config.connections }, (_, i) => openWriter(url, i, config.batch, perConn, opts.payloadBytes, opts.encoding ?? 'arrays')),
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
