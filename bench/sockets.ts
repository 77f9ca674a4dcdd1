/**
 * Idle sockets on one relay: `npm run bench -- sockets [--json] [options]`.
 *
 * One relay process (PostgreSQL by default, as in production; `--db pglite` for the
 * embedded default) is given `--sockets` authenticated WebSocket connections, one per
 * registered device, opened by socket holder processes (bench/lib/socket-holder.ts).
 * Every process has a descriptor limit (`ulimit -n`), so each holder opens at most
 * MAX_SOCKETS_PER_HOLDER; the relay itself needs one descriptor per socket plus its
 * reserve (server/fd-limit.ts), and its limit is read from /proc and reported.
 *
 * Reported:
 * - `connect_auth_per_s`: sockets opened, authenticated and attached (each waits for its
 *   QUEUE_EMPTY) per second, all holders connecting at once, `concurrency` each.
 * - `loop_max_pause_ms`: the relay's longest event-loop delay (its own
 *   monitorEventLoopDelay histogram, `hermetic_nodejs_eventloop_lag_max_seconds`, reset
 *   on each scrape: read before and after) while holding every socket idle for
 *   IDLE_INTERVALS catch-up intervals. The histogram samples every 10 ms, so an idle
 *   loop reads about 10 ms: the figure is an upper bound of the longest pause. It is
 *   also read per catch-up interval (`loop_max_pause_by_interval_ms`), and the median
 *   of those maxima (`loop_max_pause_median_interval_ms`) is what every scan costs
 *   rather than one descheduling of the relay by another process.
 * - `rss_bytes_per_socket`: the relay's resident memory growth from before the devices
 *   were registered to the end of the idle window, per socket: an upper bound, as it
 *   includes what registration left behind (`rss_bytes_per_socket_from_connect` starts
 *   from just before the first connection instead, and is low when a collection frees
 *   registration's garbage meanwhile).
 * - `max_sockets`: sockets still open after the idle window that answered a ping.
 * - `idle_gc`: the relay's garbage collections during the idle window, by kind (its
 *   `hermetic_nodejs_gc_duration_seconds`, one observation per collection or marking
 *   step): how many, their total time, and how many took over 10 ms; so that a pause can
 *   be told apart from the scans' own work.
 *
 * Device registration (POST /v1/devices from the holders, spread over them) is setup,
 * not measured.
 *
 * Options:
 *   --sockets <n>       sockets to hold (default 19000)
 *   --quick             2,000 sockets: a smoke check
 *   --db pg|pglite      the relay's storage (default pg)
 *   --concurrency <n>   connections being set up at once per holder (default 64)
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemRandom } from '../crypto/primitives/index.js';
import { CATCHUP_INTERVAL_MS } from '../server/limits.js';
import { parseProcLimits } from '../server/fd-limit.js';
import { Cleanup } from './lib/cleanup.js';
import { cpuSplit, sampleCpu } from './lib/cpu.js';
import type { BenchDevice } from './lib/device-socket.js';
import { createIssuer } from './lib/issuer.js';
import { WorkerProcess } from './lib/load.js';
import { readOptions } from './lib/options.js';
import { createDatabase, findPgServer } from './lib/postgres.js';
import { type Samples, counterDelta, parseSamples } from './lib/prometheus.js';
import { fetchMetrics, relayEnv, startRelayChild } from './lib/relay-process.js';
import type { HolderAnswer, HolderRequest, HolderSetup } from './lib/socket-holder.js';
import { round, sleep, split } from './relay.js';
import type { BenchResults } from './run.js';

/** Sockets per holder process: well under the 20,000 descriptors a process may open here. */
export const MAX_SOCKETS_PER_HOLDER = 9_000;
/** Catch-up intervals the sockets are held idle while the event loop is watched. */
const IDLE_INTERVALS = 3;
const HOLDER = new URL('./lib/socket-holder.ts', import.meta.url);
/** Registering or connecting thousands of devices on two shared cores takes a while. */
const HOLDER_TIMEOUT_MS = 15 * 60_000;

function log(msg: string): void {
  console.error(`[sockets bench] ${msg}`);
}

type Holder = WorkerProcess<HolderRequest, HolderAnswer>;

/** A holder's answer of type `want` to `m`. */
function ask<T extends HolderAnswer['type']>(holder: Holder, m: HolderRequest, want: T): Promise<Extract<HolderAnswer, { type: T }>> {
  return holder.request<Extract<HolderAnswer, { type: T }>>(m, want);
}

