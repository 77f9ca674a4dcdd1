/**
 * A topic read fetches from the database only the messages its page holds: the byte
 * bound is applied before the payloads are read, not after, so a page of large messages
 * does not pull MAX_TOPIC_READ_MESSAGES payloads into the relay to keep four of them.
 * And a reset that cannot take a slice's lock from a reader says so with a code.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TOPIC_MESSAGE_BYTES } from '../../protocol/limits.js';
import type { Database, SqlParam } from '../../server/storage/database.js';
import { loadMigrations, migrate } from '../../server/storage/migrate.js';
import { type PublishItem, TopicStore } from '../../server/topics/store.js';
import { pgMissing } from '../helpers/pg.js';
import { STORAGE_DRIVERS } from '../helpers/storage.js';

function big(label: string): PublishItem {
  const payload = new Uint8Array(MAX_TOPIC_MESSAGE_BYTES);
  crypto.randomFillSync(payload);
  return {
    publisherUserId: 'alice',
    publisherDeviceId: 'd1',
    publishId: new TextEncoder().encode(label),
    contentHash: crypto.createHash('sha256').update(payload).digest(),
    payload,
  };
}

describe.each(STORAGE_DRIVERS)('topic reads on $name', (driver) => {
  if (!driver.available) {
    pgMissing(`topic reads on ${driver.name}`);
    return;
  }

  let db: Database;
  let cleanup: () => Promise<void> = async () => undefined;
  /** Payload bytes the database returned to the relay. */
  let fetched = 0;

  beforeAll(async () => {
    ({ db, cleanup } = await driver.open());
    await migrate(db, loadMigrations());
  });

  afterAll(async () => {
    await cleanup();
  });

  /** The database, counting the payload bytes of the rows it returns. */
  function counting(): Database {
    const query = async <Row extends object>(sql: string, params?: readonly SqlParam[]): Promise<Row[]> => {
      const rows = await db.query<Row>(sql, params);
      for (const r of rows) {
        const p = (r as { payload?: unknown }).payload;
        if (p instanceof Uint8Array) fetched += p.byteLength;
      }
      return rows;
    };
    return { ...db, driver: db.driver, packByteArrays: db.packByteArrays, query, transaction: (fn) => db.transaction(fn) } as Database;
  }

  it('reads only the payloads that fit in the page', async () => {
    const store = new TopicStore(db);
    await store.create('reads.big', 'owner');
    for (let i = 0; i < 32; i += 8) await store.publish('reads.big', Array.from({ length: 8 }, (_, k) => big(`m${i + k}`)));
    const reader = new TopicStore(counting());
    fetched = 0;
    const page = await reader.read('reads.big', 1, 1, { maxMessages: 128, maxBytes: 1024 * 1024 });
    expect(page.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4]);
    expect(page.next).toBe(5);
    // The four messages of the page, not the 32 the message bound allows.
    expect(fetched).toBe(4 * MAX_TOPIC_MESSAGE_BYTES);
    // The first message is always read, whatever its size.
    fetched = 0;
    const one = await reader.read('reads.big', 1, 7, { maxBytes: 1 });
    expect(one.messages.map((m) => m.offset)).toEqual([7]);
    expect(fetched).toBe(MAX_TOPIC_MESSAGE_BYTES);
  });

  // Needs a second connection holding the slice: PostgreSQL only (PGlite has one).
  const twoConnections = driver.name === 'pg' ? it : undefined;
  twoConnections?.('answers UNAVAILABLE, changing nothing, when a reader holds a slice past the lock timeout', async () => {
    const store = new TopicStore(db);
    await store.create('reads.held', 'owner');
    await store.publish('reads.held', [big('h1')]);
    let release: () => void = () => undefined;
    let holding: () => void = () => undefined;
    const held = new Promise<void>((r) => (holding = r));
    const reader = db.transaction(async (tx) => {
      await tx.query("SELECT count(*) FROM topic_messages WHERE topic_id = (SELECT topic_id FROM topics WHERE name = 'reads.held')");
      holding();
      await new Promise<void>((r) => (release = r));
    });
    await held;
    let code: string | undefined;
    try {
      await store.reset('reads.held');
    } catch (err) {
      code = (err as { code?: string }).code;
    } finally {
      release();
      await reader;
    }
    expect(code).toBe('UNAVAILABLE');
    expect(await store.info('reads.held')).toMatchObject({ epoch: 1, nextOffset: 2, earliestOffset: 1 });
    expect((await store.reset('reads.held')).epoch).toBe(2);
  });
});
