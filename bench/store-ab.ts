/**
 * The store path of two source trees side by side: `node --import tsx bench/store-ab.ts
 * --base <dir> [--rounds N]`, where <dir> is a checkout of another commit (with its own
 * node_modules). Each tree gets a fresh database migrated by its own migrations, 32
 * mailboxes, and its own MailboxStore; then, in alternating order so that a busy machine
 * slows both alike, each stores a batch of 512 SENDs (16 of 1 KiB per mailbox) and
 * acknowledges them. Prints the median, p10 and p90 of both times for each tree.
 *
 * For changes to hermetic_store_sends or hermetic_apply_acks on a machine too noisy for
 * the relay benchmark's absolute numbers: interleaving cancels most of the drift.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { DirectoryStore } from '../server/directory/store.js';
import { openPg } from '../server/storage/pg.js';
import { TestDevice } from '../test/helpers/device.js';
import { enrolInStore } from '../test/helpers/storage.js';
import { createDatabase, findPgServer } from './lib/postgres.js';
import { REPO_ROOT } from './lib/relay-process.js';

const BOXES = 32;
const PER_BOX = 16;
const WARMUP_ROUNDS = 5;

interface SendItemLike {
  senderUserId: string;
  senderDeviceId: string;
  envelopeId: Uint8Array;
  contentHash: Uint8Array;
  recipientUserId: string;
  targets: Array<{ deviceId: string; payload: Uint8Array }>;
  ttlSeconds: number;
}

/** The store API both trees share (each tree's own module, loaded from its path). */
interface StoreLike {
  storeBatch(items: SendItemLike[]): Promise<{ results: Array<{ ok: true; stored: Array<{ seq: number }> } | { ok: false; error: { code: string } }> }>;
  ackBatch(acks: Array<{ userId: string; deviceId: string; seq: number }>): Promise<void>;
}

async function tree(root: string, label: string) {
  const { MailboxStore } = (await import(path.join(root, 'server/mailbox/store.ts'))) as { MailboxStore: new (db: unknown, node: string) => StoreLike };
  const { loadMigrations, migrate } = (await import(path.join(root, 'server/storage/migrate.ts'))) as {
    loadMigrations: (dir: string) => unknown[];
    migrate: (db: unknown, m: unknown[]) => Promise<unknown>;
  };
  const tdb = await createDatabase(await findPgServer(), `ab_${label}`);
  const db = await openPg({ connectionString: tdb.url, maxConnections: 4, timeoutMs: 60_000 });
  await migrate(db, loadMigrations(path.join(root, 'migrations')));
  const directory = new DirectoryStore(db);
  const users = Array.from({ length: BOXES }, (_, i) => `r${i}`);
  for (const u of users) await enrolInStore(directory, new TestDevice(u, 'd1'));
  const store = new MailboxStore(db, label);
  const tails = new Map<string, number>();
  return {
    label,
    store: [] as number[],
    ack: [] as number[],
    async round(): Promise<[number, number]> {
      const items: SendItemLike[] = [];
      for (let k = 0; k < PER_BOX; k++) {
        for (const u of users) {
          const payload = crypto.randomBytes(1024);
          items.push({
            senderUserId: 's',
            senderDeviceId: 'd1',
            envelopeId: crypto.randomBytes(16),
            contentHash: crypto.createHash('sha256').update(payload).digest(),
            recipientUserId: u,
            targets: [{ deviceId: 'd1', payload }],
            ttlSeconds: 3600,
          });
        }
      }
      const t0 = performance.now();
      const { results } = await store.storeBatch(items);
      const t1 = performance.now();
      results.forEach((r, i) => {
        if (!r.ok) throw new Error(`${label}: a SEND was refused with ${r.error.code}`);
        const u = items[i]!.recipientUserId;
        tails.set(u, Math.max(tails.get(u) ?? 0, r.stored[0]!.seq));
      });
      await store.ackBatch([...tails].map(([userId, seq]) => ({ userId, deviceId: 'd1', seq })));
      return [t1 - t0, performance.now() - t1];
    },
    async close(): Promise<void> {
      await db.close();
      await tdb.drop();
    },
  };
}

const args = process.argv.slice(2);
const at = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args[i + 1];
};
const base = at('--base');
if (!base) throw new Error('usage: bench/store-ab.ts --base <checkout of another commit> [--rounds N]');
const rounds = Number(at('--rounds') ?? 100);
const trees = [await tree(path.resolve(base), 'base'), await tree(REPO_ROOT, 'this')];
try {
  for (let i = 0; i < rounds + WARMUP_ROUNDS; i++) {
    for (const t of i % 2 === 0 ? trees : [...trees].reverse()) {
      const [s, a] = await t.round();
      if (i < WARMUP_ROUNDS) continue;
      t.store.push(s);
      t.ack.push(a);
    }
  }
  const q = (xs: readonly number[], p: number): string => [...xs].sort((x, y) => x - y)[Math.floor(p * (xs.length - 1))]!.toFixed(1);
  const line = (xs: readonly number[]): string => `median ${q(xs, 0.5)} ms (p10 ${q(xs, 0.1)}, p90 ${q(xs, 0.9)})`;
  for (const t of trees) console.log(`${t.label}: store ${BOXES * PER_BOX} SENDs ${line(t.store)}; ack ${BOXES} mailboxes ${line(t.ack)}`);
} finally {
  for (const t of trees) await t.close();
}
