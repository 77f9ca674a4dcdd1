/**
 * Client SDK benchmarks: `npm run bench -- sdk [--json] [options]`.
 *
 * Messages go the whole way through real SDK clients (createClient from hermetic/client)
 * and one relay child process on a fresh PostgreSQL database: encrypt, SEND, stored,
 * DELIVER, decrypt, persisted in the inbox with the session, ACK, and the application
 * marks the message done; a message counts once `done()` resolves. One run measures:
 *
 * 1. `e2e_p99_ms` (and p50/p90/max) — send() to done() at an offered, open-loop 500
 *    messages/s of 1 KiB bodies, memory stores; each worker's pairs have sender and
 *    recipient in that worker, so one clock measures both ends.
 * 2. `e2e_msgs_per_s` — sender/recipient client pairs, each sender keeping a window of
 *    send() calls unresolved, memory stores.
 * 3. `e2e_file_store_msgs_per_s` — the same with each device on its own FileStore
 *    (every commit flushed to disk).
 * 4. `fanout_devices_per_s` — one sending device with two other devices of its own sends
 *    to a user with five devices; a message counts once per device that marked it done.
 * 5. `relay_per_s` — the relay suite's throughput method (raw-protocol load generators,
 *    pipelined SENDs, cumulative ACKs) on its own relay process and fresh database.
 *
 * Then `e2e_relay_ratio` = e2e_msgs_per_s / relay_per_s and whether the goals hold
 * (e2e_msgs_per_s ≥ 0.5 × relay_per_s; e2e_p99_ms ≤ 15).
 *
 * Processes: the relay runs alone in its process; the SDK clients run in `--workers`
 * worker processes (default 2), the pairs split evenly across them; PostgreSQL has its
 * own processes. On a 2-core machine they all share the two cores: the CPU each group
 * used in each window is reported (relay_cpu_pct, clients_cpu_pct, postgres_cpu_pct,
 * percent of one core), so the split is visible rather than assumed.
 *
 * Options:
 *   --duration <s>     measured seconds per phase (default 10; --quick: 2)
 *   --quick            short warm-ups and few pairs: a smoke check
 *   --only <phases>    comma list of latency, memory, file, fanout, relay
 *   --pairs <n>        SDK sender/recipient pairs in the throughput phases (default 16)
 *   --workers <n>      SDK worker processes (default 2)
 *   --window <n>       send() calls unresolved per sender (default 32)
 *   --rate <n>         offered messages/s in the latency phase (default 500)
 *   --receipts <mode>  off (none signed or expected), default (the SDK's), log (every receipt
 *                      also submitted to the relay's log)
 *   --profile, --profile-out <file>   run the SDK workers of the throughput phases (memory,
 *                      file) under node --cpu-prof and print their self time in the window
 */
import fs from 'node:fs';
import path from 'node:path';
import { Cleanup } from './lib/cleanup.js';
import { loadAverage } from './lib/machine.js';
import { cpuSplit, sampleCpu } from './lib/cpu.js';
import { type ProfileEntry, type ProfileSummary, printProfile, summarizeProfile } from './lib/cpu-profile.js';
import { type BenchIssuer, createIssuer } from './lib/issuer.js';
import { LoadGenerators } from './lib/load.js';
import { readOptions } from './lib/options.js';
import { type PgServer, createDatabase, findPgServer, serverSettings } from './lib/postgres.js';
import { type RelayChild, relayEnv, startRelayChild } from './lib/relay-process.js';
import type { SdkUser, SdkWorkerReport, SdkWorkerSetup } from './lib/sdk-worker.js';
import type { ReceiptPolicy } from '../client-sdk/node.js';
import { tsxSourceResolver } from './lib/source-maps.js';
import { THROUGHPUT_DEFAULTS, checkpoint, hrMicros, makeDevices, measureThroughput, registerAll, round, sleep, sourceVersion, split } from './relay.js';
import type { BenchResults } from './run.js';

const BODY_BYTES = 1024;
const SDK_WORKER = new URL('./lib/sdk-worker.ts', import.meta.url);
/** The goals of the SDK benchmark (docs/PERFORMANCE.md). */
const GOAL_E2E_RELAY_RATIO = 0.5;
const GOAL_P99_MS = 15;
const FANOUT_OWN_DEVICES = 2;
const FANOUT_RECIPIENT_DEVICES = 5;

const PHASES = ['latency', 'memory', 'file', 'fanout', 'relay'] as const;
type Phase = (typeof PHASES)[number];

