/**
 * `npm run fuzz -- [options]`: every fuzz target of test/fuzz/targets at its full count
 * (1,000,000 inputs or more in all), spread over worker processes. Prints a table
 * (target, inputs, accepted, rejected by code, failures) and, with --json, a final JSON
 * line. Exits 1 on any finding, printing how to replay it.
 *
 *   --seed N              master seed (default: random; printed). Each target's share is
 *                         cut into jobs whose fast-check seeds derive from it.
 *   --target a,b          only these targets (a name, or a prefix such as `crypto/`)
 *   --runs N              inputs per selected target instead of its default
 *   --runs-of name=N      inputs for one target (repeatable)
 *   --scale F             multiply every default count by F
 *   --workers N           worker processes (default: min(2, cores))
 *   --slow-ms N           an input slower than this twice in a row is a finding
 *                         (default 5000; 0 turns it off)
 *   --job-timeout S       a job silent this long is a hang: its worker is killed and
 *                         the job reported (default 900)
 *   --replay t:seed:path  run one counterexample in this process (with --runs N and an
 *                         empty path: rerun a whole job)
 *   --list                print the targets and their counts
 *   --json                a final JSON line
 *
 * Workers are this script forked with --worker; each runs with a capped heap, so an
 * input that makes a decoder allocate without bound kills its worker, which is reported
 * like a hang.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type FuzzFailure, type FuzzTarget, type TargetReport, parseReplay, runTarget } from '../test/fuzz/harness.js';
import { FUZZ_TARGETS, MIN_FULL_RUN_INPUTS } from '../test/fuzz/targets/index.js';
import { machine, machineLine } from './lib/machine.js';

/** Largest share of a target one job runs: small enough to spread work, large enough to amortize setup. */
const JOB_INPUTS = 25_000;
const WORKER_HEAP_MB = 1536;

interface Job {
  readonly id: number;
  readonly target: string;
  readonly runs: number;
  readonly seed: number;
}

interface JobFailure extends FuzzFailure {
  readonly reproduce: string;
}

type ToWorker = { kind: 'job'; job: Job; slowMs: number | undefined };
type FromWorker = { kind: 'done'; id: number; report: TargetReport } | { kind: 'error'; id: number; message: string };

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

interface Options {
  seed: number;
  targets: FuzzTarget[];
  runs: Map<string, number>;
  workers: number;
  slowMs: number | undefined;
  jobTimeoutS: number;
  json: boolean;
  list: boolean;
  replay: string | undefined;
  replayRuns: number | undefined;
}

function usage(message: string): never {
  console.error(`${message}\nusage: npm run fuzz -- [--seed N] [--target a,b] [--runs N] [--runs-of name=N] [--scale F] [--workers N] [--slow-ms N] [--job-timeout S] [--replay target:seed:path] [--list] [--json]`);
  process.exit(2);
}

function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (v === undefined || !Number.isSafeInteger(n) || n < min) usage(`${name} expects an integer >= ${min}`);
  return n;
}

function parseOptions(argv: readonly string[]): Options {
  let seed: number | undefined;
  let filter: string[] | undefined;
  let every: number | undefined;
  let scale = 1;
  const perTarget = new Map<string, number>();
  const opts: Omit<Options, 'seed' | 'targets' | 'runs'> = {
    workers: Math.max(1, Math.min(2, os.cpus().length)),
    slowMs: 5000,
    jobTimeoutS: 900,
    json: false,
    list: false,
    replay: undefined,
    replayRuns: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = () => argv[++i];
    switch (a) {
      case '--seed':
        seed = intArg(a, next(), -(2 ** 31));
        break;
      case '--target':
        filter = (next() ?? '').split(',').filter(Boolean);
        break;
      case '--runs':
        every = intArg(a, next(), 1);
        break;
      case '--runs-of': {
        const [name, n] = (next() ?? '').split('=');
        perTarget.set(name ?? '', intArg(a, n, 1));
        break;
      }
      case '--scale':
        scale = Number(next());
        if (!(scale > 0)) usage('--scale expects a positive number');
        break;
      case '--workers':
        opts.workers = intArg(a, next(), 1);
        break;
      case '--slow-ms': {
        const ms = intArg(a, next(), 0);
        opts.slowMs = ms === 0 ? undefined : ms;
        break;
      }
      case '--job-timeout':
        opts.jobTimeoutS = intArg(a, next(), 1);
        break;
      case '--replay':
        opts.replay = next();
        break;
      case '--json':
        opts.json = true;
        break;
      case '--list':
        opts.list = true;
        break;
      default:
        usage(`unknown option ${a}`);
    }
  }
  const targets = FUZZ_TARGETS.filter((t) => !filter || filter.some((f) => t.name === f || (f.endsWith('/') && t.name.startsWith(f))));
  if (targets.length === 0) usage(`no target matches ${filter?.join(',')}`);
  for (const name of perTarget.keys()) if (!FUZZ_TARGETS.some((t) => t.name === name)) usage(`no target named ${name}`);
  const runs = new Map(targets.map((t) => [t.name, perTarget.get(t.name) ?? every ?? Math.max(1, Math.round(t.runs * scale))]));
  if (opts.replay !== undefined) opts.replayRuns = every;
  return { ...opts, seed: seed ?? randomInt(0, 2 ** 31), targets, runs };
}

