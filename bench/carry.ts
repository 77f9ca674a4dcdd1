/**
 * Carry benchmark: `npm run bench -- carry [--json] [--devices <n>] [--per-device <n>]
 * [--acked-devices <n>]`.
 *
 * What retirement costs when devices are offline: `--devices` mailboxes (default 100)
 * each hold `--per-device` unacknowledged envelopes of 1 KiB (default 2,000: 200,000
 * envelopes, 200 MiB of ciphertext) in one partition, which is then retired through
 * the store (`MailboxStore.retire`, on PostgreSQL) at the relay's defaults. The same
 * backlog is then built again in a fresh database and carried in one transaction (a
 * step as large as the backlog: how the drain worked before it was stepped), side by
 * side in the same run. `--acked-devices` more mailboxes (default 0) get `--per-device`
 * envelopes in the same partition and acknowledge them all, as online devices do: the
 * drain walks their part of the index but carries and locks nothing of theirs. Results:
 * - `carry_envelopes`, `carry_per_s` (envelopes carried per second of drain steps);
 * - `step_ms_max`, `step_ms_p50`, `steps`: the stepped drain's transactions that carried;
 * - `last_step_ms`: the step that found nothing left to carry (the walk over every
 *   mailbox of the partition, and the expired credited);
 * - `one_tx_ms`: the whole backlog in one transaction;
 * - `step_vs_limit`, `one_tx_vs_limit`: those against the relay's database answer limit
 *   (HERMETIC_DB_TIMEOUT_MS, 10 s by default): a drain step beyond it is given up.
 */
import crypto from 'node:crypto';
import { DirectoryStore } from '../server/directory/store.js';
import { MAX_CARRIED_BYTES_PER_STEP, MAX_CARRIED_PER_STEP } from '../server/limits.js';
import { MailboxStore, type SendItem } from '../server/mailbox/store.js';
import type { Database, SqlExecutor } from '../server/storage/database.js';
import { loadMigrations, migrate } from '../server/storage/migrate.js';
import { openPg } from '../server/storage/pg.js';
import { TestDevice } from '../test/helpers/device.js';
import { enrolInStore } from '../test/helpers/storage.js';
import { Cleanup } from './lib/cleanup.js';
import { readOptions } from './lib/options.js';
import { createDatabase, findPgServer } from './lib/postgres.js';
import { round } from './relay.js';
import type { BenchResults } from './run.js';

const PAYLOAD_BYTES = 1024;
/** The relay's default database answer limit (server/config.ts). */
const ANSWER_LIMIT_MS = 10_000;
const AGE_MS = 120_000;
/** SENDs per stored batch while building the backlog. */
const BUILD_BATCH = 512;

function log(msg: string): void {
  process.stderr.write(`[carry] ${msg}\n`);
}

