/**
 * The `pg` driver: a connection Pool to a PostgreSQL server. `$n` parameters only; one
 * checked-out client per call, released in `finally`.
 *
 * Losing the server (a restart, a crash, a network cut) is an expected event, not a
 * crash: a connection that fails, or a statement that outlives `timeoutMs`, is destroyed
 * rather than reused, and the call fails with DatabaseUnavailableError (the peer is told
 * UNAVAILABLE and retries; writes are idempotent). Errors on idle and checked-out clients
 * are caught, the pool opens new connections on demand, and the LISTEN subscription
 * reconnects by itself (pg-listen.ts).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { type Database, DatabaseUnavailableError, type SqlParam, sqlState } from './database.js';
import { pgListen } from './pg-listen.js';

export interface PgOptions {
  connectionString: string;
  maxConnections: number;
  /** Bound on getting a connection and on each statement (migrations excepted). */
  timeoutMs: number;
  logger?: Logger;
  /** Observes the duration of every statement (the metrics histogram). */
  observe?: (seconds: number) => void;
}

/** SQLSTATEs that mean the server went away or takes no connections now: class 08
 * (connection exception), 57P01 admin_shutdown, 57P02 crash_shutdown and 57P03
 * cannot_connect_now (starting up, shutting down, in recovery). */
function connectionLost(state: string | undefined): boolean {
  return state !== undefined && (state.startsWith('08') || state === '57P01' || state === '57P02' || state === '57P03');
}

function unavailable(message: string, cause: unknown): DatabaseUnavailableError {
  return new DatabaseUnavailableError(`${message}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
}

type Exec = <Row extends object>(sql: string, params?: readonly SqlParam[]) => Promise<Row[]>;

export async function openPg(opts: PgOptions): Promise<Database> {
  // connectionTimeoutMillis bounds both opening a connection and waiting for a free one.
  const pool = new pg.Pool({ connectionString: opts.connectionString, max: opts.maxConnections, connectionTimeoutMillis: opts.timeoutMs });
  pool.on('error', (err) => {
    // An idle client lost its connection; the pool discards it and opens another.
    opts.logger?.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'idle database client error');
  });
  const observe = opts.observe;

  /** A pooled client within `timeoutMs`; one that comes later is handed back. */
  const checkout = (timeoutMs: number): Promise<pg.PoolClient> => {
    const pending = pool.connect();
    return new Promise((resolve, reject) => {
      let late = false;
      const timer =
        timeoutMs < opts.timeoutMs
          ? setTimeout(() => {
              late = true;
              reject(new DatabaseUnavailableError(`no database connection within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      pending.then(
        (client) => {
          clearTimeout(timer);
          if (late) client.release();
          else resolve(client);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(unavailable('cannot get a database connection', err));
        },
      );
    });
  };

  /**
   * Runs `fn` on one checked-out client. Each statement it runs through `exec` is bounded
   * by `timeoutMs` (unbounded when undefined: migrations may legitimately run long); on
   * a timeout the connection is closed, which fails the statement.
   */
  const withClient = async <T>(timeoutMs: number | undefined, fn: (exec: Exec) => Promise<T>): Promise<T> => {
    const client = await checkout(timeoutMs ?? opts.timeoutMs);
    // Set when the connection fails: it must not go back to the pool. Listening for
    // 'error' also keeps a connection lost while checked out from crashing the process.
    let lost: unknown;
    let broken: Error | undefined;
    const onError = (err: Error): void => {
      lost ??= err;
    };
    client.on('error', onError);
    const exec: Exec = async <Row extends object>(sql: string, params?: readonly SqlParam[]) => {
      if (lost !== undefined) throw unavailable('the database connection was lost', lost);
      const t0 = observe ? performance.now() : 0;
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              lost ??= new Error(`no answer within ${timeoutMs} ms`);
              void client.end().catch(() => undefined);
            }, timeoutMs);
      try {
        const res = await client.query(sql, params as unknown[] | undefined);
        return res.rows as Row[];
      } catch (err) {
        if (lost !== undefined) throw unavailable('the database connection was lost', lost);
        if (connectionLost(sqlState(err))) {
          lost = err;
          throw unavailable('the database connection was lost', err);
        }
        // Anything else without a SQLSTATE happened outside SQL: don't reuse the client.
        if (err instanceof Error && sqlState(err) === undefined) broken = err;
        throw err;
      } finally {
        clearTimeout(timer);
        if (observe) observe((performance.now() - t0) / 1000);
      }
    };
    try {
      return await fn(exec);
    } finally {
      client.removeListener('error', onError);
      client.release(lost !== undefined ? (lost as Error) : broken);
    }
  };

  const db: Database = {
    driver: 'pg',
    packByteArrays: true,
    query: (sql, params, queryOpts) => withClient(queryOpts?.timeoutMs ?? opts.timeoutMs, (exec) => exec(sql, params)),
    transaction: (fn) =>
      withClient(opts.timeoutMs, async (exec) => {
        await exec('BEGIN');
        try {
          const result = await fn({ query: exec });
          await exec('COMMIT');
          return result;
        } catch (err) {
          await exec('ROLLBACK').catch(() => undefined);
          throw err;
        }
      }),
    withAdvisoryLock: (key, fn) =>
      withClient(undefined, async (exec) => {
        await exec('SELECT pg_advisory_lock($1)', [key.toString()]);
        try {
          return await fn({
            query: exec,
            // Without parameters pg uses the simple protocol, which runs several statements.
            exec: async (script) => {
              await exec(script);
            },
          });
        } finally {
          await exec('SELECT pg_advisory_unlock($1)', [key.toString()]);
        }
      }),
    listen: (channel, onNotify, onResubscribed) =>
      pgListen({
        connectionString: opts.connectionString,
        channel,
        timeoutMs: opts.timeoutMs,
        onNotify,
        ...(onResubscribed ? { onResubscribed } : {}),
        ...(opts.logger ? { logger: opts.logger } : {}),
      }),
    close: () => pool.end(),
  };
  return db;
}