const GC_SECONDS = 'hermetic_nodejs_gc_duration_seconds';

/** The relay's collections between two scrapes, by kind: "minor 2 (18.1 ms, 1 over 10 ms), ...". */
function gcSummary(a: Samples, b: Samples): string {
  const kinds = ['minor', 'major', 'incremental', 'weakcb'].flatMap((kind) => {
    const n = counterDelta(a, b, `${GC_SECONDS}_count{kind="${kind}"}`);
    if (n === 0) return [];
    const ms = 1000 * counterDelta(a, b, `${GC_SECONDS}_sum{kind="${kind}"}`);
    const over10 = n - counterDelta(a, b, `${GC_SECONDS}_bucket{le="0.01",kind="${kind}"}`);
    return [`${kind} ${n} (${round(ms, 1)} ms, ${over10} over 10 ms)`];
  });
  return kinds.length > 0 ? kinds.join(', ') : 'none';
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}

function fdLimit(pid: number): number | undefined {
  try {
    return parseProcLimits(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  } catch {
    return undefined;
  }
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const { value, num } = readOptions(args, ['--sockets', '--quick', '--db', '--concurrency']);
  const quick = args.includes('--quick');
  const sockets = num('--sockets', quick ? 2_000 : 19_000, 1, 1_000_000);
  const concurrency = num('--concurrency', 64, 1, 4096);
  const db = value('--db') ?? 'pg';
  if (db !== 'pg' && db !== 'pglite') throw new Error('--db takes pg or pglite');
  // At least two holders: connections come from several processes, as from many clients.
  const holders = Math.max(2, Math.ceil(sockets / MAX_SOCKETS_PER_HOLDER));

  const cleanup = new Cleanup();
  try {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hermetic-bench-sockets-'));
    cleanup.add('temporary directory', () => fs.rmSync(tmp, { recursive: true, force: true }));
    let databaseUrl: string | undefined;
    if (db === 'pg') {
      const database = await createDatabase(await findPgServer(), 'sockets');
      cleanup.add('database', () => database.drop());
      databaseUrl = database.url;
    }
    const issuer = await createIssuer(tmp);
    const relay = await startRelayChild({ env: relayEnv(path.join(tmp, 'relay'), databaseUrl, issuer.env), startTimeoutMs: 300_000 });
    cleanup.add('relay', () => relay.stop());
    const relayFdLimit = fdLimit(relay.pid);
    const rssStart = rssBytes(relay.pid);
    log(`relay pid ${relay.pid} on ${db === 'pg' ? 'PostgreSQL' : 'PGlite'}, open-file limit ${relayFdLimit ?? 'unknown'}; ${sockets} sockets over ${holders} holder processes (at most ${MAX_SOCKETS_PER_HOLDER} each)`);

    const prefix = Buffer.from(systemRandom(4)).toString('hex');
    const devices: BenchDevice[] = await Promise.all(
      Array.from({ length: sockets }, async (_, i) => {
        const userId = `idle-${prefix}-${i}`;
        return { userId, deviceId: 'dev-1', seed: Buffer.from(systemRandom(32)).toString('hex'), token: await issuer.mint(userId) };
      }),
    );
    const procs = split(devices, holders).map((ds) => {
      const proc = fork(HOLDER, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const h: Holder = new WorkerProcess(proc, 'socket holder', HOLDER_TIMEOUT_MS);
      cleanup.add('socket holder', () => h.close({ type: 'close' }, 10_000));
      return { holder: h, devices: ds };
    });

    const reg0 = performance.now();
    await Promise.all(
      procs.map(({ holder, devices: ds }) => {
        const setup: HolderSetup = { baseUrl: relay.baseUrl, wsUrl: relay.wsUrl, devices: ds, concurrency };
        return ask(holder, { type: 'setup', setup }, 'registered');
      }),
    );
    log(`registered ${sockets} devices in ${((performance.now() - reg0) / 1000).toFixed(1)} s`);

    const rss0 = rssBytes(relay.pid);
    const t0 = performance.now();
    const connected = await Promise.all(procs.map(({ holder }) => ask(holder, { type: 'connect' }, 'connected')));
    const connectSeconds = (performance.now() - t0) / 1000;
    const ok = connected.reduce((s, c) => s + c.ok, 0);
    const failed = connected.reduce((s, c) => s + c.failed, 0);
    log(`connected ${ok} sockets (${failed} failed${failed ? `: ${connected.find((c) => c.firstError)?.firstError}` : ''}) in ${connectSeconds.toFixed(1)} s`);

    // Settle: the last attachments' statements finish; then watch the loop, idle. One
    // scrape first, as a monitoring system would have made long before: the relay's first
    // /metrics compiles the collectors' code (5-12 ms here, against ~2 ms warm), a cost
    // paid once per process.
    await fetchMetrics(relay.baseUrl);
    await sleep(1000);
    const m0 = await fetchMetrics(relay.baseUrl);
    const cpu0 = sampleCpu({ relay: [relay.pid] });
    // One slice per catch-up interval, each read (and the histogram reset) at its end: a
    // pause every scan causes shows in every slice, one the machine caused (another
    // process on the cores) in one of them.
    const sliceMax: number[] = [];
    let m1 = m0;
    for (let i = 0; i < IDLE_INTERVALS; i++) {
      await sleep(CATCHUP_INTERVAL_MS);
      m1 = await fetchMetrics(relay.baseUrl);
      sliceMax.push(1000 * (parseSamples(m1).get('hermetic_nodejs_eventloop_lag_max_seconds') ?? Number.NaN));
    }
    const idleMs = IDLE_INTERVALS * CATCHUP_INTERVAL_MS;
    const cpu1 = sampleCpu({ relay: [relay.pid] });
    const rss1 = rssBytes(relay.pid);
    const a = parseSamples(m0);
    const b = parseSamples(m1);
    const loopMaxMs = Math.max(...sliceMax);
    const loopMedianMs = [...sliceMax].sort((x, y) => x - y)[Math.floor(sliceMax.length / 2)]!;
    const scans = counterDelta(a, b, 'hermetic_catchup_runs_total{reason="interval"}');
    const openOnRelay = b.get('hermetic_connections_open') ?? Number.NaN;

    const checked = await Promise.all(procs.map(({ holder }) => ask(holder, { type: 'check', timeoutMs: 30_000 }, 'checked')));
    const alive = checked.reduce((s, c) => s + c.answered, 0);
    const open = checked.reduce((s, c) => s + c.open, 0);
    if (alive < sockets) log(`only ${alive} of ${sockets} sockets answered a ping after the idle window (${open} open)`);

    const results: BenchResults = {
      max_sockets: alive,
      // From before registration: an upper bound (it includes what registering left), and
      // never below zero when a collection frees registration's garbage meanwhile.
      rss_bytes_per_socket: Math.round((rss1 - rssStart) / Math.max(1, ok)),
      rss_bytes_per_socket_from_connect: Math.round((rss1 - rss0) / Math.max(1, ok)),
      connect_auth_per_s: Math.round(ok / connectSeconds),
      loop_max_pause_ms: round(loopMaxMs, 1),
      loop_max_pause_median_interval_ms: round(loopMedianMs, 1),
      loop_max_pause_by_interval_ms: sliceMax.map((v) => round(v, 1)).join(' / '),
      sockets_requested: sockets,
      connect_failed: failed,
      relay_connections_open: openOnRelay,
      storage: db === 'pg' ? 'PostgreSQL' : 'PGlite',
      holder_processes: holders,
      max_sockets_per_holder: MAX_SOCKETS_PER_HOLDER,
      relay_fd_limit: relayFdLimit ?? 'unknown',
      relay_connections_max: b.get('hermetic_connections_max') ?? Number.NaN,
      idle_window_s: round(idleMs / 1000, 1),
      idle_catchup_scans: scans,
      loop_mean_ms: round(1000 * (b.get('hermetic_nodejs_eventloop_lag_mean_seconds') ?? Number.NaN), 2),
      loop_p99_ms: round(1000 * (b.get('hermetic_nodejs_eventloop_lag_p99_seconds') ?? Number.NaN), 2),
      relay_rss_mib: round(rss1 / 2 ** 20, 1),
      relay_rss_start_mib: round(rssStart / 2 ** 20, 1),
      relay_rss_before_connect_mib: round(rss0 / 2 ** 20, 1),
      idle_catchup_found: counterDelta(a, b, 'hermetic_catchup_mailboxes_found_total'),
      idle_catchup_checked: counterDelta(a, b, 'hermetic_catchup_mailboxes_checked_total'),
      idle_gc: gcSummary(a, b),
    };
    for (const [k, v] of Object.entries(cpuSplit(cpu0, cpu1))) results[`idle_${k}`] = v;
    return results;
  } finally {
    await cleanup.run();
  }
}
