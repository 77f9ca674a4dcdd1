/**
 * Benchmark runner: `npm run bench -- <suite> [--json] [suite options]`.
 *
 * Each suite is a module bench/<suite>.ts exporting `run(args)` that returns a flat
 * record of named results. The runner prints them as a table and, with --json, a final
 * single-line JSON object (suite, machine, results) for tooling to pick up.
 */
import { machine, machineLine } from './lib/machine.js';

export { machine };

export type BenchValue = number | string | boolean;
export type BenchResults = Record<string, BenchValue>;
export interface BenchSuite {
  run(args: readonly string[]): Promise<BenchResults>;
}

const SUITES = ['crypto', 'relay', 'sdk', 'audit', 'soak', 'sockets', 'carry', 'topics'] as const;
type SuiteName = (typeof SUITES)[number];

function isSuite(s: string | undefined): s is SuiteName {
  return s !== undefined && (SUITES as readonly string[]).includes(s);
}

function fmt(v: BenchValue): string {
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return v.toLocaleString('en-US', { maximumFractionDigits: 3 });
}

export function printTable(results: BenchResults): void {
  const keys = Object.keys(results);
  const w = Math.max(6, ...keys.map((k) => k.length));
  console.log(`${'metric'.padEnd(w)}  value`);
  console.log(`${'-'.repeat(w)}  ${'-'.repeat(16)}`);
  for (const k of keys) console.log(`${k.padEnd(w)}  ${fmt(results[k] as BenchValue)}`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const json = argv.includes('--json');
  const rest = argv.filter((a) => a !== '--json');
  const suite = rest[0];
  if (!isSuite(suite)) {
    console.error(`usage: npm run bench -- <${SUITES.join('|')}> [--json]`);
    process.exit(2);
  }
  const mod = (await import(`./${suite}.ts`)) as BenchSuite;
  const results = await mod.run(rest.slice(1));
  const m = machine();
  console.log(`# ${suite} — ${machineLine(m)}`);
  printTable(results);
  if (json) console.log(JSON.stringify({ suite, machine: m, results }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
