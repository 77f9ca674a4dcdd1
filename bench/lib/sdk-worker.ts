/**
 * An SDK worker process (forked by bench/sdk.ts through bench/lib/load.ts): it runs real
 * SDK clients (createClient from hermetic/client for Node) against the relay and counts
 * what the application sees. Every message goes the whole way: encrypt, SEND, stored by
 * the relay, DELIVER, decrypt, persisted in the inbox with the session, ACK, and the
 * application marks it done; it counts once `done()` has resolved.
 *
 * - throughput: each sender keeps `window` `send()` calls unresolved (pipelining) to its
 *   own recipient user.
 * - latency: the senders together send at a fixed rate, open loop, each body carrying the
 *   time it was sent; the recipient takes the difference once `done()` resolves. Sender
 *   and recipient share this process, so one clock measures both ends.
 * - fanout: one sender device with two other devices of its own sends to a user with
 *   five devices (a `window` of sends in flight); every message is done on seven devices.
 *
 * Control (parent → child): setup, start, measure, stop, close (as the load generator).
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FileStore, type HermeticClient, MemoryStore, type Message, type ReceiptPolicy, type Store, createClient } from '../../client-sdk/node.js';
import type { ParentMessage } from './load-protocol.js';
import { pace } from './pacing.js';

export interface SdkUser {
  readonly userId: string;
  readonly token: string;
}

export interface SdkWorkerSetup {
  readonly baseUrl: string;
  readonly mode: 'throughput' | 'latency' | 'fanout';
  readonly store: 'memory' | 'file';
  /** The file store's directory (one subdirectory per device). */
  readonly storeDir: string | undefined;
  /** throughput and latency: sender → recipient users, one device each. */
  readonly pairs: ReadonlyArray<{ readonly sender: SdkUser; readonly recipient: SdkUser }>;
  /** fanout: the sender's user and the recipient's. */
  readonly fanout: { readonly sender: SdkUser; readonly recipient: SdkUser; readonly ownDevices: number; readonly recipientDevices: number } | undefined;
  readonly bodyBytes: number;
  /** The clients' receipt policy (undefined: the SDK's default). */
  readonly receipts?: ReceiptPolicy | undefined;
  /** `send()` calls unresolved per sender (throughput, fanout); a safety cap in latency mode. */
  readonly window: number;
  /** latency: messages per second offered by this worker's senders together. */
  readonly ratePerSecond: number;
}

export interface SdkWorkerReport {
  readonly type: 'report';
  readonly elapsedMs: number;
  /** Messages marked done by their recipients in the window (fanout: device deliveries). */
  readonly done: number;
  /** `send()` calls resolved (STORED) in the window. */
  readonly sent: number;
  /** latency: scheduled sends skipped because a sender had `window` unresolved. */
  readonly throttled: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly cpuMs: number;
  /** latency: ms from send() to done() of each message sent in the window. */
  readonly latencies: readonly number[];
}

type Reply = SdkWorkerReport | { readonly type: 'ready' } | { readonly type: 'fatal'; readonly message: string };

interface Sender {
  readonly client: HermeticClient;
  readonly to: string;
  inflight: number;
}

let setup: SdkWorkerSetup | undefined;
const senders: Sender[] = [];
const clients: HermeticClient[] = [];
let sending = false;
let measuring = false;
let measureStart = 0;
let cpuAtMeasure: NodeJS.CpuUsage | undefined;
let done = 0;
let sent = 0;
let throttled = 0;
const errors = new Map<string, number>();
let latencies: number[] = [];

function reply(m: Reply): void {
  process.send?.(m);
}

function noteError(err: unknown): void {
  const code = (err as { code?: unknown }).code;
  const key = typeof code === 'string' ? code : (err as Error).message ?? 'unknown';
  errors.set(key, (errors.get(key) ?? 0) + 1);
}

async function openStore(name: string): Promise<Store> {
  const s = setup!;
  if (s.store === 'memory') return new MemoryStore();
  const dir = path.join(s.storeDir as string, name);
  fs.mkdirSync(dir, { recursive: true });
  return FileStore.open(dir);
}

async function open(user: SdkUser, device: string): Promise<HermeticClient> {
  const client = await createClient({
    url: setup!.baseUrl,
    userId: user.userId,
    deviceId: device,
    token: () => user.token,
    store: await openStore(`${user.userId}-${device}`),
    receipts: setup!.receipts,
  });
  clients.push(client);
  client.on('error', (e) => noteError(e));
  return client;
}

