/**
 * Relay benchmarks: `npm run bench -- relay [--json] [options]`.
 *
 * One run measures, in order:
 *
 * 1. `pg_raw_per_s` — the database's ceiling: 1 KiB rows inserted straight into a fresh
 *    database's `envelopes` table with multi-row INSERTs (arrays + unnest), one commit
 *    per batch, several connections in parallel. Both ways of passing the payloads are
 *    tried (a bytea[] array, and one binary parameter cut apart with substring(), which
 *    is what the relay does on PostgreSQL) with a few (batch, connections) settings each;
 *    the fastest is measured for the full duration.
 * 2. `p50_ms` / `p99_ms` — SEND-to-DELIVER latency for online recipients at an offered,
 *    open-loop 2,000 envelopes/s, on a relay child process with a fresh PostgreSQL
 *    database (sender and recipient in one load generator process, so one clock).
 * 3. `relay_per_s` — the same relay, driven by load generator processes: each sender
 *    pipelines SENDs (a bounded window of SENDs not yet answered STORED) to its own
 *    recipient device, whose connection acknowledges cumulatively; an envelope counts
 *    when its recipient acknowledges it.
 * 4. `pglite_relay_per_s` — (3) against the embedded default (PGlite in a fresh data
 *    directory).
 *
 * From the CPU split of the same run: `pg_raw_db_cpu_us_per_row` (PostgreSQL CPU per raw
 * inserted row), `pg_keyed_db_cpu_us_per_row` (the same, measured right after it in the
 * same setting, with each row carrying its idempotency key as the relay stores it: the
 * content hash, and an entry in the envelope-id index; `keyed_vs_raw` is the floor that
 * the design's own decisions put under `db_vs_raw`), `db_cpu_us_per_envelope` (PostgreSQL CPU per envelope delivered and
 * acknowledged through the relay) and `relay_cpu_us_per_envelope` (the relay process's).
 *
 * The relay runs as `npm start` runs it: compiled by the project's build into dist/ (at
 * the start of the run), with the same node flags; `BENCH_RELAY_FROM=source` in the
 * environment runs it from source through tsx instead (bench/lib/relay-process.ts), and
 * `BENCH_RELAY_LOG=<file>` appends the relay's log (JSON lines) to that file.
 *
 * Every phase warms up before it measures. Databases, processes and temporary
 * directories are removed at the end, also on failure or interrupt. Besides the
 * headline numbers each phase reports what explains them: CPU used by the relay, by
 * PostgreSQL and by the load generators, the relay's own statement and batch histograms
 * (/metrics), and PostgreSQL's commit and WAL counters.
 *
 * Options:
 *   --duration <s>          measured seconds per phase (default 10; --quick: 2)
 *   --quick                 short warm-ups, one pg_raw setting: a smoke check
 *   --only <phases>         comma list of pg_raw, latency, relay, pglite
 *   --pairs <n> / --generators <n> / --window <n>   throughput load shape (32 / 2 / 128)
 *   --raw-grid <b>x<c>,...  pg_raw settings to try (rows per batch x connections)
 *   --profile, --profile-out <file>   run the PostgreSQL relay under node --cpu-prof and
 *                           print its self time in the throughput window (and keep it)
 *   --db-setting <k>=<v>    experiments: ALTER DATABASE ... SET on the relay's database
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { systemRandom } from '../crypto/primitives/index.js';
import { Cleanup } from './lib/cleanup.js';
import { loadAverage } from './lib/machine.js';
import { type CpuSample, cpuSplit, sampleCpu, usPer } from './lib/cpu.js';
import { printProfile, summarizeProfile } from './lib/cpu-profile.js';
import type { BenchDevice } from './lib/device-socket.js';
import { type BenchIssuer, createIssuer } from './lib/issuer.js';
import { LoadGenerators } from './lib/load.js';
import { readOptions } from './lib/options.js';
import type { DevicePair, GeneratorReport, GeneratorSetup } from './lib/load-protocol.js';
import { type PgServer, counterDelta, createDatabase, findPgServer, readCounters, serverSettings, withClient } from './lib/postgres.js';
import { type PayloadEncoding, type RawConfig, type RawRun, rawInsertRun } from './lib/pg-raw.js';
import { counterDelta as promDelta, histogramDelta, histogramQuantile, parseSamples } from './lib/prometheus.js';
import { REPO_ROOT, type RelayChild, fetchMetrics, migrateDatabase, registerDevice, relayEnv, startRelayChild } from './lib/relay-process.js';
import { tsxSourceResolver } from './lib/source-maps.js';
import type { BenchResults } from './run.js';

const PAYLOAD_BYTES = 1024;

const PHASES = ['pg_raw', 'relay', 'latency', 'pglite'] as const;
type Phase = (typeof PHASES)[number];

interface Options {
  /** Measurement seconds of each phase. */
  readonly duration: number;
  /** Warm-up seconds before each throughput and latency measurement. */
  readonly warmup: number;
  readonly phases: ReadonlySet<Phase>;
  /** Sender→recipient device pairs driving the throughput phases. */
  readonly pairs: number;
  /** Load generator processes the pairs are split across. */
  readonly generators: number;
  /** SENDs in flight without a STORED answer, per sender. */
  readonly window: number;
  readonly ackEvery: number;
  readonly ackDelayMs: number;
  readonly latencyRate: number;
  readonly latencyPairs: number;
  /** (batch, connections) settings tried for pg_raw, and seconds per try. */
  readonly rawGrid: readonly RawConfig[];
  readonly rawTrySeconds: number;
  readonly profile: boolean;
  readonly profileOut: string | undefined;
  /** Experiments: settings applied to the relay's fresh database (ALTER DATABASE ... SET). */
  readonly dbSettings: ReadonlyArray<readonly [string, string]>;
}

