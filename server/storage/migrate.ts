/**
 * Forward-only migrations: migrations/NNNN_verb_noun.sql, applied in order, each in its
 * own transaction, under an advisory lock so that relays starting together take turns,
 * and recorded in schema_migrations. Applying them twice is a no-op the second time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from './database.js';

/** Arbitrary constant naming "hermetic schema migrations" among advisory locks. */
const MIGRATION_LOCK_KEY = 0x6865726d_6d696772n; // "hermmigr"

const FILE_PATTERN = /^(\d{4})_[a-z0-9_]+\.sql$/;

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** The package root (the folder with package.json), from source or from the build. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'migrations'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the hermetic package root (package.json beside migrations/)');
    dir = parent;
  }
}

export function loadMigrations(dir = path.join(packageRoot(), 'migrations')): Migration[] {
  const out: Migration[] = [];
  for (const name of fs.readdirSync(dir).sort()) {
    const m = FILE_PATTERN.exec(name);
    if (!m) continue;
    out.push({ version: Number(m[1]), name, sql: fs.readFileSync(path.join(dir, name), 'utf8') });
  }
  out.forEach((mig, i) => {
    if (mig.version !== i + 1) throw new Error(`migration ${mig.name} is out of sequence: expected version ${i + 1}`);
  });
  return out;
}

export interface MigrateResult {
  readonly applied: readonly string[];
  readonly current: number;
}

export async function migrate(db: Database, migrations = loadMigrations()): Promise<MigrateResult> {
  return db.withAdvisoryLock(MIGRATION_LOCK_KEY, async (conn) => {
    await conn.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const rows = await conn.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    const done = new Set(rows.map((r) => Number(r.version)));
    const applied: string[] = [];
    for (const mig of migrations) {
      if (done.has(mig.version)) continue;
      await conn.exec('BEGIN');
      try {
        await conn.exec(mig.sql);
        await conn.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [mig.version, mig.name]);
        await conn.exec('COMMIT');
      } catch (err) {
        await conn.exec('ROLLBACK').catch(() => undefined);
        throw new Error(`migration ${mig.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(mig.name);
    }
    return { applied, current: migrations.length };
  });
}

/** True when every known migration has been applied (for /readyz); false as well when
 * the database does not answer within `timeoutMs`. */
export async function migrationsCurrent(db: Database, expected: number, timeoutMs?: number): Promise<boolean> {
  try {
    const rows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations', [], timeoutMs === undefined ? undefined : { timeoutMs });
    return Number(rows[0]?.n) >= expected;
  } catch {
    return false;
  }
}
