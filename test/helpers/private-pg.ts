/**
 * A private PostgreSQL cluster for fault-injection tests: one that a test may stop,
 * restart or kill -9 without disturbing the shared server other suites run against.
 * initdb writes a fresh cluster into a temporary directory; the server listens on a free
 * 127.0.0.1 port, keeps its unix socket in that directory and trusts local connections.
 *
 * The server binaries are found at run time: `pg_config --bindir`, else the newest
 * /usr/lib/postgresql/<version>/bin. initdb refuses to run as root, so when the tests
 * run as root the server commands run as the `postgres` OS user (runuser), in a
 * directory it owns.
 *
 * Leftovers are cleaned up: every cluster directory names the test process that made it;
 * a directory whose process is gone (a run that was killed) has its server killed and is
 * removed when the next cluster starts, and this process kills its own servers on exit.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type TestDatabase, requirementMissing } from './pg.js';

const DIR_PREFIX = 'hermetic-pg-';
const OWNER_FILE = 'owner.pid';
/** The OS user that runs the server when the tests run as root. */
const SERVER_OS_USER = 'postgres';
/** Longest wait for the server to start or stop (pg_ctl -t). */
const PG_CTL_TIMEOUT_S = 30;

export type StopMode = 'smart' | 'fast' | 'immediate';

interface Binaries {
  readonly dir: string;
  /** Prefix that runs a command as the server's OS user (empty when not root). */
  readonly runAs: readonly string[];
}

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function hasServerBinaries(dir: string): boolean {
  return ['initdb', 'pg_ctl', 'postgres'].every((b) => executable(path.join(dir, b)));
}

function candidateBinDirs(): string[] {
  const dirs: string[] = [];
  try {
    dirs.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    /* no pg_config on PATH */
  }
  const root = '/usr/lib/postgresql';
  try {
    const versions = fs.readdirSync(root).filter((v) => /^\d+(?:\.\d+)?$/.test(v));
    versions.sort((a, b) => Number(b) - Number(a));
    for (const v of versions) dirs.push(path.join(root, v, 'bin'));
  } catch {
    /* not a Debian-style layout */
  }
  return dirs;
}

function detect(): { binaries: Binaries | undefined; reason: string } {
  const dir = candidateBinDirs().find(hasServerBinaries);
  if (!dir) return { binaries: undefined, reason: 'no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config --bindir or /usr/lib/postgresql/*/bin' };
  if (process.getuid?.() !== 0) return { binaries: { dir, runAs: [] }, reason: '' };
  try {
    execFileSync('id', ['-u', SERVER_OS_USER], { stdio: 'ignore' });
  } catch {
    return { binaries: undefined, reason: `running as root, and there is no "${SERVER_OS_USER}" OS user to run initdb and the server as` };
  }
  const runuser = ['/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser'].find(executable);
  if (!runuser) return { binaries: undefined, reason: 'running as root, and runuser (to run the server as another user) is missing' };
  return { binaries: { dir, runAs: [runuser, '-u', SERVER_OS_USER, '--'] }, reason: '' };
}

const detected = detect();

/** Whether a private cluster can be started here. */
export const privatePgAvailable = detected.binaries !== undefined;

/**
 * Call inside a describe block whose tests need a private cluster, when it cannot be
 * started: a visible skip naming the reason, or a failure under HERMETIC_TEST_REQUIRE_PG=1.
 */
export function privatePgMissing(what: string): void {
  requirementMissing(what, 'a private PostgreSQL server can be started', `${what} requires a private PostgreSQL server it can restart, which cannot be started here (${detected.reason})`);
}

function requireBinaries(): Binaries {
  if (!detected.binaries) throw new Error(`cannot start a private PostgreSQL server: ${detected.reason}`);
  return detected.binaries;
}

