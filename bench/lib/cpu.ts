/**
 * Where the CPU went during a measurement window: CPU time of given processes, of every
 * PostgreSQL server process (all databases: other work on the server counts too), and of
 * the whole machine, from /proc (Linux). Elsewhere the sample is empty and the benchmark
 * reports no split.
 */
import fs from 'node:fs';

/** /proc reports times in USER_HZ ticks, which Linux fixes at 100 per second for user space. */
const USER_HZ = 100;

export interface CpuSample {
  readonly atMs: number;
  /** CPU seconds per named group. */
  readonly groups: Readonly<Record<string, number>>;
  /** Busy and total CPU seconds of the whole machine (all cores). */
  readonly machineBusy: number;
  readonly machineTotal: number;
}

/** utime + stime, plus the times of reaped children when `withChildren`. */
function procCpuSeconds(pid: number | string, withChildren = false): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(rest[11]) + Number(rest[12]);
    return (withChildren ? own + Number(rest[13]) + Number(rest[14]) : own) / USER_HZ;
  } catch {
    return undefined;
  }
}

function postgresCpuSeconds(): number {
  let sum = 0;
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/comm`, 'utf8').trim() !== 'postgres') continue;
    } catch {
      continue;
    }
    // The postmaster's reaped-children times keep the CPU of backends whose connection
    // closed during the window.
    sum += procCpuSeconds(e, true) ?? 0;
  }
  return sum;
}

function machine(): { busy: number; total: number } {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: (total - idle) / USER_HZ, total: total / USER_HZ };
  } catch {
    return { busy: 0, total: 0 };
  }
}

export function sampleCpu(groups: Readonly<Record<string, readonly number[]>>): CpuSample {
  const out: Record<string, number> = { postgres: postgresCpuSeconds() };
  for (const [name, pids] of Object.entries(groups)) out[name] = pids.reduce((s, p) => s + (procCpuSeconds(p) ?? 0), 0);
  const m = machine();
  return { atMs: performance.now(), groups: out, machineBusy: m.busy, machineTotal: m.total };
}

/** Percent of one core used by each group between two samples, the machine's busy share
 * (percent of all cores), and the rest of the machine's busy time (percent of one core). */
export function cpuSplit(a: CpuSample, b: CpuSample): Record<string, number> {
  const wall = (b.atMs - a.atMs) / 1000;
  const out: Record<string, number> = {};
  if (wall <= 0 || b.machineTotal === 0) return out;
  let ours = 0;
  for (const k of Object.keys(b.groups)) {
    const used = (b.groups[k] ?? 0) - (a.groups[k] ?? 0);
    ours += used;
    // A tenth of a percent: CPU per unit of work is derived from these, and whole
    // percents of a 40-60 % share would carry up to 2 % of rounding into it.
    out[`${k}_cpu_pct`] = Math.round((1000 * used) / wall) / 10;
  }
  out.machine_busy_pct = Math.round((100 * (b.machineBusy - a.machineBusy)) / (b.machineTotal - a.machineTotal));
  // Everything else that ran (the benchmark's own process, the kernel's work for all of
  // them, other jobs on the machine): a large value means the run was disturbed.
  out.other_cpu_pct = Math.max(0, Math.round((100 * (b.machineBusy - a.machineBusy - ours)) / wall));
  return out;
}

/** Microseconds of CPU per unit of work: a CPU share (percent of one core) over a rate
 * (units per second), to 0.1 µs; undefined when either is missing or the rate is 0. */
export function usPer(pct: unknown, perS: unknown): number | undefined {
  if (typeof pct !== 'number' || typeof perS !== 'number' || perS <= 0) return undefined;
  return Math.round(((pct * 1e4) / perS) * 10) / 10;
}