async function online(client: HermeticClient): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (client.state.state !== 'online') {
    if (Date.now() > deadline) throw new Error(`${client.userId}/${client.deviceId} did not come online: ${JSON.stringify(client.state)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The application: marks each message done, then counts it (and its latency). */
function consume(client: HermeticClient): void {
  client.on('message', (m: Message) => {
    m.done().then(
      () => {
        if (!measuring) return;
        done++;
        if (setup!.mode !== 'latency' || !(m.body instanceof Uint8Array)) return;
        const sentAt = new DataView(m.body.buffer, m.body.byteOffset, 8).getFloat64(0, true);
        if (sentAt >= measureStart) latencies.push(performance.now() - sentAt);
      },
      (err: unknown) => noteError(err),
    );
  });
}

function body(sentAt: number): Uint8Array {
  const b = new Uint8Array(setup!.bodyBytes);
  new DataView(b.buffer).setFloat64(0, sentAt, true);
  return b;
}

function sendOne(st: Sender): void {
  st.inflight++;
  st.client.send(st.to, body(performance.now())).then(
    () => {
      st.inflight--;
      if (measuring) sent++;
      if (setup!.mode !== 'latency') refill(st);
    },
    (err: unknown) => {
      st.inflight--;
      noteError(err);
      if (setup!.mode !== 'latency') setTimeout(() => refill(st), 100);
    },
  );
}

function refill(st: Sender): void {
  while (sending && st.inflight < setup!.window) sendOne(st);
}

/** Open-loop pacing: the schedule never waits for answers. */
function startPacing(): void {
  pace(setup!.ratePerSecond, senders.length, () => sending, (lane) => {
    const st = senders[lane]!;
    if (st.inflight >= setup!.window) {
      if (measuring) throttled++;
      return;
    }
    sendOne(st);
  });
}

async function onSetup(s: SdkWorkerSetup): Promise<void> {
  setup = s;
  if (s.mode === 'fanout') {
    const f = s.fanout!;
    const sender = await open(f.sender, 'send-0');
    const recipients = [await open(f.recipient, 'recv-0')];
    // Every further device joins its user's list through the device-linking flow.
    const link = async (by: HermeticClient, user: SdkUser, device: string): Promise<HermeticClient> => {
      const c = await open(user, device);
      await by.linkDevice(c.linkCode!);
      await c.linked;
      return c;
    };
    const own: HermeticClient[] = [];
    for (let i = 1; i <= f.ownDevices; i++) own.push(await link(sender, f.sender, `send-${i}`));
    for (let i = 1; i < f.recipientDevices; i++) recipients.push(await link(recipients[0]!, f.recipient, `recv-${i}`));
    for (const c of [...own, ...recipients]) consume(c);
    senders.push({ client: sender, to: f.recipient.userId, inflight: 0 });
  } else {
    for (const p of s.pairs) {
      const recipient = await open(p.recipient, 'dev-1');
      consume(recipient);
      senders.push({ client: await open(p.sender, 'dev-1'), to: p.recipient.userId, inflight: 0 });
    }
  }
  await Promise.all(clients.map(online));
  reply({ type: 'ready' });
}

function report(): SdkWorkerReport {
  const cpu = process.cpuUsage(cpuAtMeasure);
  return {
    type: 'report',
    elapsedMs: performance.now() - measureStart,
    done,
    sent,
    throttled,
    errors: Object.fromEntries(errors),
    cpuMs: (cpu.user + cpu.system) / 1000,
    latencies,
  };
}

async function closeAll(): Promise<void> {
  sending = false;
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
}

process.on('message', (m: ParentMessage | { type: 'setup'; setup: SdkWorkerSetup }) => {
  switch (m.type) {
    case 'setup':
      onSetup(m.setup as unknown as SdkWorkerSetup).catch((err: unknown) => reply({ type: 'fatal', message: (err as Error).stack ?? String(err) }));
      return;
    case 'start':
      sending = true;
      if (setup!.mode === 'latency') startPacing();
      else for (const st of senders) refill(st);
      return;
    case 'measure':
      done = sent = throttled = 0;
      errors.clear();
      latencies = [];
      measuring = true;
      measureStart = performance.now();
      cpuAtMeasure = process.cpuUsage();
      return;
    case 'stop': {
      const rep = report();
      measuring = false;
      sending = false;
      reply(rep);
      return;
    }
    case 'close':
      void closeAll().finally(() => process.exit(0));
      return;
  }
});

process.on('disconnect', () => process.exit(0));
