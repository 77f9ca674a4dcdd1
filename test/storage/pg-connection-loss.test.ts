/**
 * The `pg` driver when connections fail, on a real server: a backend terminated under a
 * transaction, a statement that outlives the driver's bound, no free connection within
 * a call's own bound, and the LISTEN connection terminated. Each is a
 * DatabaseUnavailableError for the caller (never an uncaught exception in the process),
 * the broken connection is not reused, SQL errors stay SQL errors, and the LISTEN
 * subscription comes back by itself and says so.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, DatabaseUnavailableError, UNIQUE_VIOLATION, sqlState } from '../../server/storage/database.js';
import { listenBackoffMs } from '../../server/storage/pg-listen.js';
import { openPg } from '../../server/storage/pg.js';
import { LISTEN_RECONNECT_MAX_MS, LISTEN_RECONNECT_MIN_MS } from '../../server/limits.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';

/** The driver's bound in these tests: short, so that the timeout cases are quick. */
const TIMEOUT_MS = 500;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the call succeeded');
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the pg driver when connections fail', () => {
  if (!pgServer) {
    pgMissing('the pg driver when connections fail');
    return;
  }

  let tdb: TestDatabase;
  let admin: pg.Client;
  const opened: Database[] = [];
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };

  const open = async (maxConnections = 4): Promise<Database> => {
    const db = await openPg({ connectionString: tdb.url, maxConnections, timeoutMs: TIMEOUT_MS });
    opened.push(db);
    return db;
  };

  /** Terminates the backends of this test database whose current query matches. */
  const terminate = async (queryLike: string): Promise<number> => {
    const rows = await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE $2`,
      [tdb.name, queryLike],
    );
    return rows.rowCount ?? 0;
  };

  beforeAll(async () => {
    process.on('uncaughtException', onUncaught);
    tdb = await createTestDatabase();
    admin = new pg.Client({ connectionString: tdb.url });
    await admin.connect();
  });

  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    for (const db of opened) await db.close().catch(() => undefined);
    await admin?.end().catch(() => undefined);
    await tdb?.drop();
  });

  it('a backend terminated inside a transaction fails that transaction only; the pool goes on', async () => {
    const db = await open();
    await db.query('CREATE TABLE t_loss (v int PRIMARY KEY)');
    const err = await rejection(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t_loss VALUES (1)');
        // The connection is lost while the transaction is idle on it (between statements).
        await tx.query("SELECT 'marker-idle-in-tx'");
        expect(await terminate("SELECT 'marker-idle-in-tx'")).toBe(1);
        await new Promise((r) => setTimeout(r, 300));
        await tx.query('INSERT INTO t_loss VALUES (2)');
      }),
    );
    expect(err).toBeInstanceOf(DatabaseUnavailableError);
    // Nothing of it was committed, nothing escaped, and the next call gets a live connection.
    expect(await db.query('SELECT v FROM t_loss')).toEqual([]);
    expect(uncaught).toEqual([]);
  });

  it('a statement that outlives the bound fails as unavailable and its connection is closed', async () => {
    const db = await open();
    const err = await rejection(db.query("SELECT pg_sleep(1.5), 'marker-slow'"));
    expect(err).toBeInstanceOf(DatabaseUnavailableError);
    // The connection was closed, not handed back: the server ends the backend.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const rows = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%marker-slow%' AND pid <> pg_backend_pid()", [tdb.name]);
      if (rows.rows[0].n === 0) break;
      if (Date.now() > deadline) throw new Error('the timed-out backend is still there');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await db.query<{ n: number }>('SELECT 1 AS n'))[0]!.n).toBe(1);
  });

  it('a call with its own bound fails as unavailable when no connection is free in time', async () => {
    const db = await open(1);
    let release: () => void = () => undefined;
    const held = db.transaction(async (tx) => {
      await tx.query('SELECT 1');
      await new Promise<void>((r) => (release = r));
    });
    await new Promise((r) => setTimeout(r, 50));
    const err = await rejection(db.query('SELECT 1', [], { timeoutMs: 100 }));
    expect(err).toBeInstanceOf(DatabaseUnavailableError);
    release();
    await held;
    // The connection that came free after the bound went back to the pool, unharmed.
    expect((await db.query<{ n: number }>('SELECT 1 AS n'))[0]!.n).toBe(1);
  });

  it('SQL errors stay SQL errors (not unavailability), with their SQLSTATE', async () => {
    const db = await open();
    await db.query('CREATE TABLE t_sql (v int PRIMARY KEY)');
    await db.query('INSERT INTO t_sql VALUES (1)');
    const err = await rejection(db.query('INSERT INTO t_sql VALUES (1)'));
    expect(err).not.toBeInstanceOf(DatabaseUnavailableError);
    expect(sqlState(err)).toBe(UNIQUE_VIOLATION);
    const err2 = await rejection(db.transaction((tx) => tx.query('INSERT INTO t_sql VALUES (1)')));
    expect(sqlState(err2)).toBe(UNIQUE_VIOLATION);
  });

  it('a terminated LISTEN connection is restored, told of, and hears notices again', async () => {
    const db = await open();
    const got: string[] = [];
    let resubscribed = 0;
    const unlisten = await db.listen('loss_channel', (p) => got.push(p), () => resubscribed++);
    try {
      await db.query("SELECT pg_notify('loss_channel', 'before')");
      await waitFor(() => got.includes('before'), 'the first notice');
      expect(await terminate('LISTEN %')).toBe(1);
      await waitFor(() => resubscribed === 1, 'the subscription to come back');
      await db.query("SELECT pg_notify('loss_channel', 'after')");
      await waitFor(() => got.includes('after'), 'a notice after the reconnect');
      expect(got).toEqual(['before', 'after']);
      expect(uncaught).toEqual([]);
    } finally {
      await unlisten();
    }
    // Unsubscribed means gone for good: no reconnect after the end.
    await new Promise((r) => setTimeout(r, LISTEN_RECONNECT_MIN_MS * 3));
    expect(resubscribed).toBe(1);
  });

  it('LISTEN reconnects back off exponentially, jittered, up to the cap', () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    expect(listenBackoffMs(0, hi)).toBeLessThanOrEqual(LISTEN_RECONNECT_MIN_MS);
    expect(listenBackoffMs(0, lo)).toBe(LISTEN_RECONNECT_MIN_MS / 2);
    expect(listenBackoffMs(3, lo)).toBe((LISTEN_RECONNECT_MIN_MS * 8) / 2);
    expect(listenBackoffMs(100, hi)).toBeLessThanOrEqual(LISTEN_RECONNECT_MAX_MS);
    expect(listenBackoffMs(100, lo)).toBe(LISTEN_RECONNECT_MAX_MS / 2);
  });
});
