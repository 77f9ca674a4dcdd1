/**
 * Latency of an open-loop measurement window, recorded where both ends share one clock
 * (performance.now() of a load generator process): each arrival's delay, the worst one
 * in each second of the window, and how late the generator itself wrote against its
 * schedule. Summarized as LatencySummary (bench/lib/load-protocol.ts).
 */
import type { LatencySummary } from './load-protocol.js';

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

export class LatencyRecorder {
  private latencies: number[] = [];
  /** Worst latency seen in each second of the window (when a stall happened, not just that it did). */
  private maxBySecond: number[] = [];
  private sendLag: number[] = [];
  private start = 0;

  /** Empties the record; the window starts at `startMs`. */
  reset(startMs: number): void {
    this.latencies = [];
    this.maxBySecond = [];
    this.sendLag = [];
    this.start = startMs;
  }

  /** An arrival at `nowMs` of what was sent at `sentAtMs`; what was sent before the window is not counted. */
  arrival(sentAtMs: number, nowMs: number): void {
    if (sentAtMs < this.start) return;
    const l = nowMs - sentAtMs;
    this.latencies.push(l);
    const sec = Math.floor((nowMs - this.start) / 1000);
    if (!(this.maxBySecond[sec]! >= l)) this.maxBySecond[sec] = l;
  }

  /** A send written at `nowMs` that the schedule wanted at `intendedMs`. */
  sent(intendedMs: number, nowMs: number): void {
    if (intendedMs >= this.start) this.sendLag.push(nowMs - intendedMs);
  }

  summary(): LatencySummary | undefined {
    const lat = Float64Array.from(this.latencies).sort();
    if (lat.length === 0) return undefined;
    const lag = Float64Array.from(this.sendLag).sort();
    return {
      count: lat.length,
      p50: quantile(lat, 0.5),
      p90: quantile(lat, 0.9),
      p99: quantile(lat, 0.99),
      p999: quantile(lat, 0.999),
      max: lat[lat.length - 1] as number,
      sendLagP99: quantile(lag, 0.99),
      maxBySecond: Array.from(this.maxBySecond, (v) => Math.round(v ?? 0)),
    };
  }
}
