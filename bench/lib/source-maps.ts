/**
 * Maps positions in code that tsx compiled back to TypeScript source lines, so that a
 * CPU profile of a relay run from source names real lines (tsx emits each module on a
 * single line). tsx keeps every compiled module with its source map in a cache directory
 * under the OS temp dir, one entry per version of a file; the newest entry of each file is
 * taken as the one the profiled process ran (true unless an older version of a file was
 * restored after a newer one was compiled). Positions that cannot be resolved are left as
 * they are.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

/** Per generated line: sorted [generated column, source line] pairs (source 0 only). */
type LineMap = Array<Array<readonly [number, number]>>;

function decodeMappings(mappings: string): LineMap {
  const lines: LineMap = [];
  let srcLine = 0;
  for (const line of mappings.split(';')) {
    const segs: Array<readonly [number, number]> = [];
    let genCol = 0;
    for (const seg of line.split(',')) {
      if (seg === '') continue;
      const fields: number[] = [];
      let value = 0;
      let shift = 0;
      for (const ch of seg) {
        const digit = B64_INDEX.get(ch) ?? 0;
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += fields[0] ?? 0;
      if (fields.length >= 4) {
        srcLine += fields[2] ?? 0;
        segs.push([genCol, srcLine]);
      }
    }
    lines.push(segs);
  }
  return lines;
}

interface CacheEntry {
  readonly map?: { readonly sources?: readonly string[]; readonly mappings?: string };
}

export type SourceResolver = (url: string, line: number, column: number) => number | undefined;

/** A resolver from the tsx cache, or one that resolves nothing when there is no cache. */
export function tsxSourceResolver(): SourceResolver {
  const newest = new Map<string, { mtimeMs: number; mappings: string }>();
  let dirs: string[] = [];
  try {
    dirs = fs
      .readdirSync(os.tmpdir())
      .filter((d) => d.startsWith('tsx-'))
      .map((d) => path.join(os.tmpdir(), d));
  } catch {
    /* no temp dir listing: nothing resolves */
  }
  for (const dir of dirs) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      try {
        const full = path.join(dir, name);
        const mtimeMs = fs.statSync(full).mtimeMs;
        const entry = JSON.parse(fs.readFileSync(full, 'utf8')) as CacheEntry;
        const file = entry.map?.sources?.[0];
        const mappings = entry.map?.mappings;
        if (!file || !mappings) continue;
        const prev = newest.get(file);
        if (!prev || prev.mtimeMs < mtimeMs) newest.set(file, { mtimeMs, mappings });
      } catch {
        /* not a cache entry */
      }
    }
  }
  const maps = new Map<string, LineMap>();
  const lineMap = (file: string): LineMap | undefined => {
    const m = newest.get(file);
    if (!m) return undefined;
    let decoded = maps.get(file);
    if (!decoded) {
      decoded = decodeMappings(m.mappings);
      maps.set(file, decoded);
    }
    return decoded;
  };
  return (url, line, column) => {
    if (!url.startsWith('file://')) return undefined;
    let file: string;
    try {
      file = fileURLToPath(url);
    } catch {
      return undefined;
    }
    const segs = lineMap(file)?.[line];
    if (!segs || segs.length === 0) return undefined;
    let found: number | undefined;
    for (const [col, src] of segs) {
      if (col > column) break;
      found = src;
    }
    return found ?? segs[0]?.[1];
  };
}
