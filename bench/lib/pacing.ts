/**
 * Open-loop pacing for latency measurements: every tick (about 1 ms) calls `due` for each
 * send the schedule says is due by now, round-robin over `lanes` senders, whether or not
 * earlier ones were answered. Stops once `active` returns false.
 */
import { performance } from 'node:perf_hooks';

export function pace(ratePerSecond: number, lanes: number, active: () => boolean, due: (lane: number, intendedAt: number) => void): void {
  const t0 = performance.now();
  let sent = 0;
  let next = 0;
  const tick = (): void => {
    if (!active()) return;
    const target = Math.floor(((performance.now() - t0) * ratePerSecond) / 1000);
    while (sent < target) {
      const intended = t0 + (sent * 1000) / ratePerSecond;
      sent++;
      const lane = next;
      next = (next + 1) % lanes;
      due(lane, intended);
    }
    setTimeout(tick, 1);
  };
  tick();
}
