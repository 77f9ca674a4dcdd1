/**
 * PostgreSQL for integration tests. The server is found once per test file: DATABASE_URL
 * when set, else a local server on 127.0.0.1:5432 (database `test`, trust auth) as the
 * current OS user or as `postgres`. Each suite gets its own freshly created database, so
 * suites never see each other's rows and can run in parallel.
 *
 * Without a reachable server the PostgreSQL suites are skipped with a visible reason,
 * unless HERMETIC_TEST_REQUIRE_PG=1, in which case they fail.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { describe, it } from 'vitest';

export interface PgServer {
  /** Connection URL of an existing database used to create and drop test databases. */
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

async function probe(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (err) {
    return `${redact(url)}: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => undefined);
  }
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

async function detect(): Promise<{ server: PgServer | undefined; reason: string }> {
  const failures: string[] = [];
  for (const url of candidateUrls()) {
    const failure = await probe(url);
    if (failure === undefined) return { server: { adminUrl: url }, reason: '' };
    failures.push(failure);
  }
  return { server: undefined, reason: failures.join('; ') };
}

const detected = await detect();

/** The reachable server, or undefined. */
export const pgServer: PgServer | undefined = detected.server;
/** Why no server is available (empty when one is). */
export const pgUnavailableReason: string = detected.reason;
export const pgRequired = process.env.HERMETIC_TEST_REQUIRE_PG === '1';

/**
 * Call inside a describe block whose tests need PostgreSQL, when `pgServer` is undefined:
 * registers a visible skipped test naming the reason, or a failing one when PostgreSQL
 * is required.
 */
export function pgMissing(what: string): void {
  requirementMissing(
    what,
    'PostgreSQL is reachable',
    `${what} requires PostgreSQL, which is not reachable (${pgUnavailableReason}); set DATABASE_URL or run a server on 127.0.0.1:5432 with a database "test"`,
  );
}

/**
 * Registers, for tests that need PostgreSQL in a form that is missing (`requirement`
 * names it), a visible skipped test carrying `message`, or a failing one when
 * PostgreSQL is required.
 */
export function requirementMissing(what: string, requirement: string, message: string): void {
  if (pgRequired) {
    it(`${what}: ${requirement} (HERMETIC_TEST_REQUIRE_PG=1)`, () => {
      throw new Error(message);
    });
  } else {
    it.skip(message, () => undefined);
  }
}

/** A describe block that runs only with PostgreSQL (see pgMissing for the other case). */
export function describePg(name: string, fn: (server: PgServer) => void): void {
  const server = pgServer;
  if (server) describe(name, () => fn(server));
  else describe(`${name} (requires PostgreSQL)`, () => pgMissing(name));
}

export interface TestDatabase {
  readonly url: string;
  readonly name: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(server: PgServer, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: server.adminUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates a new, empty, uniquely named database. */
export async function createTestDatabase(server: PgServer = requirePg()): Promise<TestDatabase> {
  const name = `hermetic_test_${process.pid}_${crypto.randomBytes(6).toString('hex')}`;
  await admin(server, (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  let dropped = false;
  return {
    url: withDatabase(server.adminUrl, name),
    name,
    drop: async () => {
      if (dropped) return;
      dropped = true;
      await admin(server, async (c) => {
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      });
    },
  };
}

function requirePg(): PgServer {
  if (!pgServer) throw new Error(`PostgreSQL is not reachable: ${pgUnavailableReason}`);
  return pgServer;
}