interface Options {
  readonly duration: number;
  readonly warmup: number;
  readonly phases: ReadonlySet<Phase>;
  readonly pairs: number;
  readonly latencyPairs: number;
  readonly workers: number;
  readonly window: number;
  readonly rate: number;
  readonly profile: boolean;
  readonly profileOut: string | undefined;
  /** The clients' receipt policy (--receipts off|default|log). */
  readonly receipts: ReceiptPolicy | undefined;
}

/** The receipt policies a run can use: none at all, the SDK's default, or every receipt logged. */
const RECEIPT_MODES = {
  off: { send: false, expect: false },
  default: undefined,
  log: { send: true, expect: true, log: 'all' },
} as const satisfies Record<string, ReceiptPolicy | undefined>;

function parseOptions(args: readonly string[]): Options {
  const { value, num, phases } = readOptions(args, ['--duration', '--quick', '--only', '--pairs', '--workers', '--window', '--rate', '--profile', '--profile-out', '--receipts']);
  const receipts = value('--receipts') ?? 'default';
  if (!(receipts in RECEIPT_MODES)) throw new Error(`--receipts takes ${Object.keys(RECEIPT_MODES).join(', ')}`);
  const quick = args.includes('--quick');
  const profileOut = value('--profile-out');
  return {
    duration: num('--duration', quick ? 2 : 10, 0.5, 600),
    warmup: quick ? 1 : 3,
    phases: phases(PHASES),
    pairs: num('--pairs', quick ? 4 : 16, 1, 1024),
    latencyPairs: quick ? 4 : 8,
    workers: num('--workers', 2, 1, 16),
    window: num('--window', 32, 1, 256),
    rate: num('--rate', quick ? 100 : 500, 1, 100_000),
    profile: args.includes('--profile') || profileOut !== undefined,
    profileOut,
    receipts: RECEIPT_MODES[receipts as keyof typeof RECEIPT_MODES],
  };
}

function log(msg: string): void {
  console.error(`[sdk bench] ${msg}`);
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

async function users(issuer: BenchIssuer, prefix: string, n: number): Promise<Array<{ sender: SdkUser; recipient: SdkUser }>> {
  const user = async (userId: string): Promise<SdkUser> => ({ userId, token: await issuer.mint(userId) });
  return Promise.all(Array.from({ length: n }, async (_, i) => ({ sender: await user(`${prefix}s-${i}`), recipient: await user(`${prefix}r-${i}`) })));
}

interface PhaseOutcome {
  readonly perSecond: number;
  readonly results: BenchResults;
  readonly latencies: number[];
}

/**
 * Runs SDK workers through warm-up and one measured window. `prefix` names the phase's
 * detail results; a profile directory runs the workers under the CPU profiler.
 */
async function sdkPhase(cleanup: Cleanup, relay: RelayChild, setups: readonly SdkWorkerSetup[], opts: Options, prefix: string, profileDir?: string): Promise<PhaseOutcome> {
  let closeWorkers: (() => Promise<void>) | undefined;
  const execArgv = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const t0 = performance.now();
  const workers = await LoadGenerators.start<SdkWorkerSetup, SdkWorkerReport>(setups, (close) => (closeWorkers = cleanup.add(`${prefix} workers`, close)), {
    module: SDK_WORKER,
    execArgv,
  });
  log(`${prefix}: ${setups.length} workers ready in ${Math.round(performance.now() - t0)} ms`);
  let window = { fromUs: 0, toUs: 0 };
  try {
    workers.startSending();
    await sleep(opts.warmup * 1000);
    const cpu0 = sampleCpu({ relay: [relay.pid], clients: workers.pids });
    const fromUs = hrMicros();
    workers.beginMeasure();
    await sleep(opts.duration * 1000);
    const reports = await workers.stop();
    const cpu1 = sampleCpu({ relay: [relay.pid], clients: workers.pids });
    window = { fromUs, toUs: hrMicros() };
    const perSecond = reports.reduce((s, r) => s + (r.done * 1000) / r.elapsedMs, 0);
    const errors: Record<string, number> = {};
    for (const r of reports) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    const results: BenchResults = {
      [`${prefix}done`]: reports.reduce((s, r) => s + r.done, 0),
      [`${prefix}sent_per_s`]: Math.round(reports.reduce((s, r) => s + (r.sent * 1000) / r.elapsedMs, 0)),
      [`${prefix}client_cpu_ms_per_msg`]: round(reports.reduce((s, r) => s + r.cpuMs, 0) / Math.max(1, reports.reduce((s, r) => s + r.done, 0)), 3),
    };
    if (Object.keys(errors).length > 0) results[`${prefix}errors`] = JSON.stringify(errors);
    const throttled = reports.reduce((s, r) => s + r.throttled, 0);
    if (throttled > 0) results[`${prefix}throttled`] = throttled;
    for (const [k, v] of Object.entries(cpuSplit(cpu0, cpu1))) results[`${prefix}${k}`] = v;
    const latencies = reports.flatMap((r) => r.latencies).sort((a, b) => a - b);
    return { perSecond, results, latencies };
  } finally {
    await closeWorkers?.();
    if (profileDir) reportProfile(profileDir, window, opts, prefix.replace(/_$/, ''));
  }
}

/** The workers' profiles (one per process), added up over the measured window. */
function reportProfile(dir: string, window: { fromUs: number; toUs: number }, opts: Options, title: string): void {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) {
    log('no CPU profile was written by the SDK workers');
    return;
  }
  const resolve = tsxSourceResolver();
  const summaries = files.map((f) => summarizeProfile(path.join(dir, f), window.fromUs, window.toUs, { top: 200, resolve }));
  if (opts.profileOut) {
    fs.copyFileSync(path.join(dir, files[0]!), opts.profileOut);
    log(`one SDK worker's CPU profile saved to ${opts.profileOut}`);
  }
  printProfile(`SDK workers' CPU profile (${files.length} processes), ${title} throughput window`, mergeSummaries(summaries, 30));
}

