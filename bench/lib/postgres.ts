/**
 * PostgreSQL for benchmarks: finds the server (DATABASE_URL, else a local server on
 * 127.0.0.1:5432, database `test`, as the current OS user or `postgres`), creates a fresh
 * database per measurement and drops it afterwards, and reads the server counters that
 * explain a result (WAL written and flushed, commits, rows).
 */
import crypto from 'node:crypto';
import os from 'node:os';
import pg from 'pg';

export interface PgServer {
  /** An existing database used to create and drop the benchmark databases. */
  readonly adminUrl: string;
}

function candidateUrls(): string[] {
  if (process.env.DATABASE_URL) return [process.env.DATABASE_URL];
  const users = new Set<string>();
  try {
    users.add(os.userInfo().username);
  } catch {
    /* no passwd entry */
  }
  users.add('postgres');
  return [...users].map((u) => `postgres://${encodeURIComponent(u)}@127.0.0.1:5432/test`);
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The first reachable server, or an error naming every candidate that failed. */
export async function findPgServer(): Promise<PgServer> {
  const failures: string[] = [];
  for (const url of candidateUrls()) {
    try {
      await withClient(url, (c) => c.query('SELECT 1'));
      return { adminUrl: url };
    } catch (err) {
      failures.push(`${redact(url)}: ${(err as Error).message}`);
    }
  }
  throw new Error(`PostgreSQL is not reachable (${failures.join('; ')}); set DATABASE_URL`);
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}

export interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

export async function createDatabase(server: PgServer, label: string): Promise<BenchDatabase> {
  const name = `hermetic_bench_${label}_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
  await withClient(server.adminUrl, (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  const u = new URL(server.adminUrl);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    drop: () =>
      withClient(server.adminUrl, async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      }),
  };
}

/** Server version and the settings that decide commit cost. */
export async function serverSettings(server: PgServer): Promise<Record<string, string>> {
  return withClient(server.adminUrl, async (c) => {
    const out: Record<string, string> = {};
    for (const name of ['server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'shared_buffers', 'max_wal_size']) {
      const r = await c.query<Record<string, string>>(`SHOW ${name}`);
      out[name] = Object.values(r.rows[0] ?? {})[0] ?? 'unknown';
    }
    return out;
  });
}

/**
 * Server-wide WAL counters and one database's transaction and row counters. WAL is
 * cluster-wide, so other activity on the server shows up in it too.
 */
export interface PgCounters {
  readonly walRecords: number;
  readonly walBytes: number;
  readonly walWrites: number;
  readonly walSyncs: number;
  readonly commits: number;
  readonly inserted: number;
  readonly updated: number;
  readonly deleted: number;
}

export async function readCounters(c: pg.Client, database: string): Promise<PgCounters> {
  // Statistics are cached per transaction; make sure this read sees fresh values.
  await c.query('SELECT pg_stat_clear_snapshot()');
  const wal = await c.query<{ wal_records: string; wal_bytes: string; wal_write: string; wal_sync: string }>(
    'SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal',
  );
  const db = await c.query<{ xact_commit: string; tup_inserted: string; tup_updated: string; tup_deleted: string }>(
    'SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = $1',
    [database],
  );
  const w = wal.rows[0];
  const d = db.rows[0];
  return {
    walRecords: Number(w?.wal_records ?? 0),
    walBytes: Number(w?.wal_bytes ?? 0),
    walWrites: Number(w?.wal_write ?? 0),
    walSyncs: Number(w?.wal_sync ?? 0),
    commits: Number(d?.xact_commit ?? 0),
    inserted: Number(d?.tup_inserted ?? 0),
    updated: Number(d?.tup_updated ?? 0),
    deleted: Number(d?.tup_deleted ?? 0),
  };
}

export function counterDelta(a: PgCounters, b: PgCounters): PgCounters {
  return {
    walRecords: b.walRecords - a.walRecords,
    walBytes: b.walBytes - a.walBytes,
    walWrites: b.walWrites - a.walWrites,
    walSyncs: b.walSyncs - a.walSyncs,
    commits: b.commits - a.commits,
    inserted: b.inserted - a.inserted,
    updated: b.updated - a.updated,
    deleted: b.deleted - a.deleted,
  };
}
