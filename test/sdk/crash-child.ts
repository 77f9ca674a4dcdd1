/**
 * A receiving client in its own process, for the crash tests: it opens its device from a
 * file store, prints a JSON line for every message offered, every call of done() and
 * every done() resolved, and
 * kills itself with SIGKILL at the configured point of receiving.
 *
 * argv[2]: JSON { url, userId, token, storeDir, crashAt?, crashSeq?, expect, expectSeqs?, settleMs? }:
 * it finishes once `expect` messages (or, given `expectSeqs`, those sequences) are done,
 * after `settleMs` more for anything offered late.
 */
import { FileStore, createClient } from '../../client-sdk/node.js';

interface Config {
  url: string;
  userId: string;
  token: string;
  storeDir: string;
  crashAt?: string;
  crashSeq?: number;
  expect: number;
  expectSeqs?: number[];
  settleMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const out = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const client = await createClient({
  url: cfg.url,
  userId: cfg.userId,
  token: cfg.token,
  store: await FileStore.open(cfg.storeDir),
  faultHook: (point, seq) => {
    // Batch points report the batch's last sequence; 'done' is per message, and messages
    // may be marked done out of order, so it stops at exactly that one.
    const due = point === 'done' ? seq === cfg.crashSeq : seq >= (cfg.crashSeq ?? 0);
    if (point === cfg.crashAt && due) {
      out({ crash: point, seq });
      process.kill(process.pid, 'SIGKILL');
    }
  },
});
out({ ready: client.deviceId });
const seen = new Set<string>();
const doneSeqs = new Set<number>();
let finishing = false;
const finish = (): void => {
  if (finishing) return;
  finishing = true;
  setTimeout(() => {
    out({ finished: seen.size });
    void client.close().then(() => process.exit(0));
  }, cfg.settleMs ?? 0);
};
const complete = (): boolean => (cfg.expectSeqs ? cfg.expectSeqs.every((s) => doneSeqs.has(s)) : seen.size >= cfg.expect);
client.on('message', (m) => {
  out({ offered: m.id, seq: m.seq, body: m.body });
  seen.add(m.id);
  out({ marking: m.id, seq: m.seq });
  void m.done().then(() => {
    out({ done: m.id, seq: m.seq });
    doneSeqs.add(m.seq);
    if (complete()) finish();
  });
});
if (cfg.expect === 0 && (cfg.expectSeqs?.length ?? 0) === 0) {
  if (!cfg.settleMs) {
    await client.close();
    process.exit(0);
  }
  finish();
}
