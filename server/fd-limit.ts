/**
 * The cap on open WebSockets, from the process's file descriptor limit. Every socket is
 * a descriptor; so is every database connection. A relay that accepts sockets up to the
 * limit can no longer open a database connection (EMFILE), and then fails everything.
 * The cap keeps a reserve back (server/limits.ts FD_RESERVE_MARGIN) for the pool, the
 * LISTEN connection and the relay's own files.
 */
import fs from 'node:fs';
import { ConfigError } from './config.js';
import { DB_LISTEN_CONNECTIONS, FALLBACK_MAX_CONNECTIONS, FD_RESERVE_MARGIN } from './limits.js';

/** The soft "Max open files" limit in a /proc/<pid>/limits text; undefined when absent or unlimited. */
export function parseProcLimits(text: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : undefined;
}

/** This process's descriptor limit (Node raises the soft limit to the hard one at
 * startup), or undefined where it cannot be read. */
export function readFdLimit(): number | undefined {
  try {
    return parseProcLimits(fs.readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * How many descriptors this process has open, for the `process_open_fds` gauge; undefined
 * where /proc cannot tell. prom-client's own collector lists /proc/self/fd synchronously
 * on every scrape, one entry per socket: with 19,000 sockets that held the event loop for
 * ~20 ms each scrape (docs/PERFORMANCE.md, "Idle sockets"). Linux 6.2 and later give the
 * count as the size of /proc/self/fd, one stat; older kernels give 0, and the listing is
 * then read on libuv's thread pool, not on the event loop.
 */
export async function openFdCount(): Promise<number | undefined> {
  try {
    const { size } = await fs.promises.stat('/proc/self/fd');
    if (size > 0) return size;
    // Less the descriptor the listing itself held open.
    return (await fs.promises.readdir('/proc/self/fd')).length - 1;
  } catch {
    return undefined;
  }
}

export interface ConnectionCap {
  readonly maxConnections: number;
  /** Descriptors kept back from WebSockets. */
  readonly reserve: number;
  readonly fdLimit: number | undefined;
}

/**
 * The cap: `configured` (HERMETIC_MAX_CONNECTIONS) when set, else the descriptor limit
 * minus the reserve. A configured cap that does not leave the reserve free is refused.
 */
export function connectionCap(opts: { configured: number | undefined; dbPoolMax: number; fdLimit: number | undefined }): ConnectionCap {
  const reserve = opts.dbPoolMax + DB_LISTEN_CONNECTIONS + FD_RESERVE_MARGIN;
  const { fdLimit, configured } = opts;
  if (fdLimit === undefined) return { maxConnections: configured ?? FALLBACK_MAX_CONNECTIONS, reserve, fdLimit };
  const room = fdLimit - reserve;
  if (room < 1) {
    throw new ConfigError(
      `the open-file limit (${fdLimit}) leaves no room for WebSockets after the ${reserve} descriptors kept for the database pool and the relay's files; raise it (ulimit -n) or lower HERMETIC_DB_POOL_MAX`,
    );
  }
  if (configured !== undefined && configured > room) {
    throw new ConfigError(
      `HERMETIC_MAX_CONNECTIONS must be at most ${room}: the open-file limit is ${fdLimit} and ${reserve} descriptors are kept for the database pool and the relay's files (got ${configured})`,
    );
  }
  return { maxConnections: configured ?? room, reserve, fdLimit };
}
