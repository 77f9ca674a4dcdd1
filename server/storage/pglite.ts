/**
 * The embedded driver: PGlite, real PostgreSQL compiled to WASM, running in-process on
 * a data directory. It has a single connection, so statements are serialized by PGlite
 * itself; two processes opening the same directory would corrupt it, so the directory
 * is locked with a lock file naming the owner's pid.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { Database, SqlParam } from './database.js';

export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
  readonly code = 'DATA_DIR_LOCKED';
}

const LOCK_FILE = 'hermetic.lock';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the data directory's lock file, or throws DataDirLockedError naming the holder. */
export function lockDataDir(dir: string): () => void {
  fs.mkdirSync(dir, { recursive: true });
  const lockPath = path.join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(lockPath, 'wx', 0o600);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (fs.readFileSync(lockPath, 'utf8').trim() === String(process.pid)) fs.unlinkSync(lockPath);
        } catch {
          /* already gone */
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(fs.readFileSync(lockPath, 'utf8').trim(), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new DataDirLockedError(
          `the data directory ${dir} is in use by another hermetic process (pid ${holder}); ` +
            'stop it first, or point this one at another HERMETIC_DATA_DIR',
        );
      }
      // A stale lock left by a process that died: take it over.
      fs.rmSync(lockPath, { force: true });
    }
  }
  throw new DataDirLockedError(`could not lock the data directory ${dir}`);
}

export interface PgliteOptions {
  /** Directory holding the database files; undefined = in memory (tests). */
  dataDir?: string;
  observe?: (seconds: number) => void;
}

export async function openPglite(opts: PgliteOptions): Promise<Database> {
  const unlock = opts.dataDir ? lockDataDir(opts.dataDir) : () => undefined;
  let db: PGlite;
  try {
    db = opts.dataDir ? await PGlite.create(path.join(opts.dataDir, 'pglite')) : await PGlite.create();
  } catch (err) {
    unlock();
    throw err;
  }
  const observe = opts.observe;
  const timed = async <T>(p: () => Promise<T>): Promise<T> => {
    const t0 = observe ? performance.now() : 0;
    try {
      return await p();
    } finally {
      if (observe) observe((performance.now() - t0) / 1000);
    }
  };
  let closed = false;
  return {
    driver: 'pglite',
    packByteArrays: false,
    query: async <Row extends object>(sql: string, params?: readonly SqlParam[]) =>
      (await timed(() => db.query<Row>(sql, params as unknown[] | undefined))).rows,
    transaction: (fn) =>
      db.transaction((tx) =>
        fn({
          query: async <Row extends object>(sql: string, params?: readonly SqlParam[]) =>
            (await timed(() => tx.query<Row>(sql, params as unknown[] | undefined))).rows,
        }),
      ),
    // One connection and a locked directory: no other session can run concurrently.
    withAdvisoryLock: (_key, fn) =>
      fn({
        query: async <Row extends object>(sql: string, params?: readonly SqlParam[]) =>
          (await db.query<Row>(sql, params as unknown[] | undefined)).rows,
        exec: async (script) => {
          await db.exec(script);
        },
      }),
    listen: async (channel, onNotify) => {
      const unlisten = await db.listen(channel, onNotify);
      return () => unlisten();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await db.close();
      } finally {
        unlock();
      }
    },
  };
}
