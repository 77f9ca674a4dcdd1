/**
 * The `pg` driver: a connection Pool to a PostgreSQL server. `$n` parameters only; one
 * checked-out client per transaction, released in `finally`; errors on idle clients
 * (a server restart, a network drop) are logged instead of crashing the process.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import type { Database, SqlExecutor, SqlParam } from './database.js';

export interface PgOptions {
  connectionString: string;
  maxConnections: number;
  logger?: Logger;
  /** Observes the duration of every statement (the metrics histogram). */
  observe?: (seconds: number) => void;
}

export async function openPg(opts: PgOptions): Promise<Database> {
  const pool = new pg.Pool({ connectionString: opts.connectionString, max: opts.maxConnections });
  pool.on('error', (err) => {
    // An idle client lost its connection; the pool discards it and opens another.
    opts.logger?.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'idle database client error');
  });
  const observe = opts.observe;

  const run = async <Row extends object>(
    client: pg.Pool | pg.PoolClient,
    sql: string,
    params?: readonly SqlParam[],
  ): Promise<Row[]> => {
    const t0 = observe ? performance.now() : 0;
    try {
      const res = await client.query(sql, params as unknown[] | undefined);
      return res.rows as Row[];
    } finally {
      if (observe) observe((performance.now() - t0) / 1000);
    }
  };

  const withClient = async <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      return await fn(client);
    } catch (err) {
      if (err instanceof Error && !('code' in err)) broken = err;
      throw err;
    } finally {
      // A client that failed outside SQL (connection error) is destroyed, not reused.
      client.release(broken);
    }
  };

  const db: Database = {
    driver: 'pg',
    query: (sql, params) => run(pool, sql, params),
    transaction: (fn) =>
      withClient(async (client) => {
        await client.query('BEGIN');
        try {
          const tx: SqlExecutor = { query: (sql, params) => run(client, sql, params) };
          const result = await fn(tx);
          await client.query('COMMIT');
          return result;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      }),
    withAdvisoryLock: (key, fn) =>
      withClient(async (client) => {
        await client.query('SELECT pg_advisory_lock($1)', [key.toString()]);
        try {
          return await fn({
            query: (sql, params) => run(client, sql, params),
            // Without parameters pg uses the simple protocol, which runs several statements.
            exec: async (script) => {
              await client.query(script);
            },
          });
        } finally {
          await client.query('SELECT pg_advisory_unlock($1)', [key.toString()]);
        }
      }),
    listen: async (channel, onNotify) => {
      // LISTEN needs a dedicated connection held for the subscription's lifetime.
      const client = new pg.Client({ connectionString: opts.connectionString });
      client.on('error', (err) => opts.logger?.warn({ err: { message: err.message } }, 'listen connection error'));
      await client.connect();
      client.on('notification', (msg) => {
        if (msg.channel === channel) onNotify(msg.payload ?? '');
      });
      await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      return async () => {
        await client.end().catch(() => undefined);
      };
    },
    close: () => pool.end(),
  };
  return db;
}
