/**
 * What the fault tests ask a relay process from outside: its readiness, and metrics
 * that move when a mechanism (a LISTEN reconnect, a notice) did its work.
 */
import { request } from '../helpers/http.js';
import type { RelayProcess } from '../helpers/relay.js';
import { metric, sleep } from '../mailbox/world.js';

export async function readyz(relay: RelayProcess): Promise<number> {
  return (await request(relay.baseUrl, 'GET', '/readyz')).status;
}

/** Polls /readyz until it answers 200. */
export async function waitReady(relay: RelayProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await readyz(relay)) !== 200) {
    if (Date.now() > deadline) throw new Error('/readyz did not return to 200');
    await sleep(100);
  }
}

/** Polls a metric until it exceeds `floor`; resolves to its value. */
export async function waitMetricAbove(relay: RelayProcess, series: string, floor: number, timeoutMs = 20_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = (await metric(relay, series)) ?? 0;
    if (v > floor) return v;
    if (Date.now() > deadline) throw new Error(`${series} stayed at ${v}`);
    await sleep(100);
  }
}