/**
 * Settings tried for the raw ceiling, from a wider sweep on a 2-core machine (batches of
 * 128–2048 rows, 1–16 connections; docs/PERFORMANCE.md): PostgreSQL is CPU-bound there,
 * and 512–2048 rows on 2–8 connections form a plateau within noise of each other. One
 * connection leaves the server idle while each commit's WAL flush is waited for; smaller
 * batches pay per-statement and per-commit costs more often.
 */
const RAW_GRID: readonly RawConfig[] = [
  { batch: 512, connections: 4 },
  { batch: 1024, connections: 4 },
  { batch: 2048, connections: 4 },
  { batch: 1024, connections: 8 },
];

/** The throughput phase's default load shape (also what the sdk suite measures relay_per_s with). */
export const THROUGHPUT_DEFAULTS = { pairs: 32, generators: 2, window: 128, ackEvery: 32, ackDelayMs: 2 } as const;

function parseOptions(args: readonly string[]): Options {
  const { value, num, phases: only } = readOptions(args, ['--duration', '--quick', '--profile', '--profile-out', '--only', '--pairs', '--generators', '--window', '--raw-grid', '--db-setting']);
  const quick = args.includes('--quick');
  const duration = num('--duration', quick ? 2 : 10, 0.5, 600);
  const phases = only(PHASES);
  const gridArg = value('--raw-grid');
  const rawGrid = gridArg
    ? gridArg.split(',').map((s) => {
        const m = /^(\d+)x(\d+)$/.exec(s);
        if (!m) throw new Error('--raw-grid takes <batch>x<connections>,...');
        return { batch: Number(m[1]), connections: Number(m[2]) };
      })
    : quick
      ? [{ batch: 1024, connections: 4 }]
      : RAW_GRID;
  const profileOut = value('--profile-out');
  const dbSettings: Array<[string, string]> = [];
  args.forEach((a, i) => {
    if (a !== '--db-setting') return;
    const m = /^([a-z_]+(?:\.[a-z_]+)?)=([A-Za-z0-9_.]+)$/.exec(args[i + 1] ?? '');
    if (!m) throw new Error('--db-setting takes <name>=<value>');
    dbSettings.push([m[1]!, m[2]!]);
  });
  return {
    duration,
    warmup: quick ? 1 : 3,
    phases,
    pairs: num('--pairs', THROUGHPUT_DEFAULTS.pairs, 1, 4096),
    generators: num('--generators', THROUGHPUT_DEFAULTS.generators, 1, 16),
    window: num('--window', THROUGHPUT_DEFAULTS.window, 1, 65_536),
    ackEvery: THROUGHPUT_DEFAULTS.ackEvery,
    ackDelayMs: THROUGHPUT_DEFAULTS.ackDelayMs,
    latencyRate: 2000,
    latencyPairs: 8,
    rawGrid,
    rawTrySeconds: quick ? 1 : 3,
    profile: args.includes('--profile') || profileOut !== undefined,
    profileOut,
    dbSettings,
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const round = (v: number, digits = 2): number => Math.round(v * 10 ** digits) / 10 ** digits;
/** process.hrtime in µs: the clock of V8's profile timestamps. */
export const hrMicros = (): number => Number(process.hrtime.bigint() / 1000n);

function log(msg: string): void {
  console.error(`[relay bench] ${msg}`);
}

// ---------------------------------------------------------------- devices

export async function makeDevices(issuer: BenchIssuer, prefix: string, n: number): Promise<DevicePair[]> {
  const device = async (userId: string): Promise<BenchDevice> => ({
    userId,
    deviceId: 'dev-1',
    seed: Buffer.from(systemRandom(32)).toString('hex'),
    token: await issuer.mint(userId),
  });
  return Promise.all(Array.from({ length: n }, async (_, i) => ({ sender: await device(`${prefix}sender-${i}`), recipient: await device(`${prefix}recipient-${i}`) })));
}

export async function registerAll(relay: RelayChild, pairs: readonly DevicePair[]): Promise<void> {
  const devices = pairs.flatMap((p) => [p.sender, p.recipient]);
  // A few at a time: registration is setup, not what is measured.
  for (let i = 0; i < devices.length; i += 8) await Promise.all(devices.slice(i, i + 8).map((d) => registerDevice(relay.baseUrl, d)));
}

export function split<T>(items: readonly T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((it, i) => out[i % parts]!.push(it));
  return out.filter((p) => p.length > 0);
}

// ---------------------------------------------------------------- phases

interface Window {
  readonly fromUs: number;
  readonly toUs: number;
}

/** The load shape of the throughput phase (the relay suite's options carry it). */
export type ThroughputShape = Pick<Options, 'duration' | 'warmup' | 'generators' | 'window' | 'ackEvery' | 'ackDelayMs'>;

interface ThroughputOutcome {
  readonly perSecond: number;
  readonly envelopes: number;
  readonly window: Window;
  readonly details: BenchResults;
}

function checkErrors(reports: readonly GeneratorReport[], what: string): void {
  const errors: Record<string, number> = {};
  for (const r of reports) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  if (Object.keys(errors).length > 0) throw new Error(`${what}: the relay answered with errors ${JSON.stringify(errors)}`);
}

/** Statement timings and group-commit sizes from the relay's /metrics over the window. */
function relayMetricsDetails(prefix: string, before: string, after: string, seconds: number): BenchResults {
  const a = parseSamples(before);
  const b = parseSamples(after);
  const batch = histogramDelta(a, b, 'hermetic_send_batch_size');
  const stmt = histogramDelta(a, b, 'hermetic_db_query_seconds');
  const sends = promDelta(a, b, 'hermetic_frames_in_total{type="send"}');
  const acks = promDelta(a, b, 'hermetic_frames_in_total{type="ack"}');
  return {
    [`${prefix}send_batches_per_s`]: Math.round(batch.count / seconds),
    [`${prefix}send_batch_mean`]: round(batch.count > 0 ? batch.sum / batch.count : 0, 1),
    [`${prefix}acks_in_per_s`]: Math.round(acks / seconds),
    [`${prefix}sends_in_per_s`]: Math.round(sends / seconds),
    [`${prefix}db_stmts_per_s`]: Math.round(stmt.count / seconds),
    [`${prefix}db_stmt_mean_ms`]: round(stmt.count > 0 ? (1000 * stmt.sum) / stmt.count : 0, 3),
    [`${prefix}db_stmt_p50_ms`]: round(1000 * histogramQuantile(stmt, 0.5), 3),
    [`${prefix}db_stmt_p99_ms`]: round(1000 * histogramQuantile(stmt, 0.99), 3),
    // Statement-seconds per second: how many statements were in flight on average.
    [`${prefix}db_stmts_in_flight`]: round(stmt.sum / seconds, 2),
  };
}

export async function measureThroughput(
  cleanup: Cleanup,
  relay: RelayChild,
  pairs: readonly DevicePair[],
  opts: ThroughputShape,
  prefix: string,
  counters?: { url: string; database: string },
  load: { ttlSeconds?: number; duration?: number; during?: () => Promise<void> } = {},
): Promise<ThroughputOutcome> {
  const setups: GeneratorSetup[] = split(pairs, opts.generators).map((ps) => ({
    wsUrl: relay.wsUrl,
    mode: 'throughput',
    pairs: ps,
    payloadBytes: PAYLOAD_BYTES,
    window: opts.window,
    ackEvery: opts.ackEvery,
    ackDelayMs: opts.ackDelayMs,
    ratePerSecond: 0,
    ...(load.ttlSeconds === undefined ? {} : { ttlSeconds: load.ttlSeconds }),
  }));
  let closeGens: (() => Promise<void>) | undefined;
  const gens = await LoadGenerators.start(setups, (close) => (closeGens = cleanup.add('load generators', close)));
  try {
    gens.startSending();
    await sleep(opts.warmup * 1000);
    const pgc = counters ? await withClient(counters.url, (c) => readCounters(c, counters.database)) : undefined;
    const m0 = await fetchMetrics(relay.baseUrl);
    const cpu0: CpuSample = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    const fromUs = hrMicros();
    gens.beginMeasure();
    await sleep((load.duration ?? opts.duration) * 1000);
    // Read while the load still runs.
    await load.during?.();
    const reports = await gens.stop();
    const toUs = hrMicros();
    const cpu1 = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    const m1 = await fetchMetrics(relay.baseUrl);
    const pgc1 = counters ? await withClient(counters.url, (c) => readCounters(c, counters.database)) : undefined;
    checkErrors(reports, `${prefix || 'relay'} throughput`);
    const perSecond = reports.reduce((s, r) => s + (r.acked * 1000) / r.elapsedMs, 0);
    const envelopes = reports.reduce((s, r) => s + r.acked, 0);
    const seconds = (toUs - fromUs) / 1e6;
    const details: BenchResults = { ...relayMetricsDetails(prefix, m0, m1, seconds) };
    for (const [k, v] of Object.entries(cpuSplit(cpu0, cpu1))) details[`${prefix}${k}`] = v;
    if (pgc && pgc1) {
      const d = counterDelta(pgc, pgc1);
      details[`${prefix}pg_commits_per_s`] = Math.round(d.commits / seconds);
      details[`${prefix}pg_wal_syncs_per_s`] = Math.round(d.walSyncs / seconds);
      details[`${prefix}pg_wal_bytes_per_env`] = envelopes > 0 ? Math.round(d.walBytes / envelopes) : 0;
    }
    return { perSecond, envelopes, window: { fromUs, toUs }, details };
  } finally {
    await closeGens?.();
  }
}

async function measureLatency(cleanup: Cleanup, relay: RelayChild, pairs: readonly DevicePair[], opts: Options): Promise<BenchResults> {
  const setup: GeneratorSetup = {
    wsUrl: relay.wsUrl,
    mode: 'latency',
    pairs,
    payloadBytes: PAYLOAD_BYTES,
    // Open loop: this only stops a stalled relay from buffering without bound.
    window: 1024,
    ackEvery: opts.ackEvery,
    ackDelayMs: opts.ackDelayMs,
    ratePerSecond: opts.latencyRate,
  };
  let closeGens: (() => Promise<void>) | undefined;
  const gens = await LoadGenerators.start([setup], (close) => (closeGens = cleanup.add('latency generator', close)));
  try {
    gens.startSending();
    await sleep(Math.min(2, opts.warmup) * 1000);
    const m0 = await fetchMetrics(relay.baseUrl);
    const cpu0 = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    gens.beginMeasure();
    await sleep(opts.duration * 1000);
    const [rep] = await gens.stop();
    const cpu1 = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    const m1 = await fetchMetrics(relay.baseUrl);
    checkErrors([rep!], 'latency');
    const l = rep!.latency;
    if (!l) throw new Error('latency: no envelope was delivered in the window');
    const out: BenchResults = {
      p50_ms: round(l.p50, 3),
      p99_ms: round(l.p99, 3),
      latency_p90_ms: round(l.p90, 3),
      latency_p999_ms: round(l.p999, 3),
      latency_max_ms: round(l.max, 3),
      latency_offered_per_s: opts.latencyRate,
      latency_delivered_per_s: Math.round((l.count * 1000) / rep!.elapsedMs),
      latency_skipped: rep!.throttled,
      latency_send_lag_p99_ms: round(l.sendLagP99, 3),
      latency_max_by_second_ms: l.maxBySecond.join(' '),
    };
    for (const [k, v] of Object.entries(cpuSplit(cpu0, cpu1))) out[`latency_${k}`] = v;
    Object.assign(out, relayMetricsDetails('latency_', m0, m1, (cpu1.atMs - cpu0.atMs) / 1000));
    return out;
  } finally {
    await closeGens?.();
  }
}

async function rawPhase(cleanup: Cleanup, server: PgServer, tmp: string, opts: Options): Promise<BenchResults> {
  const db = await createDatabase(server, 'raw');
  const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
  try {
    await migrateDatabase(db.url, path.join(tmp, 'raw'));
    const truncate = (): Promise<unknown> => withClient(db.url, (c) => c.query('TRUNCATE envelopes'));
    const rawOpts = { warmupMs: 500, mailboxes: opts.pairs, payloadBytes: PAYLOAD_BYTES };
    const tries: Array<RawRun & { encoding: PayloadEncoding }> = [];
    for (const encoding of ['arrays', 'concatenated'] as const) {
      for (const config of opts.rawGrid) {
        await truncate();
        const r = await rawInsertRun(db.url, config, { ...rawOpts, seconds: opts.rawTrySeconds, encoding });
        log(`pg_raw try: payloads as ${encoding}, batch ${config.batch} × ${config.connections} connections: ${r.rowsPerSecond} rows/s`);
        tries.push({ ...r, encoding });
      }
    }
    const best = tries.reduce((a, b) => (b.rowsPerSecond > a.rowsPerSecond ? b : a));
    // One measured run from an empty table, right after a checkpoint, with the CPU split of
    // its counted window.
    const measure = async (keyed: boolean) => {
      await truncate();
      await checkpoint(server);
      const c0 = await withClient(db.url, (c) => readCounters(c, db.name));
      let cpu0 = sampleCpu({});
      let cpu1 = cpu0;
      const run = await rawInsertRun(db.url, best.config, {
        ...rawOpts,
        seconds: opts.duration,
        encoding: best.encoding,
        keyed,
        onWindow: (edge) => {
          if (edge === 'start') cpu0 = sampleCpu({ client: [process.pid] });
          else cpu1 = sampleCpu({ client: [process.pid] });
        },
      });
      const c1 = await withClient(db.url, (c) => readCounters(c, db.name));
      return { run, d: counterDelta(c0, c1), split: cpuSplit(cpu0, cpu1) };
    };
    const { run: final, d, split } = await measure(false);
    // The same rows with their idempotency keys (the design's floor beside the bare insert),
    // in the same setting.
    const keyed = await measure(true);
    log(`pg_raw keyed: batch ${best.config.batch} × ${best.config.connections} connections: ${keyed.run.rowsPerSecond} rows/s`);
    const cpu: BenchResults = {};
    for (const [k, v] of Object.entries(split)) cpu[`pg_raw_${k}`] = v;
    for (const [k, v] of Object.entries(keyed.split)) cpu[`pg_keyed_${k}`] = v;
    log(`pg_raw: payloads as ${best.encoding}, batch ${best.config.batch} × ${best.config.connections} connections: ${final.rowsPerSecond} rows/s`);
    return {
      pg_raw_per_s: final.rowsPerSecond,
      pg_raw_payloads: best.encoding,
      pg_raw_batch: best.config.batch,
      pg_raw_connections: best.config.connections,
      pg_raw_commits_per_s: final.commitsPerSecond,
      pg_raw_wal_bytes_per_row: final.rows > 0 ? Math.round(d.walBytes / final.rows) : 0,
      pg_raw_wal_syncs_per_s: Math.round(d.walSyncs / final.seconds),
      pg_keyed_per_s: keyed.run.rowsPerSecond,
      pg_keyed_wal_bytes_per_row: keyed.run.rows > 0 ? Math.round(keyed.d.walBytes / keyed.run.rows) : 0,
      ...cpu,
      pg_raw_tries: tries.map((t) => `${t.encoding === 'arrays' ? 'a' : 'c'}${t.config.batch}x${t.config.connections}=${t.rowsPerSecond}`).join(' '),
    };
  } finally {
    await drop();
  }
}

/**
 * Starts each PostgreSQL measurement right after a checkpoint, so that every run pays the
 * same full-page-image WAL cost (the first change to each page after a checkpoint logs
 * the whole page). Skipped without the privilege to checkpoint.
 */
export async function checkpoint(server: PgServer): Promise<void> {
  await withClient(server.adminUrl, (c) => c.query('CHECKPOINT')).catch(() => undefined);
}

export async function startRelayFor(cleanup: Cleanup, tmp: string, name: string, issuer: BenchIssuer, databaseUrl: string | undefined, profileDir?: string): Promise<{ relay: RelayChild; stop: () => Promise<void> }> {
  const dataDir = path.join(tmp, name);
  fs.mkdirSync(dataDir, { recursive: true });
  const relay = await startRelayChild({ env: relayEnv(dataDir, databaseUrl, issuer.env), ...(profileDir ? { cpuProfileDir: profileDir } : {}) });
  const stop = cleanup.add(`stop ${name} relay`, () => relay.stop());
  return { relay, stop };
}

async function pgRelayPhases(cleanup: Cleanup, server: PgServer, tmp: string, issuer: BenchIssuer, opts: Options): Promise<{ results: BenchResults; envelopes: number }> {
  const results: BenchResults = {};
  let envelopes = 0;
  const db = await createDatabase(server, 'relay');
  const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
  for (const [name, value] of opts.dbSettings) {
    await withClient(server.adminUrl, (c) => c.query(`ALTER DATABASE ${pg.escapeIdentifier(db.name)} SET ${name} = '${value}'`));
    results[`db_setting_${name}`] = value;
  }
  const profileDir = opts.profile ? path.join(tmp, 'cpu-profile') : undefined;
  if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
  try {
    const { relay, stop } = await startRelayFor(cleanup, tmp, 'relay-pg', issuer, db.url, profileDir);
    const pairs = opts.phases.has('relay') ? await makeDevices(issuer, '', opts.pairs) : [];
    const latencyPairs = opts.phases.has('latency') ? await makeDevices(issuer, 'lat-', opts.latencyPairs) : [];
    await registerAll(relay, [...pairs, ...latencyPairs]);
    // Latency first, on a relay whose envelope log is still small: the throughput phase
    // leaves a few hundred thousand rows behind until their partitions are retired.
    if (opts.phases.has('latency')) {
      Object.assign(results, await measureLatency(cleanup, relay, latencyPairs, opts));
      log(`latency at ${opts.latencyRate}/s: p50 ${results.p50_ms} ms, p99 ${results.p99_ms} ms`);
      await sleep(500);
    }
    let window: Window | undefined;
    if (opts.phases.has('relay')) {
      await checkpoint(server);
      const t = await measureThroughput(cleanup, relay, pairs, opts, 'relay_', { url: server.adminUrl, database: db.name });
      log(`relay (PostgreSQL): ${Math.round(t.perSecond)} envelopes/s`);
      results.relay_per_s = Math.round(t.perSecond);
      envelopes = t.envelopes;
      Object.assign(results, t.details);
      window = t.window;
    }
    await stop();
    if (profileDir && window) reportProfile(profileDir, window, opts);
  } finally {
    await drop();
  }
  return { results, envelopes };
}

function reportProfile(dir: string, window: Window, opts: Options): void {
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) {
    log('no CPU profile was written by the relay');
    return;
  }
  const full = path.join(dir, file);
  if (opts.profileOut) {
    fs.copyFileSync(full, opts.profileOut);
    log(`relay CPU profile saved to ${opts.profileOut}`);
  }
  printProfile('relay CPU profile, PostgreSQL throughput window', summarizeProfile(full, window.fromUs, window.toUs, { top: 25, resolve: tsxSourceResolver() }));
}

async function pgliteRelayPhase(cleanup: Cleanup, tmp: string, issuer: BenchIssuer, opts: Options): Promise<BenchResults> {
  const { relay, stop } = await startRelayFor(cleanup, tmp, 'relay-pglite', issuer, undefined);
  try {
    const pairs = await makeDevices(issuer, '', opts.pairs);
    await registerAll(relay, pairs);
    const t = await measureThroughput(cleanup, relay, pairs, opts, 'pglite_');
    log(`relay (PGlite): ${Math.round(t.perSecond)} envelopes/s`);
    return { pglite_relay_per_s: Math.round(t.perSecond), pglite_envelopes: t.envelopes, ...t.details };
  } finally {
    await stop();
  }
}

// ---------------------------------------------------------------- entry

/** The source measured: commit, and whether the relay's code differs from it. */
export function sourceVersion(): { commit: string; relayModified: boolean } {
  const git = (...a: string[]): string | undefined => {
    const r = spawnSync('git', a, { cwd: REPO_ROOT, encoding: 'utf8' });
    return r.status === 0 ? r.stdout.trim() : undefined;
  };
  const commit = git('rev-parse', '--short', 'HEAD') ?? 'unknown';
  const status = git('status', '--porcelain', '--', 'server', 'protocol', 'migrations');
  return { commit, relayModified: status === undefined ? false : status !== '' };
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const opts = parseOptions(args);
  const cleanup = new Cleanup();
  const tmp = cleanup.tempDir('relay');
  try {
    const needPg = opts.phases.has('pg_raw') || opts.phases.has('relay') || opts.phases.has('latency');
    const server = needPg ? await findPgServer() : undefined;
    const issuer = await createIssuer(tmp);
    const load = loadAverage();
    log(`load average before: ${load}`);

    const out: BenchResults = {};
    let envelopes = 0;
    if (server && opts.phases.has('pg_raw')) Object.assign(out, await rawPhase(cleanup, server, tmp, opts));
    if (server && (opts.phases.has('relay') || opts.phases.has('latency'))) {
      const r = await pgRelayPhases(cleanup, server, tmp, issuer, opts);
      Object.assign(out, r.results);
      envelopes = r.envelopes;
    }
    if (opts.phases.has('pglite')) Object.assign(out, await pgliteRelayPhase(cleanup, tmp, issuer, opts));
    // The headline numbers first, then the details that explain them.
    const head: BenchResults = {};
    if (out.pg_raw_per_s !== undefined) head.pg_raw_per_s = out.pg_raw_per_s;
    if (out.relay_per_s !== undefined) head.relay_per_s = out.relay_per_s;
    if (typeof out.relay_per_s === 'number' && typeof out.pg_raw_per_s === 'number') head.ratio = round(out.relay_per_s / out.pg_raw_per_s, 3);
    if (out.p50_ms !== undefined) head.p50_ms = out.p50_ms;
    if (out.p99_ms !== undefined) head.p99_ms = out.p99_ms;
    if (out.pglite_relay_per_s !== undefined) head.pglite_relay_per_s = out.pglite_relay_per_s;
    // CPU per envelope, from the same run's CPU split (percent of one core / rate).
    const rawDb = usPer(out.pg_raw_postgres_cpu_pct, out.pg_raw_per_s);
    const db = usPer(out.relay_postgres_cpu_pct, out.relay_per_s);
    const relay = usPer(out.relay_relay_cpu_pct, out.relay_per_s);
    const keyedDb = usPer(out.pg_keyed_postgres_cpu_pct, out.pg_keyed_per_s);
    if (rawDb !== undefined) head.pg_raw_db_cpu_us_per_row = rawDb;
    if (keyedDb !== undefined) head.pg_keyed_db_cpu_us_per_row = keyedDb;
    if (rawDb !== undefined && keyedDb !== undefined) head.keyed_vs_raw = round(keyedDb / rawDb, 2);
    if (db !== undefined) head.db_cpu_us_per_envelope = db;
    if (relay !== undefined) head.relay_cpu_us_per_envelope = relay;
    if (rawDb !== undefined && db !== undefined) head.db_vs_raw = round(db / rawDb, 2);
    if (rawDb !== undefined && relay !== undefined) head.relay_vs_raw_db = round(relay / rawDb, 2);
    if (opts.phases.has('relay')) head.envelopes = envelopes;
    head.payload_bytes = PAYLOAD_BYTES;
    const settings = server ? await serverSettings(server) : {};
    const version = sourceVersion();
    const tail: BenchResults = {
      commit: version.commit,
      relay_code_modified: version.relayModified,
      duration_s: opts.duration,
      warmup_s: opts.warmup,
      pairs: opts.pairs,
      generators: opts.generators,
      send_window: opts.window,
      ack_every: opts.ackEvery,
      load_avg_before: load,
      load_avg_after: loadAverage(),
    };
    if (server) {
      tail.postgres = settings.server_version ?? 'unknown';
      tail.synchronous_commit = settings.synchronous_commit ?? 'unknown';
      tail.fsync = settings.fsync ?? 'unknown';
    }
    return { ...head, ...out, ...tail };
  } finally {
    await cleanup.run();
  }
}