function mergeSummaries(list: readonly ProfileSummary[], top: number): ProfileSummary {
  const totalMs = list.reduce((s, p) => s + p.totalMs, 0);
  const merge = (pick: (p: ProfileSummary) => readonly ProfileEntry[]): ProfileEntry[] => {
    const m = new Map<string, number>();
    for (const p of list) for (const e of pick(p)) m.set(e.name, (m.get(e.name) ?? 0) + e.ms);
    return [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, pct: totalMs > 0 ? round((100 * ms) / totalMs, 1) : 0 }));
  };
  return { totalMs, functions: merge((p) => p.functions), areas: merge((p) => p.areas) };
}

function pairSetups(relay: RelayChild, pairs: ReadonlyArray<{ sender: SdkUser; recipient: SdkUser }>, opts: Options, mode: 'throughput' | 'latency', store: 'memory' | 'file', storeDir: string | undefined): SdkWorkerSetup[] {
  const parts = split(pairs, opts.workers);
  return parts.map((ps) => ({
    baseUrl: relay.baseUrl,
    mode,
    store,
    storeDir,
    pairs: ps,
    fanout: undefined,
    bodyBytes: BODY_BYTES,
    window: mode === 'latency' ? 64 : opts.window,
    ratePerSecond: mode === 'latency' ? opts.rate / parts.length : 0,
    receipts: opts.receipts,
  }));
}

