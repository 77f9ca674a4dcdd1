/** The machine a benchmark or fuzz run ran on, as printed beside its results. */
import os from 'node:os';

export function machine(): Record<string, string | number> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** One line: "<cpu>, <n> cores, <m> GiB, Node <v>". */
export function machineLine(m = machine()): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, Node ${m.node}`;
}

/** The 1, 5 and 15 minute load averages, as printed beside results ("0.52 0.61 0.70"). */
export function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}
