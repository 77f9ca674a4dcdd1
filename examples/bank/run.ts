/**
 * `npm run bank`: two banks exchange signed payment events over a Hermetic topic, and the
 * receiving bank processes every one exactly once although one of its workers is killed
 * in the middle of the run.
 *
 * DEVELOPMENT ONLY, like `npm run demo`: it starts a relay in this process in dev mode (it
 * issues its own tokens), on embedded storage in a temporary directory (or --data-dir),
 * listening on 127.0.0.1.
 *
 * - Bank A (user `bank-a`) publishes payment events, each signed with its device key
 *   (`publishEvent`), end-to-end encrypted for bank B's devices, to the topic
 *   `bank-a.payments`. The event id is the publish id.
 * - Bank B (user `bank-b`) has an operations device (here, in this process) that creates
 *   the consumer group `bank-b-ledger` and links two worker devices. The workers are child
 *   processes (examples/bank/worker.ts) that consume the group.
 * - Each worker applies a payment to bank B's ledger (examples/bank/ledger.ts, an embedded
 *   PostgreSQL). The event id is the ledger's idempotency key, recorded in the same
 *   transaction as the money moves. The worker acknowledges only after the commit.
 * - Once a quarter of the payments are applied, worker-1 is killed (SIGKILL) just after
 *   the ledger committed one of them and before it could acknowledge. The relay gives its
 *   unacknowledged leases to worker-2. The payment that was applied but not acknowledged
 *   comes again, and the ledger refuses it as a repeat.
 *
 * The run ends when the group has acknowledged every payment. It prints the counts, and
 * exits 0 only if every event was applied exactly once and the totals match.
 *
 * Options: --events <n> (default 200), --data-dir <dir>.
 */
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type HermeticClient, MemoryStore, createClient } from '../../client-sdk/node.js';
import { type TopicsClaim, openDevIssuer } from '../../server/auth/dev-issuer.js';
import { createLogger, loadConfig, startRelay } from '../../server/index.js';
import { Ledger } from './ledger.js';
import { type CoordinatorMessage, LEDGER_GROUP, PAYMENTS_TOPIC, type WorkerRequest } from './shared.js';

const DEAD_LETTER_TOPIC = 'bank-a.payments-dlq';
const TOKEN_TTL_S = 3600;
/** Payments bank A has in flight at once. */
const PUBLISH_CONCURRENCY = 8;
const ACCOUNTS = ['DE89-3704-0044', 'FR14-2004-1010', 'NL91-ABNA-0417', 'IT60-X054-2811'];
const HERE = path.dirname(fileURLToPath(import.meta.url));

function fail(message: string): never {
  console.error(`hermetic bank: ${message}`);
  process.exit(2);
}

const euros = (cents: number): string => `${(cents / 100).toLocaleString('en', { minimumFractionDigits: 2 })} EUR`;

