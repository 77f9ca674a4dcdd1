/**
 * A relay under benchmark: `hermetic serve` as `npm start` runs it (compiled into dist/
 * by `npm run build`'s compiler, see relayEntry) as a child process on an ephemeral port, with exactly the relay variables given (none inherited), optionally
 * with V8's CPU profiler writing a .cpuprofile when it exits. Also the HTTP calls a
 * benchmark needs: device registration and /metrics.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeBase64url } from '../../protocol/base64url.js';
import { rootEntry } from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import type { BenchDevice } from './device-socket.js';
import { RELAY_NODE_FLAGS } from '../../server/runtime.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Variables the relay reads: never inherited from the benchmark's environment. */
const RELAY_VARS = /^(?:PORT|DATABASE_URL|NODE_ENV|HERMETIC_.*)$/;

export interface RelayChild {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly baseUrl: string;
  readonly wsUrl: string;
  stderr(): string;
  /** SIGTERM (graceful: queued SENDs are committed), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface RelayChildOptions {
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Directory for a CPU profile written at exit (node --cpu-prof). */
  readonly cpuProfileDir?: string;
  readonly startTimeoutMs?: number;
}

let built: Promise<string> | undefined;

/**
 * The compiled CLI, built once per benchmark process with the project's build (tsc,
 * tsconfig.build.json, into dist/): the code `npm start` runs. Running the sources
 * through tsx instead measures tsx's output, whose keepNames wraps every function and
 * class it defines in a naming call, closures made per request included, and costs
 * the relay CPU and memory that the shipped build does not. With BENCH_RELAY_FROM=source
 * in the benchmark's environment the relay runs from source through tsx, as before (to
 * compare the two).
 */
export function relayEntry(): Promise<string[]> {
  if (process.env.BENCH_RELAY_FROM === 'source') return Promise.resolve(['--import', 'tsx', 'server/cli.ts']);
  built ??= new Promise<string>((resolve, reject) => {
    const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const proc = spawn(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    proc.once('error', reject);
    proc.once('exit', (code) => {
      if (code === 0) resolve(path.join(REPO_ROOT, 'dist', 'server', 'cli.js'));
      else reject(new Error(`building the relay failed (code ${code}):\n${out.slice(-4000)}`));
    });
  });
  return built.then((entry) => [entry]);
}

export async function startRelayChild(opts: RelayChildOptions): Promise<RelayChild> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!RELAY_VARS.test(k) && k !== 'NODE_OPTIONS') env[k] = v;
  for (const [k, v] of Object.entries(opts.env)) if (v !== undefined) env[k] = v;
  // The flags `npm start` runs the relay with, so the benchmark measures what ships.
  const nodeArgs = [...RELAY_NODE_FLAGS, ...(opts.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfileDir] : [])];
  const proc = spawn(process.execPath, [...nodeArgs, ...(await relayEntry()), 'serve'], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-20_000)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`relay did not start within ${opts.startTimeoutMs ?? 60_000} ms\n${out}\n${err}`));
    }, opts.startTimeoutMs ?? 60_000);
    const onData = (d: string): void => {
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (!line.includes('"relay listening"')) continue;
        try {
          const p = (JSON.parse(line) as { port?: unknown }).port;
          if (typeof p === 'number') {
            clearTimeout(timer);
            proc.stdout?.off('data', onData);
            // Keep draining stdout so the relay never blocks on a full pipe; with
            // BENCH_RELAY_LOG, into that file (appended), to read the relay's warnings.
            const logFile = process.env.BENCH_RELAY_LOG;
            if (logFile) proc.stdout?.pipe(fs.createWriteStream(logFile, { flags: 'a' }));
            else proc.stdout?.resume();
            resolve(p);
          }
        } catch {
          /* not JSON */
        }
      }
    };
    proc.stdout?.setEncoding('utf8').on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`relay exited before listening (code ${proc.exitCode})\n${out}\n${err}`));
    });
  });

  return {
    proc,
    pid: proc.pid as number,
    baseUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    stderr: () => err,
    stop: async (graceMs = 20_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const hang = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(hang);
    },
  };
}

/** The relay variables for a benchmark relay (PGlite unless `databaseUrl` is given). */
export function relayEnv(dataDir: string, databaseUrl: string | undefined, extra: Readonly<Record<string, string>>): Record<string, string | undefined> {
  return {
    PORT: '0',
    HERMETIC_HOST: '127.0.0.1',
    HERMETIC_DATA_DIR: dataDir,
    // Startup lines only (the port is read from "relay listening"); nothing per frame.
    HERMETIC_LOG_LEVEL: 'info',
    DATABASE_URL: databaseUrl,
    // Every load generator connects from 127.0.0.1: up to --pairs 4096 devices may be
    // connecting at once, beyond the per-address default.
    HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: '10000',
    ...extra,
  };
}

/** POST /v1/devices: the device as the root of its user's list (each benchmark user has one device). */
export async function registerDevice(baseUrl: string, dev: BenchDevice): Promise<void> {
  const entry = rootEntry(IdentityKeyPair.fromSeed(Buffer.from(dev.seed, 'hex')), dev.userId, dev.deviceId);
  const res = await fetch(`${baseUrl}/v1/devices`, {
    method: 'POST',
    headers: { authorization: `Bearer ${dev.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ entry: encodeBase64url(entry) }),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`register ${dev.userId}/${dev.deviceId}: ${res.status} ${await res.text()}`);
}

export async function fetchMetrics(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics: ${res.status}`);
  return res.text();
}

/** `hermetic migrate` against a database: the relay's exact schema, from its own migrations. */
export async function migrateDatabase(databaseUrl: string, dataDir: string): Promise<void> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!RELAY_VARS.test(k) && k !== 'NODE_OPTIONS') env[k] = v;
  Object.assign(env, { DATABASE_URL: databaseUrl, HERMETIC_DATA_DIR: dataDir, HERMETIC_LOG_LEVEL: 'warn' });
  const proc = spawn(process.execPath, [...(await relayEntry()), 'migrate'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`hermetic migrate failed (code ${code}): ${out}`);
}
