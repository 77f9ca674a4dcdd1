/**
 * One of bank B's workers (examples/bank/run.ts starts two): a device of user `bank-b`,
 * linked by bank B's operations device, consuming bank A's payment topic as a member of
 * the consumer group `bank-b-ledger`. Each payment event is verified by the SDK (signed
 * by a bank A device), then applied to bank B's ledger through the coordinator; the
 * message is acknowledged only once the ledger has committed it.
 *
 * It talks to the coordinator over the IPC channel: it asks for tokens, hands over its
 * link code, and asks the ledger to apply each payment.
 */
import { MemoryStore, type SignedEvent, type TopicMessage, createClient } from '../../client-sdk/node.js';
import { type CoordinatorMessage, LEDGER_GROUP, PAYMENTS_TOPIC, type PaymentFields, type WorkerAsk } from './shared.js';

const name = process.argv[2] ?? 'worker';
const url = process.argv[3] ?? '';

let nextId = 1;
const waiting = new Map<number, { resolve: (v: string) => void; reject: (e: Error) => void }>();

function ask(req: WorkerAsk): Promise<string> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    process.send?.({ ...req, id });
  });
}

/** The payment an event orders, or an error for one that is not a payment. */
function paymentOf(m: TopicMessage): PaymentFields {
  const event = m.event?.event as SignedEvent | undefined;
  if (m.kind !== 'event' || event === undefined || event.type !== 'payment.initiated') throw new Error(`not a payment event (offset ${m.offset})`);
  const d = event.data as { from?: unknown; to?: unknown; amountCents?: unknown };
  if (typeof d.from !== 'string' || typeof d.to !== 'string' || !Number.isSafeInteger(d.amountCents) || (d.amountCents as number) <= 0) {
    throw new Error(`a payment event without from, to and a positive amountCents (${event.id})`);
  }
  return { eventId: event.id, from: d.from, to: d.to, amountCents: d.amountCents as number, jws: m.event!.jws };
}

async function main(): Promise<void> {
  const client = await createClient({ url, userId: 'bank-b', deviceId: name, token: () => ask({ type: 'token' }), store: new MemoryStore() });
  client.on('error', (e) => console.error(`${name}: ${e.code}: ${e.message}`));
  if (client.linkCode !== undefined) await ask({ type: 'link', code: client.linkCode });
  await client.linked;
  let handled = 0;
  const consumer = client.consumer(PAYMENTS_TOPIC, LEDGER_GROUP, { prefetch: 8, onError: (err) => console.error(`${name}: ${(err as Error).message}`) });
  const running = consumer.run(async (m) => {
    const payment = paymentOf(m);
    // Acknowledged when this resolves: after the ledger committed (or refused it as a repeat).
    await ask({ type: 'apply', payment, deliveries: m.deliveries ?? 1 });
    handled++;
  });
  onStop = () => {
    void consumer
      .stop()
      .then(() => client.close())
      .then(() => process.send?.({ type: 'stopped', handled }, () => process.exit(0)));
  };
  process.send?.({ type: 'ready' });
  await running;
}

let onStop: (() => void) | undefined;

process.on('message', (msg: CoordinatorMessage) => {
  if (msg.type === 'stop') {
    onStop?.();
    return;
  }
  const w = waiting.get(msg.id);
  waiting.delete(msg.id);
  if (msg.error !== undefined) w?.reject(new Error(msg.error));
  else w?.resolve(msg.value ?? '');
});

main().catch((err: unknown) => {
  console.error(`${name}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
