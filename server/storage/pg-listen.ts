/**
 * A LISTEN subscription that outlives its connection. LISTEN needs a dedicated
 * connection held for the subscription's lifetime; when that connection is lost (a
 * server restart, a network cut) a new one is opened, with exponential backoff and
 * jitter, LISTEN is issued on it again, and `onResubscribed` is told: notices sent while
 * the subscription was down were missed, so the listener re-reads what they would have
 * announced.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { LISTEN_RECONNECT_MAX_MS, LISTEN_RECONNECT_MIN_MS } from '../limits.js';

export interface PgListenOptions {
  readonly connectionString: string;
  readonly channel: string;
  /** Bound on connecting and on the LISTEN statement. */
  readonly timeoutMs: number;
  readonly onNotify: (payload: string) => void;
  readonly onResubscribed?: () => void;
  readonly logger?: Logger;
  /** Uniform in [0, 1), for the backoff jitter. */
  readonly random?: () => number;
}

/** Delay before reconnect attempt `failures + 1`: doubling from the minimum up to the
 * maximum, then jittered down by up to half so that relays that lost the same server
 * don't all come back in step. */
export function listenBackoffMs(failures: number, random: () => number): number {
  const base = Math.min(LISTEN_RECONNECT_MAX_MS, LISTEN_RECONNECT_MIN_MS * 2 ** Math.min(failures, 30));
  return base / 2 + (random() * base) / 2;
}

/** Subscribes to `channel`; resolves (once subscribed) to the unsubscribe function. */
export async function pgListen(opts: PgListenOptions): Promise<() => Promise<void>> {
  const random = opts.random ?? Math.random;
  let current: pg.Client | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;

  /** A connection lost after subscribing: subscribe again (unless stopping). */
  const onLost = (client: pg.Client, err: Error | undefined): void => {
    if (stopped || current !== client) return;
    current = undefined;
    opts.logger?.warn({ err: err && { message: err.message }, channel: opts.channel }, 'listen connection lost; reconnecting');
    schedule();
  };

  const subscribe = async (): Promise<pg.Client> => {
    // query_timeout bounds LISTEN (the only statement this connection runs).
    const client = new pg.Client({ connectionString: opts.connectionString, connectionTimeoutMillis: opts.timeoutMs, query_timeout: opts.timeoutMs });
    let lastError: Error | undefined;
    let ended = false;
    client.on('error', (err) => {
      lastError = err;
    });
    client.on('end', () => {
      ended = true;
      onLost(client, lastError);
    });
    client.on('notification', (msg) => {
      if (msg.channel === opts.channel) opts.onNotify(msg.payload ?? '');
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${pg.escapeIdentifier(opts.channel)}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (ended) throw lastError ?? new Error('the listen connection ended while subscribing');
    current = client;
    return client;
  };

  const schedule = (): void => {
    timer = setTimeout(() => void reconnect(), listenBackoffMs(failures, random));
  };

  const reconnect = async (): Promise<void> => {
    timer = undefined;
    if (stopped) return;
    try {
      const client = await subscribe();
      if (stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      opts.logger?.info({ channel: opts.channel, attempts: failures + 1 }, 'listen connection restored');
      failures = 0;
      opts.onResubscribed?.();
    } catch (err) {
      failures++;
      opts.logger?.debug({ err: { message: (err as Error).message }, attempts: failures }, 'listen reconnect failed');
      schedule();
    }
  };

  await subscribe();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    const client = current;
    current = undefined;
    await client?.end().catch(() => undefined);
  };
}
