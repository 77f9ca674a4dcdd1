/**
 * Real relay processes for integration tests: `hermetic serve` started as a child
 * process (through tsx, from source) on an ephemeral port, in its own temporary data
 * directory. The helper waits for the "relay listening" log line and reads the port
 * from it; stdout and stderr are kept for assertions. Every process started here is
 * killed by `killAllRelays()` (call it in afterAll) and, as a last resort, on exit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Environment variables the relay reads: never inherited from the test runner. */
const RELAY_VARS = /^(?:PORT|DATABASE_URL|NODE_ENV|HERMETIC_.*|UWS_.*)$/;

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export function makeTempDir(prefix = 'hermetic-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function childEnv(extra: Readonly<Record<string, string | undefined>>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!RELAY_VARS.test(k) && k !== 'NODE_OPTIONS') env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface CliProcess {
  readonly proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitInfo>;
}

/**
 * Starts `hermetic <args>` from source with exactly the given relay variables; with
 * `fdLimit`, under that open-file limit (soft and hard, set by the shell, which then
 * execs Node in its place); with `bin`, that `hermetic` executable (an installed
 * package's bin/hermetic.js) instead of the source.
 */
export function spawnCli(args: readonly string[], env: Readonly<Record<string, string | undefined>>, opts: { fdLimit?: number; bin?: string } = {}): CliProcess {
  const node = opts.bin === undefined ? [process.execPath, '--import', 'tsx', 'server/cli.ts', ...args] : [process.execPath, opts.bin, ...args];
  const [cmd, ...argv] = opts.fdLimit === undefined ? node : ['/bin/sh', '-c', 'ulimit -n "$0" && exec "$@"', String(opts.fdLimit), ...node];
  const proc = spawn(cmd!, argv, {
    cwd: REPO_ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<ExitInfo>((resolve) => {
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      // Let the pipes drain so stdout/stderr are complete.
      setImmediate(() => resolve({ code, signal }));
    });
  });
  return { proc, stdout: () => out, stderr: () => err, exited };
}

/** Runs a CLI command to completion. */
export async function runCli(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  timeoutMs = 45_000,
  opts: { fdLimit?: number } = {},
): Promise<ExitInfo & { stdout: string; stderr: string }> {
  const p = spawnCli(args, env, opts);
  const timer = setTimeout(() => p.proc.kill('SIGKILL'), timeoutMs);
  const info = await p.exited;
  clearTimeout(timer);
  await new Promise((r) => setTimeout(r, 20));
  return { ...info, stdout: p.stdout(), stderr: p.stderr() };
}

export interface RelayOptions {
  /** Data directory; a fresh temporary one when omitted. */
  readonly dataDir?: string;
  /** PostgreSQL URL; PGlite in the data directory when omitted. */
  readonly databaseUrl?: string;
  readonly logLevel?: string;
  /** Further relay variables (JWKS settings, NODE_ENV, ...). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The relay's open-file limit (`ulimit -n`); inherited when omitted. */
  readonly fdLimit?: number;
  /** A `hermetic` executable to run (an installed package's bin/hermetic.js); the source when omitted. */
  readonly bin?: string;
}

export interface StopResult extends ExitInfo {
  /** Milliseconds from the signal to the exit (recorded, never asserted tightly). */
  readonly ms: number;
}

export interface RelayProcess extends CliProcess {
  readonly port: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** http://127.0.0.1:<port> */
  readonly baseUrl: string;
  /** ws://127.0.0.1:<port>/v1/ws */
  readonly wsUrl: string;
  /** Parsed JSON log lines from stdout. */
  logs(): Array<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<StopResult>;
}

export function relayEnv(opts: RelayOptions, dataDir: string): Record<string, string | undefined> {
  return {
    PORT: '0',
    HERMETIC_HOST: '127.0.0.1',
    HERMETIC_DATA_DIR: dataDir,
    HERMETIC_LOG_LEVEL: opts.logLevel ?? 'info',
    DATABASE_URL: opts.databaseUrl,
    ...opts.env,
  };
}

function parseLogs(text: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* a partial line */
    }
  }
  return out;
}

/** Starts `hermetic serve` and resolves once it listens (rejects if it exits first). */
export async function startRelay(opts: RelayOptions = {}, timeoutMs = 90_000): Promise<RelayProcess> {
  const dataDir = opts.dataDir ?? makeTempDir();
  const env = relayEnv(opts, dataDir);
  const cli = spawnCli(['serve'], env, { ...(opts.fdLimit === undefined ? {} : { fdLimit: opts.fdLimit }), ...(opts.bin === undefined ? {} : { bin: opts.bin }) });
  const port = await new Promise<number>((resolve, reject) => {
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poll);
      f();
    };
    const check = (): void => {
      const line = parseLogs(cli.stdout()).find((l) => l.msg === 'relay listening');
      if (line && typeof line.port === 'number') finish(() => resolve(line.port as number));
    };
    cli.proc.stdout?.on('data', check);
    const poll = setInterval(check, 100);
    const timer = setTimeout(() => {
      cli.proc.kill('SIGKILL');
      finish(() => reject(new Error(`relay did not start within ${timeoutMs} ms\nstdout:\n${cli.stdout()}\nstderr:\n${cli.stderr()}`)));
    }, timeoutMs);
    void cli.exited.then((e) =>
      finish(() => reject(new Error(`relay exited before listening (code ${e.code}, signal ${e.signal})\nstdout:\n${cli.stdout()}\nstderr:\n${cli.stderr()}`))),
    );
  });
  return {
    ...cli,
    port,
    pid: cli.proc.pid as number,
    dataDir,
    env,
    baseUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    logs: () => parseLogs(cli.stdout()),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      const t0 = performance.now();
      if (cli.proc.exitCode === null && cli.proc.signalCode === null) cli.proc.kill(signal);
      // Hang guard: a relay that ignores the signal is killed so the suite can finish.
      const hang = setTimeout(() => cli.proc.kill('SIGKILL'), 20_000);
      const info = await cli.exited;
      clearTimeout(hang);
      return { ...info, ms: performance.now() - t0 };
    },
  };
}

/** Kills every process this helper started and removes the temporary directories. */
export async function killAllRelays(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const c of [...children]) {
    if (c.exitCode === null && c.signalCode === null) {
      waits.push(new Promise((r) => c.once('exit', r)));
      c.kill('SIGKILL');
    }
  }
  await Promise.all(waits);
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
