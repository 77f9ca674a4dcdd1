/**
 * A socket holder process (forked by bench/sockets.ts): registers its share of the
 * devices, then opens one authenticated WebSocket per device and holds it idle; on
 * request it checks that each is still alive (a `ping` frame answered by a `pong`).
 *
 * Control (parent → child): setup (register the devices), connect, check, close.
 * Answers: registered, connected, checked; fatal on any unexpected failure.
 */
import { type BenchDevice, DeviceSocket } from './device-socket.js';
import { registerDevice } from './relay-process.js';

export interface HolderSetup {
  readonly baseUrl: string;
  readonly wsUrl: string;
  readonly devices: readonly BenchDevice[];
  /** Registrations, and connections being set up, in flight at once. */
  readonly concurrency: number;
}

export type HolderRequest =
  | { readonly type: 'setup'; readonly setup: HolderSetup }
  | { readonly type: 'connect' }
  | { readonly type: 'check'; readonly timeoutMs: number }
  | { readonly type: 'close' };

export type HolderAnswer =
  | { readonly type: 'registered'; readonly ms: number }
  | { readonly type: 'connected'; readonly ok: number; readonly failed: number; readonly firstError: string | undefined; readonly ms: number }
  | { readonly type: 'checked'; readonly open: number; readonly answered: number }
  | { readonly type: 'fatal'; readonly message: string };

/** Pings written per turn of the check, so that the check never floods the relay at once. */
const CHECK_CHUNK = 500;

let setup: HolderSetup | undefined;
const sockets: DeviceSocket[] = [];

function answer(m: HolderAnswer): void {
  process.send?.(m);
}

/** Runs `fn` over `items`, `concurrency` at a time. */
async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

async function register(s: HolderSetup): Promise<void> {
  const t0 = performance.now();
  await pool(s.devices, s.concurrency, (d) => registerDevice(s.baseUrl, d));
  answer({ type: 'registered', ms: performance.now() - t0 });
}

async function connect(s: HolderSetup): Promise<void> {
  const t0 = performance.now();
  let failed = 0;
  let firstError: string | undefined;
  await pool(s.devices, s.concurrency, async (d) => {
    try {
      sockets.push(await DeviceSocket.connect(s.wsUrl, d));
    } catch (err) {
      failed++;
      firstError ??= (err as Error).message;
    }
  });
  answer({ type: 'connected', ok: sockets.length, failed, firstError, ms: performance.now() - t0 });
}

/** Pings every open socket; counts the sockets that answered with their pong. */
async function check(timeoutMs: number): Promise<void> {
  const open = sockets.filter((s) => s.isOpen);
  const answered = new Set<number>();
  let done: () => void = () => undefined;
  const all = new Promise<void>((r) => (done = r));
  open.forEach((s, i) => {
    s.listen({
      onDeliver: () => undefined,
      onText: (text) => {
        if (!text.startsWith('{"type":"pong"')) return;
        answered.add(i);
        if (answered.size === open.length) done();
      },
    });
  });
  for (let i = 0; i < open.length; i += CHECK_CHUNK) {
    for (let j = i; j < Math.min(i + CHECK_CHUNK, open.length); j++) open[j]!.sendText(`{"type":"ping","id":${j}}`);
    await new Promise((r) => setImmediate(r));
  }
  if (open.length > 0) await Promise.race([all, new Promise((r) => setTimeout(r, timeoutMs))]);
  answer({ type: 'checked', open: sockets.filter((s) => s.isOpen).length, answered: answered.size });
}

process.on('message', (m: HolderRequest) => {
  const run = async (): Promise<void> => {
    switch (m.type) {
      case 'setup':
        setup = m.setup;
        return register(m.setup);
      case 'connect':
        return connect(setup!);
      case 'check':
        return check(m.timeoutMs);
      case 'close':
        await Promise.all(sockets.map((s) => s.close()));
        process.exit(0);
    }
  };
  run().catch((err: unknown) => answer({ type: 'fatal', message: (err as Error).stack ?? String(err) }));
});