/** A job's fast-check seed: a 32-bit value from the master seed, the target and the job's index. */
function jobSeed(master: number, target: string, index: number): number {
  return createHash('sha256').update(`${master}/${target}/${index}`).digest().readInt32BE(0);
}

function jobsOf(opts: Options): Job[] {
  const shares: { target: string; index: number; runs: number }[] = [];
  for (const t of opts.targets) {
    const total = opts.runs.get(t.name) as number;
    const count = Math.ceil(total / JOB_INPUTS);
    for (let i = 0; i < count; i++) shares.push({ target: t.name, index: i, runs: Math.floor(total / count) + (i < total % count ? 1 : 0) });
  }
  // Round-robin over the targets, so slow and fast targets mix and the workers finish together.
  return shares
    .sort((a, b) => a.index - b.index)
    .map((s, id) => ({ id, target: s.target, runs: s.runs, seed: jobSeed(opts.seed, s.target, s.index) }));
}

function reproduceJob(job: Job): string {
  return `npm run fuzz -- --replay '${job.target}:${job.seed}:' --runs ${job.runs}`;
}

// ---------------------------------------------------------------------------------------
// Worker
// ---------------------------------------------------------------------------------------

async function worker(): Promise<void> {
  process.on('message', (msg: ToWorker) => {
    void (async () => {
      const target = FUZZ_TARGETS.find((t) => t.name === msg.job.target);
      let reply: FromWorker;
      try {
        if (!target) throw new Error(`no target ${msg.job.target}`);
        const report = await runTarget(target, { runs: msg.job.runs, seed: msg.job.seed, slowMs: msg.slowMs });
        reply = { kind: 'done', id: msg.job.id, report };
      } catch (err) {
        reply = { kind: 'error', id: msg.job.id, message: err instanceof Error ? (err.stack ?? err.message) : String(err) };
      }
      process.send?.(reply);
    })();
  });
  process.send?.({ kind: 'ready' });
}

// ---------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------

interface Totals {
  inputs: number;
  accepted: number;
  rejected: Record<string, number>;
  failures: JobFailure[];
}

