/**
 * The pg driver's named prepared statements: a text is prepared once per connection and
 * reused; past MAX_PREPARED_TEXTS distinct texts new ones run unnamed; a table changed
 * under a prepared statement is planned again by PostgreSQL.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database } from '../../server/storage/database.js';
import { MAX_PREPARED_TEXTS, openPg } from '../../server/storage/pg.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';

describe('the pg driver\'s prepared statements', () => {
  if (!pgServer) {
    pgMissing('the pg driver\'s prepared statements');
    return;
  }
  let tdb: TestDatabase;
  let db: Database;

  beforeAll(async () => {
    tdb = await createTestDatabase();
    db = await openPg({ connectionString: tdb.url, maxConnections: 1, timeoutMs: 10_000 });
    await db.query('CREATE TABLE prep (a int PRIMARY KEY)');
    await db.query('INSERT INTO prep SELECT g FROM generate_series(1, 10) g');
  });

  afterAll(async () => {
    await db?.close();
    await tdb?.drop();
  });

  const prepared = async (): Promise<string[]> => (await db.query<{ statement: string }>('SELECT statement FROM pg_prepared_statements WHERE name LIKE $1 ORDER BY statement', ['h%'])).map((r) => r.statement);

  it('prepares each text once on a connection, and runs it with other values', async () => {
    for (let i = 1; i <= 5; i++) expect(await db.query('SELECT a FROM prep WHERE a = $1', [i])).toEqual([{ a: i }]);
    expect((await prepared()).filter((t) => t === 'SELECT a FROM prep WHERE a = $1')).toHaveLength(1);
  });

  it('runs texts past the bound unnamed, correctly', async () => {
    for (let i = 0; i < MAX_PREPARED_TEXTS + 20; i++) {
      const [r] = await db.query<{ v: number }>(`SELECT $1::int + ${i} AS v`, [1]);
      expect(r!.v).toBe(1 + i);
    }
    expect((await prepared()).length).toBeLessThanOrEqual(MAX_PREPARED_TEXTS);
  });

  it('reads a table changed under a prepared statement as it is now', async () => {
    expect(await db.query('SELECT * FROM prep WHERE a = $1', [3])).toEqual([{ a: 3 }]);
    const admin = new pg.Client({ connectionString: tdb.url });
    await admin.connect();
    await admin.query('ALTER TABLE prep ADD COLUMN b int DEFAULT 7');
    await admin.end();
    expect(await db.query('SELECT * FROM prep WHERE a = $1', [3])).toEqual([{ a: 3, b: 7 }]);
  });
});