async function sdkPhases(cleanup: Cleanup, server: PgServer, tmp: string, issuer: BenchIssuer, opts: Options): Promise<BenchResults> {
  const out: BenchResults = {};
  const db = await createDatabase(server, 'sdk');
  const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
  try {
    const relay = await startRelay(cleanup, tmp, 'relay-sdk', issuer, db.url);
    try {
      // Latency first, on a database with no dead rows yet (as the relay suite does).
      if (opts.phases.has('latency')) {
        const pairs = await users(issuer, 'lat-', opts.latencyPairs);
        const r = await sdkPhase(cleanup, relay.relay, pairSetups(relay.relay, pairs, opts, 'latency', 'memory', undefined), opts, 'latency_');
        const l = r.latencies;
        if (l.length === 0) throw new Error('latency: no message was done in the window');
        Object.assign(out, {
          e2e_p50_ms: round(quantile(l, 0.5), 3),
          e2e_p90_ms: round(quantile(l, 0.9), 3),
          e2e_p99_ms: round(quantile(l, 0.99), 3),
          e2e_max_ms: round(l[l.length - 1] as number, 3),
          latency_offered_per_s: opts.rate,
          latency_done_per_s: Math.round(r.perSecond),
          ...r.results,
        });
        log(`latency at ${opts.rate}/s: p50 ${out.e2e_p50_ms} ms, p99 ${out.e2e_p99_ms} ms`);
      }
      if (opts.phases.has('memory')) {
        const pairs = await users(issuer, 'mem-', opts.pairs);
        const profileDir = opts.profile ? fs.mkdtempSync(path.join(tmp, 'cpu-profile-')) : undefined;
        const r = await sdkPhase(cleanup, relay.relay, pairSetups(relay.relay, pairs, opts, 'throughput', 'memory', undefined), opts, 'memory_', profileDir);
        out.e2e_msgs_per_s = Math.round(r.perSecond);
        Object.assign(out, r.results);
        log(`memory stores: ${out.e2e_msgs_per_s} messages/s`);
      }
      if (opts.phases.has('file')) {
        const pairs = await users(issuer, 'file-', opts.pairs);
        const storeDir = fs.mkdtempSync(path.join(tmp, 'stores-'));
        const profileDir = opts.profile ? fs.mkdtempSync(path.join(tmp, 'cpu-profile-')) : undefined;
        const r = await sdkPhase(cleanup, relay.relay, pairSetups(relay.relay, pairs, opts, 'throughput', 'file', storeDir), opts, 'file_', profileDir);
        out.e2e_file_store_msgs_per_s = Math.round(r.perSecond);
        Object.assign(out, r.results);
        log(`file stores: ${out.e2e_file_store_msgs_per_s} messages/s`);
      }
      if (opts.phases.has('fanout')) {
        const groups = await users(issuer, 'fan-', opts.workers);
        const setups: SdkWorkerSetup[] = groups.map((g) => ({
          baseUrl: relay.relay.baseUrl,
          mode: 'fanout',
          store: 'memory',
          storeDir: undefined,
          pairs: [],
          fanout: { sender: g.sender, recipient: g.recipient, ownDevices: FANOUT_OWN_DEVICES, recipientDevices: FANOUT_RECIPIENT_DEVICES },
          bodyBytes: BODY_BYTES,
          window: opts.window,
          ratePerSecond: 0,
        }));
        const r = await sdkPhase(cleanup, relay.relay, setups, opts, 'fanout_');
        out.fanout_devices_per_s = Math.round(r.perSecond);
        out.fanout_msgs_per_s = Math.round(r.perSecond / (FANOUT_OWN_DEVICES + FANOUT_RECIPIENT_DEVICES));
        Object.assign(out, r.results);
        log(`fanout: ${out.fanout_devices_per_s} device deliveries/s`);
      }
    } finally {
      await relay.stop();
    }
  } finally {
    await drop();
  }
  return out;
}

/**
 * The audit suite's end-to-end cost of receipts: the memory phase with receipts off (no
 * receipt signed, none expected) and on (signed, sent back, verified, and every one
 * submitted to the relay's log), alternating `rounds` times on one relay and database,
 * fresh users each phase. The ratio is of the summed rates.
 */
export async function receiptsOnOff(args: readonly string[], rounds: number): Promise<BenchResults> {
  const opts = parseOptions(args);
  const cleanup = new Cleanup();
  const tmp = cleanup.tempDir('receipts');
  try {
    const server = await findPgServer();
    const issuer = await createIssuer(tmp);
    const db = await createDatabase(server, 'receipts');
    const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
    const relay = await startRelay(cleanup, tmp, 'relay-receipts', issuer, db.url);
    let off = 0;
    let on = 0;
    const out: BenchResults = {};
    try {
      const policies = {
        off: RECEIPT_MODES.off,
        on: RECEIPT_MODES.log,
      };
      for (let r = 0; r < rounds; r++) {
        for (const mode of ['off', 'on'] as const) {
          const pairs = await users(issuer, `rc${r}${mode}-`, opts.pairs);
          const setups = pairSetups(relay.relay, pairs, opts, 'throughput', 'memory', undefined).map((s) => ({ ...s, receipts: policies[mode] }));
          const res = await sdkPhase(cleanup, relay.relay, setups, opts, `receipts_${mode}_`);
          if (mode === 'off') off += res.perSecond;
          else on += res.perSecond;
          out[`e2e_receipts_${mode}_round${r + 1}_msgs_per_s`] = Math.round(res.perSecond);
          for (const k of ['client_cpu_ms_per_msg', 'relay_cpu_pct', 'postgres_cpu_pct', 'clients_cpu_pct', 'errors']) {
            const v = res.results[`receipts_${mode}_${k}`];
            if (v !== undefined) out[`receipts_${mode}_round${r + 1}_${k}`] = v;
          }
          log(`receipts ${mode}, round ${r + 1}: ${Math.round(res.perSecond)} messages/s`);
        }
      }
    } finally {
      await relay.stop();
      await drop();
    }
    return {
      e2e_receipts_off_msgs_per_s: Math.round(off / rounds),
      e2e_receipts_on_msgs_per_s: Math.round(on / rounds),
      e2e_ratio_receipts_on_off: round(on / off, 3),
      ...out,
      e2e_pairs: opts.pairs,
      e2e_workers: opts.workers,
      e2e_window: opts.window,
      e2e_duration_s: opts.duration,
    };
  } finally {
    await cleanup.run();
  }
}

