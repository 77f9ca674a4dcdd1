/**
 * The audit suite's `append` phase: receipts appended to the relay's log store on a
 * fresh PostgreSQL database, exactly as the relay's sequencer does it — batches of up to
 * LOG_APPEND_BATCH_MAX leaves, one transaction each under the tree-head row lock (leaf
 * rows, party rows, the new complete Merkle nodes, the new head), one batch at a time,
 * each commit durable (synchronous_commit as the server has it). `log_append_per_s` is
 * leaves per second over the window, with `log_append_batch` leaves per batch.
 *
 * Not included: the HTTP request, the receipt's signature check and the delivery check
 * against the stored envelopes that admission does before a receipt reaches the sequencer
 * (`receipts_verified_per_s` measures a signature check; the e2e phase measures the whole
 * path under SDK load).
 */
import { appendLeaves, leafHash, treeHash } from '../../crypto/tlog/index.js';
import { nativeBackend, nobleBackend } from '../../crypto/primitives/index.js';
import { LogStore, type LeafInput, type TreeMath } from '../../server/log/store.js';
import { LOG_APPEND_BATCH_MAX } from '../../server/limits.js';
import { openPg } from '../../server/storage/pg.js';
import { migrate } from '../../server/storage/migrate.js';
import { createDatabase, findPgServer } from './postgres.js';

const enc = new TextEncoder();

export async function appendPhase(opts: { duration: number; quick: boolean }): Promise<Record<string, number | string>> {
  const backend = nativeBackend ?? nobleBackend;
  const server = await findPgServer();
  const database = await createDatabase(server, 'logappend');
  const db = await openPg({ connectionString: database.url, maxConnections: 2, timeoutMs: 30_000 });
  try {
    await migrate(db);
    const store = new LogStore(db);
    // A receipt of the size the SDK signs for a one-entry batch, made distinct per leaf.
    const body = `eyJhbGciOiJFZERTQSJ9.${'x'.repeat(560)}`;
    let n = 0;
    const batch = (size: number): LeafInput[] =>
      Array.from({ length: size }, () => {
        const receipt = `${body}.${(n++).toString(36).padStart(86, '0')}`;
        return { leafHash: leafHash(enc.encode(receipt), backend), receipt, recipientUser: 'bench-recipient', recipientDevice: 'dRecipientDev01', parties: ['bench-recipient', 'bench-sender'] };
      });
    const math: TreeMath = {
      append: (size, hashes, read) => appendLeaves(size, hashes, read, backend),
      root: (size, read) => treeHash(size, read, backend),
    };
    const append = (items: readonly LeafInput[]) => store.append(items, Date.now(), math);
    // Warm-up, then the window.
    const warmUntil = performance.now() + (opts.quick ? 300 : 1000);
    while (performance.now() < warmUntil) await append(batch(LOG_APPEND_BATCH_MAX));
    const t0 = performance.now();
    const until = t0 + opts.duration * 1000;
    let appended = 0;
    let batches = 0;
    while (performance.now() < until) {
      await append(batch(LOG_APPEND_BATCH_MAX));
      appended += LOG_APPEND_BATCH_MAX;
      batches++;
    }
    const perSecond = (appended * 1000) / (performance.now() - t0);
    const head = await store.treeHead();
    console.error(`[audit bench] appended ${appended} leaves in ${batches} batches: ${Math.round(perSecond)} leaves/s (tree of ${head.size})`);
    return { log_append_per_s: Math.round(perSecond), log_append_batch: LOG_APPEND_BATCH_MAX, log_append_tree_size: head.size };
  } finally {
    await db.close();
    await database.drop();
  }
}
