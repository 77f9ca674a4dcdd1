/**
 * The expiry sweeper's pace (`npm run bench -- relay`, phase `sweep`): a fresh database
 * is filled with expired SEND records, each with its 1 KiB envelope still stored (the
 * worst case: a recipient that never came back), spread over many mailboxes, as
 * hermetic_store_sends writes them. Then half of them are removed one batch at a time
 * and the other half by the relay's own sweeper (MailboxService.sweep: its batch size
 * and concurrency, no time budget), and both rates are measured. (The second half's
 * index scans pass over the first half's deleted entries; the first half's do not.) At the relay's maximum send rate every SEND leaves one record to sweep, so
 * to keep up the sweeper must remove at least `relay_per_s` records per second while
 * behind (ticks of SWEEP_TICK_BUDGET_MS, SWEEP_BEHIND_PAUSE_MS apart).
 */
import pino from 'pino';
import { SWEEP_BATCH, SWEEP_BEHIND_PAUSE_MS, SWEEP_CONCURRENCY, SWEEP_INTERVAL_MS, SWEEP_TICK_BUDGET_MS } from '../../server/limits.js';
import { MailboxService } from '../../server/mailbox/service.js';
import { MailboxStore } from '../../server/mailbox/store.js';
import { openPg } from '../../server/storage/pg.js';
import type { BenchResults } from '../run.js';
import { withClient } from './postgres.js';

export interface SweepRun {
  readonly records: number;
  readonly mailboxes: number;
  readonly payloadBytes: number;
}

/** Fills `databaseUrl` (migrated, empty) with expired records and sweeps them. */
export async function measureSweep(databaseUrl: string, run: SweepRun, log: (msg: string) => void, beforeSweep: () => Promise<void>): Promise<BenchResults> {
  const expiredAt = 1_000_000;
  await withClient(databaseUrl, async (c) => {
    // In chunks, so that no single statement holds the whole fill in memory.
    const chunk = 50_000;
    for (let from = 0; from < run.records; from += chunk) {
      const to = Math.min(run.records, from + chunk) - 1;
      await c.query(
        `WITH s AS (
           SELECT g, 'recipient-' || (g % $2) AS u, 1 + g / $2 AS seq,
                  decode(lpad(to_hex(g), 32, '0'), 'hex') AS id
             FROM generate_series($3::int, $4::int) AS g
         ), e AS (
           INSERT INTO envelopes (user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, payload)
           SELECT u, 'dev-1', seq, id, 'sender-' || (g % $2), 'dev-1', 0, $1, decode(repeat(lpad(to_hex(g % 256), 2, '0'), $5), 'hex') FROM s
         )
         INSERT INTO sent_envelopes (sender_user, sender_device, envelope_id, content_hash, recipient_user, device_ids, seqs, expires_at_ms)
         SELECT 'sender-' || (g % $2), 'dev-1', id, decode(repeat('00', 32), 'hex'), u, ARRAY['dev-1'], ARRAY[seq], $1 FROM s`,
        [expiredAt, run.mailboxes, from, to, run.payloadBytes],
      );
    }
    await c.query('VACUUM ANALYZE envelopes');
    await c.query('VACUUM ANALYZE sent_envelopes');
  });
  log(`sweep: ${run.records} expired records with their envelopes stored`);
  await beforeSweep();

  const db = await openPg({ connectionString: databaseUrl, maxConnections: SWEEP_CONCURRENCY + 1, timeoutMs: 60_000 });
  try {
    const store = new MailboxStore(db, 'bench-sweeper', () => expiredAt + 1);
    // The first half with one batch at a time (store.sweepExpired in a loop, as one
    // worker of the sweeper does), the second half with the sweeper itself: its tick
    // with SWEEP_CONCURRENCY batches at once and no time budget.
    const half = Math.floor(run.records / 2);
    const t0 = performance.now();
    let one = 0;
    let oneBatches = 0;
    while (one < half) {
      one += (await store.sweepExpired(SWEEP_BATCH)).sends;
      oneBatches++;
    }
    const oneSeconds = (performance.now() - t0) / 1000;
    const service = new MailboxService({
      db,
      store,
      nodeId: 'bench-sweeper',
      logger: pino({ level: 'silent' }),
      sweep: { batch: SWEEP_BATCH, budgetMs: Number.POSITIVE_INFINITY, concurrency: SWEEP_CONCURRENCY },
    });
    const t1 = performance.now();
    const r = await service.sweep();
    const seconds = (performance.now() - t1) / 1000;
    if (one + r.sends !== run.records) throw new Error(`sweep: removed ${one + r.sends} records of ${run.records}`);
    const perSecond = Math.round(r.sends / seconds);
    const onePerSecond = Math.round(one / oneSeconds);
    log(`sweep: ${onePerSecond} records/s one batch at a time, ${perSecond} records/s with ${SWEEP_CONCURRENCY} at once`);
    return {
      sweep_per_s: perSecond,
      sweep_one_worker_per_s: onePerSecond,
      sweep_records: run.records,
      sweep_concurrency: SWEEP_CONCURRENCY,
      sweep_batch_ms: Math.round((1000 * oneSeconds) / oneBatches),
      // Sustained while behind: ticks of SWEEP_TICK_BUDGET_MS, SWEEP_BEHIND_PAUSE_MS apart.
      sweep_sustained_per_s: Math.round((perSecond * SWEEP_TICK_BUDGET_MS) / (SWEEP_TICK_BUDGET_MS + SWEEP_BEHIND_PAUSE_MS)),
      // The sweeper before: one batch per tick.
      sweep_one_batch_per_tick_per_s: Math.round((SWEEP_BATCH * 1000) / SWEEP_INTERVAL_MS),
    };
  } finally {
    await db.close();
  }
}
