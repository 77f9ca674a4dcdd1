/**
 * Just enough of the Prometheus text format to diff a relay's histograms over a window:
 * samples keyed by name and label set, and bucket interpolation for quantiles.
 */
export type Samples = ReadonlyMap<string, number>;

export function parseSamples(text: string): Samples {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp < 0) continue;
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

export interface HistogramDelta {
  readonly count: number;
  readonly sum: number;
  /** Cumulative counts per upper bound, ascending (le="+Inf" last). */
  readonly buckets: ReadonlyArray<readonly [number, number]>;
}

export function histogramDelta(before: Samples, after: Samples, name: string): HistogramDelta {
  const d = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  const buckets: Array<[number, number]> = [];
  const prefix = `${name}_bucket{le="`;
  for (const k of after.keys()) {
    if (!k.startsWith(prefix)) continue;
    const le = k.slice(prefix.length, k.indexOf('"', prefix.length));
    buckets.push([le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), d(k)]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { count: d(`${name}_count`), sum: d(`${name}_sum`), buckets };
}

export function counterDelta(before: Samples, after: Samples, key: string): number {
  return (after.get(key) ?? 0) - (before.get(key) ?? 0);
}

/** A quantile by linear interpolation inside its bucket (as Prometheus' histogram_quantile). */
export function histogramQuantile(h: HistogramDelta, q: number): number {
  if (h.count === 0) return Number.NaN;
  const rank = q * h.count;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, c - prevCount);
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}
