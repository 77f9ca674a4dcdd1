/**
 * Confidentiality end to end: after a conversation (1:1 in every body kind, multi-device,
 * a group, a topic read by a subscriber and by a consumer group), no plaintext marker the test sent appears anywhere in the relay's database —
 * every table, every column, read as text with bytea in hex — or in the relay's log
 * output (at trace level).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, startWorld, waitFor } from './helpers.js';

const MARKER = 'Zq7-PLAINTEXT-MARKER-9vX';

describe('confidentiality through the relay', () => {
  if (!pgServer) {
    pgMissing('confidentiality through the relay');
    return;
  }
  let db: TestDatabase;
  let world: SdkWorld;

  beforeAll(async () => {
    db = await createTestDatabase();
    world = await startWorld({ databaseUrl: db.url, logLevel: 'trace' });
  });

  afterAll(async () => {
    await killAllRelays();
    await db?.drop();
  });

  it('no marker in any table or in the logs', async () => {
    const claims = { hermetic_topics: { create: ['conf.>'], publish: ['conf.>'], subscribe: ['conf.>'], consume: ['conf.>'] } };
    const token = (userId: string) => () => world.issuer.mint(userId, { claims });
    const alice = observe(await newClient(world, 'conf-alice', { token: token('conf-alice') }), { autoDone: false });
    const bob = observe(await newClient(world, 'conf-bob', { token: token('conf-bob') }), { autoDone: false });
    const bob2Client = await newClient(world, 'conf-bob', { token: token('conf-bob') });
    await bob.client.linkDevice(bob2Client.linkCode!);
    await bob2Client.linked;
    const bob2 = observe(bob2Client, { autoDone: false });
    // Bob's devices stay offline for some of it, so envelopes sit in the database.
    bob.client.disconnect();
    await alice.client.send('conf-bob', `text ${MARKER}`);
    await alice.client.send('conf-bob', new TextEncoder().encode(`bytes ${MARKER}`));
    await alice.client.send('conf-bob', { note: MARKER });
    await alice.client.group('conf-group', ['conf-alice', 'conf-bob']).send(`group ${MARKER}`);
    await bob2.received(4);
    // A topic: read by a subscription and by a consumer group member.
    await alice.client.createTopic('conf.news');
    await alice.client.createTopic('conf.news-dlq');
    await alice.client.createGroup('conf.news', { name: 'readers', deadLetterTopic: 'conf.news-dlq' });
    const news = alice.client.topic('conf.news', { readers: ['conf-bob'] });
    await news.publish(`topic ${MARKER}`);
    await news.publish({ note: MARKER }, { key: 'k1' });
    const read: unknown[] = [];
    const sub = bob2Client.topic('conf.news').subscribe((m) => void read.push(m.body), { from: 'earliest' });
    const consumed: unknown[] = [];
    const consumer = bob2Client.consumer('conf.news', 'readers');
    const running = consumer.run((m) => void consumed.push(m.body));
    await waitFor('the topic read both ways', () => (read.length === 2 && consumed.length === 2 ? true : undefined));
    expect(JSON.stringify([read, consumed])).toContain(MARKER);
    await consumer.stop();
    await running;
    await sub.close();
    const sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    try {
      const tables = await sql.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'");
      expect(tables.rows.map((r) => r.table_name)).toEqual(expect.arrayContaining(['envelopes', 'envelope_partitions', 'devices', 'device_list_entries', 'topic_messages', 'group_leases']));
      const markerHex = Buffer.from(MARKER, 'utf8').toString('hex');
      let rowsRead = 0;
      for (const { table_name } of tables.rows) {
        const rows = await sql.query<{ t: string }>(`SELECT t::text AS t FROM ${pg.escapeIdentifier(table_name)} t`);
        rowsRead += rows.rows.length;
        for (const r of rows.rows) {
          expect(r.t.includes(MARKER), `${table_name} holds the marker`).toBe(false);
          expect(r.t.toLowerCase().includes(markerHex), `${table_name} holds the marker's bytes`).toBe(false);
        }
      }
      // The envelopes for Bob's offline device are there, as ciphertext.
      expect(Number((await sql.query('SELECT count(*)::int AS n FROM envelopes')).rows[0].n)).toBeGreaterThan(0);
      expect(Number((await sql.query('SELECT count(*)::int AS n FROM topic_messages')).rows[0].n)).toBe(2);
      expect(rowsRead).toBeGreaterThan(10);
    } finally {
      await sql.end();
    }
    const logs = world.relay.stdout() + world.relay.stderr();
    expect(world.relay.logs().length).toBeGreaterThan(3); // the relay did log, at trace level
    expect(logs.includes(MARKER)).toBe(false);
    // And Bob's other device gets them all once it connects: the marker was really sent.
    bob.client.connect();
    expect((await bob.received(4)).map((m) => (m.body instanceof Uint8Array ? new TextDecoder().decode(m.body) : JSON.stringify(m.body)))).toEqual(
      expect.arrayContaining([expect.stringContaining(MARKER)]),
    );
    for (const c of [alice, bob, bob2]) await c.client.close();
  });
});