async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  if (process.env.NODE_ENV === 'production') fail('refused with NODE_ENV=production: this example runs a relay that issues its own tokens');
  let args;
  try {
    args = parseArgs({ options: { events: { type: 'string' }, 'data-dir': { type: 'string' } } }).values;
  } catch (err) {
    fail(`${(err as Error).message}\nusage: npm run bank -- [--events <n>] [--data-dir <dir>]`);
  }
  const total = args.events === undefined ? 200 : Number(args.events);
  if (!Number.isInteger(total) || total < 8 || total > 100_000) fail('--events must be 8..100000');
  const ownDir = args['data-dir'] === undefined;
  const dataDir = path.resolve(args['data-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hermetic-bank-')));

  const config = loadConfig({ PORT: '0', HERMETIC_HOST: '127.0.0.1', HERMETIC_DATA_DIR: dataDir, HERMETIC_LOG_LEVEL: 'error' });
  const relay = await startRelay(config, createLogger(config.logLevel));
  const issuer = await openDevIssuer(dataDir);
  const url = `http://127.0.0.1:${relay.port}`;
  const ledger = await Ledger.open();
  const workers = new Map<string, ChildProcess>();
  const clients: HermeticClient[] = [];
  const cleanup = async (): Promise<void> => {
    for (const w of workers.values()) w.kill('SIGKILL');
    for (const c of clients) await c.close().catch(() => undefined);
    await relay.stop().catch(() => undefined);
    await ledger.close().catch(() => undefined);
    if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
  };

  try {
    // Bank A may create and publish its own topics; bank B may consume the payments (and
    // the relay publishes its dead letters for it into bank A's dead-letter topic).
    const grants: Record<string, TopicsClaim> = {
      'bank-a': { create: ['bank-a.>'], publish: ['bank-a.>'] },
      'bank-b': { subscribe: [PAYMENTS_TOPIC, DEAD_LETTER_TOPIC], consume: [PAYMENTS_TOPIC], publish: [DEAD_LETTER_TOPIC] },
    };
    const token = (userId: string) => () => issuer.mint(userId, TOKEN_TTL_S, { topics: grants[userId] });
    const bankA = await createClient({ url, userId: 'bank-a', deviceId: 'payments-gateway', token: token('bank-a'), store: new MemoryStore() });
    const ops = await createClient({ url, userId: 'bank-b', deviceId: 'operations', token: token('bank-b'), store: new MemoryStore() });
    clients.push(bankA, ops);
    for (const c of clients) c.on('error', (e) => console.error(`${c.userId}/${c.deviceId}: ${e.code}: ${e.message}`));
    await bankA.createTopic(PAYMENTS_TOPIC, { retentionMs: 7 * 24 * 3600_000 });
    await bankA.createTopic(DEAD_LETTER_TOPIC, { retentionMs: 30 * 24 * 3600_000 });
    await ops.createGroup(PAYMENTS_TOPIC, { name: LEDGER_GROUP, deadLetterTopic: DEAD_LETTER_TOPIC, visibilityMs: 10_000, maxDeliveries: 10 });

    // Bank B's two workers: each a device of bank-b, linked by the operations device.
    const stats = { applied: new Map<string, number>(), duplicates: 0, redelivered: 0, handled: new Map<string, number>() };
    const killAfter = Math.floor(total / 4);
    let killed: { eventId: string } | undefined;
    const ready = new Set<string>();
    const start = (name: string): ChildProcess => {
      const child = fork(path.join(HERE, 'worker.ts'), [name, url], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const answer = (id: number, value: string | undefined, error?: string): void => {
        if (child.connected) child.send({ type: 'answer', id, value, ...(error === undefined ? {} : { error }) } satisfies CoordinatorMessage);
      };
      child.on('message', (req: WorkerRequest) => {
        void (async () => {
          switch (req.type) {
            case 'token':
              answer(req.id, await token('bank-b')());
              return;
            case 'link':
              await ops.linkDevice(req.code);
              answer(req.id, 'linked');
              return;
            case 'ready':
              ready.add(name);
              return;
            case 'stopped':
              stats.handled.set(name, req.handled);
              return;
            case 'apply': {
              if (req.deliveries > 1) stats.redelivered++;
              const result = await ledger.apply(req.payment, name);
              if (result === 'duplicate') stats.duplicates++;
              else stats.applied.set(name, (stats.applied.get(name) ?? 0) + 1);
              if (name === 'worker-1' && killed === undefined && result === 'applied' && [...stats.applied.values()].reduce((a, b) => a + b, 0) >= killAfter) {
                // Committed in the ledger, not yet acknowledged to the relay: the worst moment.
                killed = { eventId: req.payment.eventId };
                child.kill('SIGKILL');
                console.log(`bank B: killed worker-1 (SIGKILL) after the ledger applied ${req.payment.eventId}, before worker-1 could acknowledge it`);
                return;
              }
              answer(req.id, result);
              return;
            }
          }
        })().catch((err: unknown) => {
          if ('id' in req) answer(req.id, undefined, (err as Error).message);
        });
      });
      workers.set(name, child);
      return child;
    };
    start('worker-1');
    start('worker-2');
    await waitUntil('both workers to be linked and consuming', () => ready.size === 2, 60_000);
    console.log(`bank B: worker-1 and worker-2 linked to bank-b and consuming ${PAYMENTS_TOPIC} as group ${LEDGER_GROUP}`);

    // Bank A publishes the payments, signed and end-to-end encrypted for bank B's devices.
    const payments = bankA.topic(PAYMENTS_TOPIC, { readers: ['bank-b'] });
    let publishedCents = 0;
    let next = 0;
    const publisher = async (): Promise<void> => {
      while (next < total) {
        const i = next++;
        const amountCents = 100 + ((i * 7919) % 250_000);
        const from = ACCOUNTS[i % ACCOUNTS.length] as string;
        const to = ACCOUNTS[(i + 1) % ACCOUNTS.length] as string;
        const eventId = `pay-${String(i + 1).padStart(6, '0')}`;
        const r = await payments.publishEvent({ id: eventId, type: 'payment.initiated', subject: from, data: { from, to, amountCents, currency: 'EUR' } }, { key: from });
        if (!r.duplicate) publishedCents += amountCents;
      }
    };
    await Promise.all(Array.from({ length: PUBLISH_CONCURRENCY }, publisher));
    console.log(`bank A: published ${total} signed payment events (${euros(publishedCents)}) to ${PAYMENTS_TOPIC}`);

    // Done when the group has acknowledged every payment.
    await waitUntil('bank B to acknowledge every payment', async () => {
      const g = await ops.groupInfo(PAYMENTS_TOPIC, LEDGER_GROUP);
      return g.committedOffset > total && g.inFlight === 0;
    }, 120_000);
    const group = await ops.groupInfo(PAYMENTS_TOPIC, LEDGER_GROUP);
    const survivor = workers.get('worker-2') as ChildProcess;
    survivor.send({ type: 'stop' } satisfies CoordinatorMessage);
    await waitUntil('worker-2 to stop', () => stats.handled.has('worker-2'), 30_000);
    workers.delete('worker-2');

    const s = await ledger.summary();
    const exactlyOnce = s.payments === total && s.distinct === total && s.totalCents === publishedCents && s.sumOfBalances === 0 && group.deadLettered === 0;
    console.log(
      [
        '',
        'result:',
        `  published by bank A:             ${total} payment events, ${euros(publishedCents)}`,
        `  applied to bank B's ledger:      ${s.payments} payments, ${euros(s.totalCents)} (worker-1 ${s.byWorker['worker-1'] ?? 0}, worker-2 ${s.byWorker['worker-2'] ?? 0})`,
        `  worker-1 killed after applying:  ${killed?.eventId ?? 'never (the run ended first)'}`,
        `  delivered again after the kill:  ${stats.redelivered}`,
        `  refused as repeats by the ledger: ${stats.duplicates}`,
        `  dead-lettered:                   ${group.deadLettered}`,
        `  balances sum to:                 ${euros(s.sumOfBalances)}`,
        `exactly once: ${exactlyOnce ? 'yes' : 'NO'} (every event applied ${exactlyOnce ? 'once' : 'not exactly once'}; ${s.distinct} distinct of ${total})`,
      ].join('\n'),
    );
    await cleanup();
    process.exit(exactlyOnce && killed !== undefined ? 0 : 1);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

main().catch((err: unknown) => {
  console.error(`hermetic bank: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