async function runJobs(opts: Options, jobs: Job[], onProgress: (done: number) => void): Promise<Map<string, Totals>> {
  const totals = new Map<string, Totals>(opts.targets.map((t) => [t.name, { inputs: 0, accepted: 0, rejected: {}, failures: [] }]));
  const queue = [...jobs];
  let finished = 0;
  const script = fileURLToPath(import.meta.url);

  const record = (job: Job, report: TargetReport | undefined, failure?: Omit<JobFailure, 'reproduce'>) => {
    const t = totals.get(job.target) as Totals;
    if (report) {
      t.inputs += report.inputs;
      t.accepted += report.accepted;
      for (const [code, n] of Object.entries(report.rejected)) t.rejected[code] = (t.rejected[code] ?? 0) + n;
      for (const f of report.failures) t.failures.push({ ...f, reproduce: `npm run fuzz -- --replay '${f.replay}'` });
    }
    if (failure) t.failures.push({ ...failure, reproduce: reproduceJob(job) });
    onProgress(++finished);
  };

  const runWorker = (): Promise<void> =>
    new Promise((resolve) => {
      let current: Job | undefined;
      let timer: NodeJS.Timeout | undefined;
      const child: ChildProcess = fork(script, ['--worker'], {
        execArgv: [...process.execArgv, `--max-old-space-size=${WORKER_HEAP_MB}`],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const next = () => {
        clearTimeout(timer);
        current = queue.shift();
        if (!current) {
          child.disconnect();
          return;
        }
        const job = current;
        timer = setTimeout(() => {
          record(job, undefined, {
            message: `no answer after ${opts.jobTimeoutS} s: a hang, or an input far slower than the rest`,
            counterexample: '(the job was stopped; replay it to find the input)',
            replay: `${job.target}:${job.seed}:`,
          });
          current = undefined;
          child.kill('SIGKILL');
        }, opts.jobTimeoutS * 1000);
        child.send({ kind: 'job', job, slowMs: opts.slowMs } satisfies ToWorker);
      };
      child.on('message', (msg: FromWorker | { kind: 'ready' }) => {
        if (msg.kind === 'done' && current?.id === msg.id) record(current, msg.report);
        else if (msg.kind === 'error' && current?.id === msg.id) {
          record(current, undefined, { message: `the harness failed: ${msg.message}`, counterexample: '-', replay: `${current.target}:${current.seed}:` });
        }
        next();
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (current) {
          // Died in the middle of a job: out of memory, or a crash of the runtime.
          record(current, undefined, {
            message: `the worker died (${signal ?? `exit ${code}`}): unbounded allocation or a crash`,
            counterexample: '(replay the job to find the input)',
            replay: `${current.target}:${current.seed}:`,
          });
        }
        // Carry on with a fresh worker while jobs remain.
        resolve(queue.length > 0 ? runWorker() : undefined);
      });
    });

  await Promise.all(Array.from({ length: Math.min(opts.workers, jobs.length) }, runWorker));
  return totals;
}

function byCount(rejected: Record<string, number>): string {
  return Object.entries(rejected)
    .sort((a, b) => b[1] - a[1])
    .map(([code, n]) => `${code} ${n.toLocaleString('en-US')}`)
    .join(', ');
}

function printTable(totals: Map<string, Totals>): void {
  const rows = [...totals].map(([name, t]) => [name, t.inputs.toLocaleString('en-US'), t.accepted.toLocaleString('en-US'), String(t.failures.length), byCount(t.rejected)]);
  const head = ['target', 'inputs', 'accepted', 'failures', 'rejected (by code)'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 || i === r.length - 1 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ').trimEnd();
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

async function replay(opts: Options): Promise<void> {
  const { target: name, seed, path } = parseReplay(opts.replay as string);
  const target = FUZZ_TARGETS.find((t) => t.name === name);
  if (!target) usage(`no target named ${name}`);
  const report = await runTarget(target, {
    runs: path === '' ? (opts.replayRuns ?? JOB_INPUTS) : 1,
    seed,
    path: path === '' ? undefined : path,
    slowMs: opts.slowMs,
  });
  if (path === '') console.log(`${name}: ${report.inputs} inputs, ${report.accepted} accepted, rejected: ${byCount(report.rejected) || 'none'}`);
  else if (report.failures.length === 0) console.log(`${name}: the input at ${seed}:${path} is no finding (any more)`);
  for (const f of report.failures) {
    console.log(`\nFINDING ${f.message}\n  input: ${f.counterexample}\n  replay: ${f.replay}\n${f.stack ?? ''}`);
  }
  process.exitCode = report.failures.length > 0 ? 1 : 0;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--worker') return worker();
  const opts = parseOptions(argv);
  if (opts.replay !== undefined) return replay(opts);
  const total = [...opts.runs.values()].reduce((a, b) => a + b, 0);
  if (opts.list) {
    for (const t of opts.targets) console.log(`${t.name.padEnd(32)} ${String(opts.runs.get(t.name)).padStart(9)}  (${t.layer}: ${t.codes.join(', ') || 'never throws'})`);
    console.log(`${'total'.padEnd(32)} ${String(total).padStart(9)}`);
    return;
  }
  const jobs = jobsOf(opts);
  const m = machine();
  console.log(`# fuzz — ${machineLine(m)}`);
  console.log(`# seed ${opts.seed}, ${opts.targets.length} targets, ${total.toLocaleString('en-US')} inputs, ${jobs.length} jobs on ${opts.workers} workers`);
  if (total < MIN_FULL_RUN_INPUTS && opts.targets.length === FUZZ_TARGETS.length) {
    console.log(`# note: fewer than ${MIN_FULL_RUN_INPUTS.toLocaleString('en-US')} inputs (counts were lowered)`);
  }
  const started = performance.now();
  let lastReport = started;
  const totals = await runJobs(opts, jobs, (done) => {
    const now = performance.now();
    if (!opts.json && process.stderr.isTTY && now - lastReport > 2000) {
      lastReport = now;
      process.stderr.write(`\r${done}/${jobs.length} jobs, ${Math.round((now - started) / 1000)} s`);
    }
  });
  if (!opts.json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const wallSeconds = (performance.now() - started) / 1000;
  printTable(totals);
  const all = [...totals.values()];
  const sum = (f: (t: Totals) => number) => all.reduce((n, t) => n + f(t), 0);
  const inputs = sum((t) => t.inputs);
  const failures = all.flatMap((t, i) => t.failures.map((f) => ({ target: [...totals.keys()][i] as string, ...f })));
  console.log(
    `\ntotal: ${inputs.toLocaleString('en-US')} inputs, ${sum((t) => t.accepted).toLocaleString('en-US')} accepted, ${failures.length} failures; ` +
      `${wallSeconds.toFixed(1)} s wall, ${Math.round(inputs / wallSeconds).toLocaleString('en-US')} inputs/s; seed ${opts.seed}`,
  );
  for (const f of failures) {
    console.log(`\nFINDING in ${f.target}: ${f.message}\n  input: ${f.counterexample}\n  reproduce: ${f.reproduce}`);
    if (f.stack) console.log(f.stack.split('\n').slice(0, 8).map((l) => `  ${l}`).join('\n'));
  }
  if (opts.json) {
    console.log(
      JSON.stringify({
        suite: 'fuzz',
        machine: m,
        seed: opts.seed,
        workers: opts.workers,
        wallSeconds: Number(wallSeconds.toFixed(1)),
        total: { inputs, accepted: sum((t) => t.accepted), failures: failures.length },
        targets: [...totals].map(([name, t]) => ({ name, inputs: t.inputs, accepted: t.accepted, rejected: t.rejected, failures: t.failures.length })),
        failures: failures.map(({ target, message, counterexample, reproduce }) => ({ target, message, counterexample, reproduce })),
      }),
    );
  }
  process.exitCode = failures.length > 0 ? 1 : 0;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