/** relay_per_s exactly as the relay suite measures it, on its own relay and fresh database. */
async function relayPhase(cleanup: Cleanup, server: PgServer, tmp: string, issuer: BenchIssuer, opts: Options): Promise<BenchResults> {
  const db = await createDatabase(server, 'relay');
  const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
  try {
    const relay = await startRelay(cleanup, tmp, 'relay-raw', issuer, db.url);
    try {
      const pairs = await makeDevices(issuer, 'raw-', THROUGHPUT_DEFAULTS.pairs);
      await registerAll(relay.relay, pairs);
      await checkpoint(server);
      const shape = { ...THROUGHPUT_DEFAULTS, duration: opts.duration, warmup: opts.warmup };
      const t = await measureThroughput(cleanup, relay.relay, pairs, shape, 'relay_', { url: server.adminUrl, database: db.name });
      log(`relay (PostgreSQL): ${Math.round(t.perSecond)} envelopes/s`);
      const keep = ['relay_relay_cpu_pct', 'relay_loadgen_cpu_pct', 'relay_postgres_cpu_pct', 'relay_machine_busy_pct', 'relay_send_batch_mean'];
      const details: BenchResults = {};
      for (const k of keep) if (t.details[k] !== undefined) details[k] = t.details[k] as number;
      return { relay_per_s: Math.round(t.perSecond), ...details };
    } finally {
      await relay.stop();
    }
  } finally {
    await drop();
  }
}

async function startRelay(cleanup: Cleanup, tmp: string, name: string, issuer: BenchIssuer, databaseUrl: string): Promise<{ relay: RelayChild; stop: () => Promise<void> }> {
  const dataDir = path.join(tmp, name);
  fs.mkdirSync(dataDir, { recursive: true });
  const relay = await startRelayChild({ env: relayEnv(dataDir, databaseUrl, issuer.env) });
  return { relay, stop: cleanup.add(`stop ${name} relay`, () => relay.stop()) };
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const opts = parseOptions(args);
  const cleanup = new Cleanup();
  const tmp = cleanup.tempDir('sdk');
  try {
    const server = await findPgServer();
    const issuer = await createIssuer(tmp);
    const load = loadAverage();
    log(`load average before: ${load}`);
    const out: BenchResults = {};
    if ([...opts.phases].some((p) => p !== 'relay')) Object.assign(out, await sdkPhases(cleanup, server, tmp, issuer, opts));
    if (opts.phases.has('relay')) Object.assign(out, await relayPhase(cleanup, server, tmp, issuer, opts));

    const head: BenchResults = {};
    for (const k of ['e2e_msgs_per_s', 'e2e_file_store_msgs_per_s', 'e2e_p99_ms', 'fanout_devices_per_s', 'relay_per_s']) if (out[k] !== undefined) head[k] = out[k] as number;
    if (typeof out.e2e_msgs_per_s === 'number' && typeof out.relay_per_s === 'number' && out.relay_per_s > 0) {
      head.e2e_relay_ratio = round(out.e2e_msgs_per_s / out.relay_per_s, 3);
      head.goal_throughput_met = head.e2e_relay_ratio >= GOAL_E2E_RELAY_RATIO;
    }
    if (typeof out.e2e_p99_ms === 'number') head.goal_p99_met = out.e2e_p99_ms <= GOAL_P99_MS;
    const settings = await serverSettings(server);
    const version = sourceVersion();
    const tail: BenchResults = {
      commit: version.commit,
      body_bytes: BODY_BYTES,
      duration_s: opts.duration,
      warmup_s: opts.warmup,
      sdk_pairs: opts.pairs,
      sdk_workers: opts.workers,
      sdk_window: opts.window,
      fanout_shape: `${opts.workers} x (1 sender + ${FANOUT_OWN_DEVICES} own devices -> ${FANOUT_RECIPIENT_DEVICES} devices)`,
      relay_pairs: THROUGHPUT_DEFAULTS.pairs,
      relay_generators: THROUGHPUT_DEFAULTS.generators,
      load_avg_before: load,
      load_avg_after: loadAverage(),
      postgres: settings.server_version ?? 'unknown',
      synchronous_commit: settings.synchronous_commit ?? 'unknown',
    };
    return { ...head, ...out, ...tail };
  } finally {
    await cleanup.run();
  }
}
