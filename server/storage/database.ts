/**
 * The storage driver contract: the few operations the relay needs from PostgreSQL,
 * implemented by `pg` (a server) and PGlite (embedded, WASM). One SQL dialect and one
 * set of migrations serve both; domain stores are written once against this interface.
 */
export type SqlParam = string | number | bigint | boolean | null | Uint8Array | readonly SqlParam[] | Date;

export interface SqlExecutor {
  /** Runs one statement with `$n` parameters and returns its rows. */
  query<Row extends object = Record<string, unknown>>(sql: string, params?: readonly SqlParam[]): Promise<Row[]>;
}

export interface QueryOptions {
  /** Bound on this call (getting a connection and running the statement), below the
   * driver's own; beyond it the call fails with DatabaseUnavailableError. */
  readonly timeoutMs?: number;
}

/** A connection that can also run a multi-statement script (a migration file). */
export interface ScriptExecutor extends SqlExecutor {
  exec(script: string): Promise<void>;
}

export type DriverName = 'pg' | 'pglite';

export interface Database extends SqlExecutor {
  readonly driver: DriverName;
  /**
   * Whether a list of byte strings is cheaper passed packed into one binary string (cut
   * apart in SQL) than as a bytea[] parameter: true for a server connection, where `pg`
   * sends an array of bytea as hex text the server must parse; false in process.
   */
  readonly packByteArrays: boolean;
  query<Row extends object = Record<string, unknown>>(sql: string, params?: readonly SqlParam[], opts?: QueryOptions): Promise<Row[]>;
  /** Runs `fn` in one transaction: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /**
   * Runs `fn` while holding a session-level advisory lock, on one connection, so that
   * concurrent processes (several relays starting together) take turns.
   */
  withAdvisoryLock<T>(key: bigint, fn: (conn: ScriptExecutor) => Promise<T>): Promise<T>;
  /**
   * Subscribes to NOTIFY on `channel`; resolves to an unsubscribe function. A driver whose
   * subscription can be lost (a server connection) subscribes again by itself and then
   * calls `onResubscribed`: notices sent meanwhile were missed.
   */
  listen(channel: string, onNotify: (payload: string) => void, onResubscribed?: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** Errors from the database are reported with the driver's SQLSTATE where present. */
export function sqlState(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

export const UNIQUE_VIOLATION = '23505';

/**
 * The database could not be reached, dropped the connection, or did not answer within
 * the relay's bound. Whether a statement that was running took effect is unknown, which
 * is why writes are idempotent: the peer is told UNAVAILABLE and retries.
 */
export class DatabaseUnavailableError extends Error {
  override readonly name = 'DatabaseUnavailableError';
}
