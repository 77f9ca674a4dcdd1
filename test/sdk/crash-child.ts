/**
 * A receiving client in its own process, for the crash tests: it opens its device from a
 * file store, prints a JSON line for every message offered and every one marked done, and
 * kills itself with SIGKILL at the configured point of receiving.
 *
 * argv[2]: JSON { url, userId, token, storeDir, crashAt?, crashSeq?, expect }
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
client.on('message', (m) => {
  out({ offered: m.id, seq: m.seq, body: m.body });
  seen.add(m.id);
  void m.done().then(() => {
    out({ done: m.id, seq: m.seq });
    if (seen.size >= cfg.expect) {
      out({ finished: seen.size });
      void client.close().then(() => process.exit(0));
    }
  });
});
if (cfg.expect === 0) {
  await client.close();
  process.exit(0);
}
