/**
 * Summary of a V8 CPU profile (node --cpu-prof): self time per function and per area of
 * the code (a repository folder, an npm package, Node's internals, V8's own entries such
 * as the garbage collector), restricted to a time window.
 *
 * Sample timestamps are V8 monotonic ticks in microseconds; on Linux they come from the
 * same clock as process.hrtime() in any process, so a window measured by the benchmark
 * selects the right samples of the relay's profile.
 */
import fs from 'node:fs';
import type { SourceResolver } from './source-maps.js';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
  readonly columnNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileEntry {
  readonly name: string;
  readonly ms: number;
  readonly pct: number;
}

export interface ProfileSummary {
  readonly totalMs: number;
  readonly functions: readonly ProfileEntry[];
  readonly areas: readonly ProfileEntry[];
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length);
  for (const top of ['/server/', '/protocol/', '/crypto/', '/client-sdk/', '/bench/']) {
    const i = url.lastIndexOf(top);
    if (i >= 0) return url.slice(i + 1);
  }
  return url.replace(/^file:\/\//, '');
}

function area(f: CallFrame): string {
  if (f.url === '') return f.functionName.startsWith('(') ? f.functionName : '(native)';
  if (f.url.startsWith('node:')) return 'node internals';
  const nm = f.url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = f.url.slice(nm + '/node_modules/'.length).split('/');
    return `npm ${parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]}`;
  }
  const parts = shortUrl(f.url).split('/');
  return parts.length > 2 ? `${parts[0]}/${parts[1]}` : (parts[0] ?? f.url);
}

export function summarizeProfile(file: string, fromUs: number, toUs: number, opts: { top?: number; resolve?: SourceResolver } = {}): ProfileSummary {
  const top = opts.top ?? 20;
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const fn = new Map<string, number>();
  const ar = new Map<string, number>();
  let total = 0;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const dur = p.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const f = byId.get(p.samples[i] as number);
    if (!f) continue;
    let name = f.functionName || '(anonymous)';
    if (f.url !== '') {
      const line = opts.resolve?.(f.url, f.lineNumber, f.columnNumber) ?? f.lineNumber;
      name = `${name} ${shortUrl(f.url)}:${line + 1}`;
    }
    fn.set(name, (fn.get(name) ?? 0) + dur);
    const a = area(f);
    ar.set(a, (ar.get(a) ?? 0) + dur);
    total += dur;
  }
  const rank = (m: Map<string, number>): ProfileEntry[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), pct: total > 0 ? Math.round((1000 * us) / total) / 10 : 0 }));
  return { totalMs: Math.round(total / 1000), functions: rank(fn), areas: rank(ar) };
}

export function printProfile(title: string, s: ProfileSummary): void {
  console.log(`\n## ${title}: ${s.totalMs} ms of samples in the window`);
  console.log('\nself time by area:');
  for (const e of s.areas) console.log(`  ${e.pct.toFixed(1).padStart(5)}%  ${String(e.ms).padStart(6)} ms  ${e.name}`);
  console.log('\nself time by function:');
  for (const e of s.functions) console.log(`  ${e.pct.toFixed(1).padStart(5)}%  ${String(e.ms).padStart(6)} ms  ${e.name}`);
}