/** A database with the backlog built, and a store whose drain steps are timed. */
async function backlog(cleanup: Cleanup, label: string, devices: number, ackedDevices: number, perDevice: number, carryRows: number, carryBytes: number) {
  const server = await findPgServer();
  const tdb = await createDatabase(server, label);
  cleanup.add(`drop database ${tdb.name}`, () => tdb.drop());
  // An answer limit of an hour: the one-transaction drain is measured past the relay's.
  const db = await openPg({ connectionString: tdb.url, maxConnections: 4, timeoutMs: 3_600_000 });
  cleanup.add(`close ${tdb.name}`, () => db.close());
  await migrate(db, loadMigrations());
  const directory = new DirectoryStore(db);
  const users = Array.from({ length: devices }, (_, i) => `offline${i}`);
  const online = Array.from({ length: ackedDevices }, (_, i) => `online${i}`);
  for (const u of [...users, ...online]) await enrolInStore(directory, new TestDevice(u, 'd1'));
  let clock = Date.now();
  const stepsMs: number[] = [];
  const lastStepMs: number[] = [];
  const timed = new Proxy(db, {
    get(target, prop) {
      if (prop === 'transaction') {
        return <T>(fn: (tx: SqlExecutor) => Promise<T>) =>
          target.transaction(async (tx) => {
            const t0 = performance.now();
            const query = async <R extends object>(sql: string, params?: Parameters<SqlExecutor['query']>[1]): Promise<R[]> => {
              const rows = await tx.query<R>(sql, params);
              // The steps that carried, and the last step of the backlog's partition (the
              // empty partitions made ahead drain too, in a step each).
              if (sql.includes('hermetic_drain_partition')) {
                const r = rows[0] as { r_carried?: unknown; r_done?: unknown } | undefined;
                if (Number(r?.r_carried ?? 0) > 0) stepsMs.push(performance.now() - t0);
                if (r?.r_done === true && params?.[0] === backlogPartition) lastStepMs.push(performance.now() - t0);
              }
              return rows;
            };
            return fn({ ...tx, query });
          });
      }
      const v: unknown = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as Database;
  const store = new MailboxStore(timed, label, {
    now: () => clock,
    maxClockSkewMs: Infinity,
    quota: { maxBytes: 2 ** 40, maxEnvelopes: 2 ** 30 },
    retention: { retirementAgeMs: AGE_MS, receiptWindowMs: 0, carryStep: { rows: carryRows, bytes: carryBytes } },
  });
  // Every envelope in the partition of `clock`.
  const payload = crypto.randomBytes(PAYLOAD_BYTES);
  const recipients = [...users, ...online];
  const all = recipients.length * perDevice;
  for (let done = 0; done < all; ) {
    const items: SendItem[] = [];
    for (let k = 0; k < BUILD_BATCH && done < all; k++, done++) {
      items.push({
        senderUserId: 'sender',
        senderDeviceId: 's1',
        envelopeId: crypto.randomBytes(16),
        contentHash: crypto.randomBytes(32),
        recipientUserId: recipients[done % recipients.length]!,
        targets: [{ deviceId: 'd1', payload }],
        ttlSeconds: 86_400,
      });
    }
    const { results } = await store.storeBatch(items);
    const refused = results.find((r) => !r.ok);
    if (refused && !refused.ok) throw new Error(`backlog refused: ${refused.error.code}`);
  }
  for (let i = 0; i < online.length; i += BUILD_BATCH) {
    await store.ackBatch(online.slice(i, i + BUILD_BATCH).map((userId) => ({ userId, deviceId: 'd1', seq: perDevice })));
  }
  const total = devices * perDevice;
  const [part] = await db.query<{ name: string }>('SELECT name FROM envelope_partitions WHERE from_ms <= $1 AND to_ms > $1', [clock]);
  const backlogPartition = part!.name;
  // Some time for the database to settle its writes before the drain is timed.
  await db.query('CHECKPOINT');
  return {
    stepsMs,
    lastStepMs,
    /** Retirement passes with the clock past the partition's age, until it is drained. */
    async retireAll(): Promise<{ carried: number; passes: number }> {
      clock += 2 * AGE_MS;
      let carried = 0;
      let passes = 0;
      for (;;) {
        const r = await store.retire();
        passes++;
        if (r.drainFailed) throw r.drainFailed.error;
        carried += r.carried;
        if ((carried >= total && lastStepMs.length > 0) || passes > 10_000) return { carried, passes };
      }
    },
  };
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const { num } = readOptions(args, ['--devices', '--per-device', '--acked-devices']);
  const devices = num('--devices', 100, 1, 100_000);
  const perDevice = num('--per-device', 2_000, 1, 100_000);
  const ackedDevices = num('--acked-devices', 0, 0, 1_000_000);
  const cleanup = new Cleanup();
  try {
    log(`building ${devices} × ${perDevice} envelopes (stepped)`);
    const stepped = await backlog(cleanup, 'carry_steps', devices, ackedDevices, perDevice, MAX_CARRIED_PER_STEP, MAX_CARRIED_BYTES_PER_STEP);
    const s = await stepped.retireAll();
    const steps = [...stepped.stepsMs].sort((a, b) => a - b);
    const stepTotal = steps.reduce((a, b) => a + b, 0);
    log(`stepped: ${s.carried} carried in ${steps.length} steps, ${Math.round(stepTotal)} ms`);
    log(`building ${devices} × ${perDevice} envelopes (one transaction)`);
    const whole = await backlog(cleanup, 'carry_one_tx', devices, ackedDevices, perDevice, 2 ** 31 - 1, Number.MAX_SAFE_INTEGER);
    const w = await whole.retireAll();
    const oneTx = whole.stepsMs.reduce((a, b) => a + b, 0);
    log(`one transaction: ${w.carried} carried in ${Math.round(oneTx)} ms`);
    return {
      carry_envelopes: s.carried,
      carry_per_s: Math.round((s.carried * 1000) / stepTotal),
      steps: steps.length,
      step_ms_p50: round(steps[Math.floor(steps.length / 2)]!, 1),
      step_ms_max: round(steps[steps.length - 1]!, 1),
      last_step_ms: round(stepped.lastStepMs[0] ?? 0, 1),
      one_tx_ms: round(oneTx, 1),
      step_vs_limit: round(steps[steps.length - 1]! / ANSWER_LIMIT_MS, 3),
      one_tx_vs_limit: round(oneTx / ANSWER_LIMIT_MS, 3),
      step_rows: MAX_CARRIED_PER_STEP,
      step_bytes: MAX_CARRIED_BYTES_PER_STEP,
      devices,
      acked_devices: ackedDevices,
      per_device: perDevice,
      payload_bytes: PAYLOAD_BYTES,
    };
  } finally {
    await cleanup.run();
  }
}