function run(bin: Binaries, command: string, args: readonly string[]): Promise<string> {
  const [file, ...rest] = [...bin.runAs, path.join(bin.dir, command), ...args];
  return new Promise((resolve, reject) => {
    // cwd: the server user may not be able to read the current directory.
    execFile(file!, rest, { cwd: os.tmpdir(), encoding: 'utf8', timeout: (PG_CTL_TIMEOUT_S + 15) * 1000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still alive after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Kills the servers of clusters whose test process is gone, and removes their directories. */
function removeLeftovers(): void {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = path.join(os.tmpdir(), name);
    const owner = readPid(path.join(dir, OWNER_FILE));
    if (owner !== undefined && alive(owner)) continue;
    // No owner file: a directory still being set up, unless it is old.
    if (owner === undefined) {
      try {
        if (Date.now() - fs.statSync(dir).mtimeMs < 10 * 60_000) continue;
      } catch {
        continue;
      }
    }
    const postmaster = readPid(path.join(dir, 'data', 'postmaster.pid'));
    if (postmaster !== undefined && alive(postmaster)) {
      try {
        process.kill(postmaster, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set<PrivatePg>();

process.on('exit', () => {
  for (const p of running) p.killNowSync();
});

export class PrivatePg {
  private removed = false;

  private constructor(
    private readonly bin: Binaries,
    /** The cluster's directory: data/, the server log and the unix socket. */
    readonly dir: string,
    readonly port: number,
  ) {}

  /** initdb into a fresh temporary directory and start the server. */
  static async start(): Promise<PrivatePg> {
    const bin = requireBinaries();
    removeLeftovers();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), DIR_PREFIX));
    fs.writeFileSync(path.join(dir, OWNER_FILE), `${process.pid}\n`);
    if (bin.runAs.length > 0) {
      const uid = Number(execFileSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' }).trim());
      fs.chownSync(dir, uid, gid);
    }
    let cluster: PrivatePg | undefined;
    try {
      await run(bin, 'initdb', ['-D', path.join(dir, 'data'), '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync']);
      // A port can be taken between choosing and binding it: try another.
      for (let attempt = 0; ; attempt++) {
        cluster = new PrivatePg(bin, dir, await freePort());
        running.add(cluster);
        try {
          await cluster.startServer();
          return cluster;
        } catch (err) {
          running.delete(cluster);
          if (attempt >= 2) throw err;
        }
      }
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  private get logFile(): string {
    return path.join(this.dir, 'server.log');
  }

  /** The server's log (for failure messages). */
  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** A connection URL for `database` (TCP, user postgres, trust). */
  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** The postmaster's pid while it runs. */
  postmasterPid(): number | undefined {
    const pid = readPid(path.join(this.dataDir, 'postmaster.pid'));
    return pid !== undefined && alive(pid) ? pid : undefined;
  }

  /** Creates a database in this cluster (dropped with the cluster, or by `drop()`). */
  async createDatabase(name = 'hermetic'): Promise<TestDatabase> {
    const admin = async (sql: string): Promise<void> => {
      const client = new pg.Client({ connectionString: this.url() });
      await client.connect();
      try {
        await client.query(sql);
      } finally {
        await client.end().catch(() => undefined);
      }
    };
    await admin(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    return {
      url: this.url(name),
      name,
      drop: async () => {
        if (this.removed || this.postmasterPid() === undefined) return;
        await admin(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      },
    };
  }

  private async startServer(): Promise<void> {
    const opts = [
      `-p ${this.port}`,
      `-c listen_addresses=127.0.0.1`,
      `-c unix_socket_directories='${this.dir}'`,
      '-c max_connections=60',
      '-c shared_buffers=16MB',
    ].join(' ');
    await run(this.bin, 'pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', String(PG_CTL_TIMEOUT_S), '-o', opts, 'start']);
  }

  /** Starts the stopped server on the same port. After kill -9 the old backends may
   * still be exiting (they hold the shared memory): starting is retried meanwhile. */
  async start(): Promise<void> {
    if (this.removed) throw new Error('this cluster was removed');
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await this.startServer();
        running.add(this);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${(err as Error).message}\nserver log:\n${this.log().slice(-4000)}`);
        await sleep(200);
      }
    }
  }

  /** pg_ctl stop: `fast` rolls back and disconnects every session; `immediate` quits
   * without a shutdown checkpoint (crash recovery runs at the next start). */
  async stop(mode: StopMode = 'fast'): Promise<void> {
    await run(this.bin, 'pg_ctl', ['-D', this.dataDir, '-m', mode, '-w', '-t', String(PG_CTL_TIMEOUT_S), 'stop']);
  }

  /** pg_ctl restart: stop in `mode`, then start with the same options. */
  async restart(mode: StopMode = 'fast'): Promise<void> {
    // -l again: without it the server would inherit (and hold open) pg_ctl's stdout.
    await run(this.bin, 'pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-m', mode, '-w', '-t', String(PG_CTL_TIMEOUT_S), 'restart']);
  }

  /** SIGKILLs the postmaster (no shutdown of any kind) and waits until it is gone; its
   * backends notice and exit on their own. */
  async kill9(): Promise<void> {
    const pid = this.postmasterPid();
    if (pid === undefined) throw new Error('the server is not running');
    process.kill(pid, 'SIGKILL');
    await waitGone(pid, 10_000);
  }

  /** Synchronous last resort (process exit): SIGKILL the server, remove the directory. */
  killNowSync(): void {
    const pid = this.postmasterPid();
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    running.delete(this);
    this.removed = true;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Stops the server (immediate) and removes the cluster's directory. */
  async destroy(): Promise<void> {
    if (this.removed) return;
    if (this.postmasterPid() !== undefined) {
      await this.stop('immediate').catch(() => undefined);
    }
    this.killNowSync();
  }
}
