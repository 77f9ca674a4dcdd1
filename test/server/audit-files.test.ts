/**
 * The audit export's file readers, in process: a line over its limit is refused without
 * being kept and the next line still read; a truncated last line, a missing file, a
 * file over its size limit and unknown members are INVALID_EXPORT; the writer's digest
 * is the reader's; docs/AUDIT.md lists the failure kinds the code has.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { decodeAt, decodeManifest, decodeReceiptLine } from '../../server/audit/format.js';
import { JsonlReader, JsonlWriter, readJsonFile } from '../../server/audit/jsonl.js';
import { MAX_EXPORT_LINE_BYTES } from '../../server/audit/limits.js';
import { FAILURE_KINDS } from '../../server/audit/report.js';
import { killAllRelays, makeTempDir } from '../helpers/relay.js';

afterAll(async () => {
  await killAllRelays();
});

async function readAll(file: string, max: number): Promise<Array<{ line: number; ok: boolean; message?: string }>> {
  const out: Array<{ line: number; ok: boolean; message?: string }> = [];
  for await (const l of new JsonlReader(file, 'f.jsonl', max).lines()) out.push('error' in l ? { line: l.line, ok: false, message: l.error.message } : { line: l.line, ok: true });
  return out;
}

describe('audit export files', () => {
  const dir = makeTempDir('hermetic-audit-files-');

  it('writes and reads JSON lines with the same digest', async () => {
    const file = path.join(dir, 'a.jsonl');
    const w = await JsonlWriter.create(file);
    for (let i = 0; i < 1000; i++) await w.write({ i, text: 'x'.repeat(i % 50) });
    const written = await w.close();
    const r = new JsonlReader(file, 'a.jsonl', 1024);
    let n = 0;
    for await (const l of r.lines()) {
      expect('value' in l && l.value.i).toBe(n);
      n++;
    }
    expect(n).toBe(1000);
    expect(r.digest()).toEqual(written);
    // An export never overwrites.
    await expect(JsonlWriter.create(file)).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('refuses a line over the limit without keeping it, and reads on', async () => {
    const file = path.join(dir, 'long.jsonl');
    // The long line spans many read chunks (64 KiB each).
    fs.writeFileSync(file, `{"a":1}\n{"b":"${'y'.repeat(300_000)}"}\n{"c":3}\nnot json\n[1]\n{"d":`);
    expect(await readAll(file, 1000)).toEqual([
      { line: 1, ok: true },
      { line: 2, ok: false, message: 'f.jsonl line 2: longer than 1000 bytes' },
      { line: 3, ok: true },
      { line: 4, ok: false, message: 'f.jsonl line 4: not UTF-8 JSON' },
      { line: 5, ok: false, message: 'f.jsonl line 5: not a JSON object' },
      { line: 6, ok: false, message: 'f.jsonl line 6: the last line has no newline (truncated file?)' },
    ]);
    expect(await readAll(path.join(dir, 'missing.jsonl'), 1000)).toEqual([{ line: 0, ok: false, message: 'f.jsonl: missing or unreadable' }]);
  });

  it('docs/AUDIT.md lists exactly the failure kinds', () => {
    const doc = fs.readFileSync(new URL('../../docs/AUDIT.md', import.meta.url), 'utf8');
    const start = doc.indexOf('## Failure kinds');
    const body = doc.slice(start, doc.indexOf('\n## ', start + 3));
    const listed = [...body.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual([...FAILURE_KINDS].sort());
  });

  it('bounds whole files, and decodes strictly', () => {
    const big = path.join(dir, 'big.json');
    fs.writeFileSync(big, `{"x":"${'z'.repeat(5000)}"}`);
    expect(() => readJsonFile(big, 'big.json', 4096)).toThrow(expect.objectContaining({ code: 'INVALID_EXPORT' }));
    const line = { index: 0, leafHash: `${'A'.repeat(43)}=`, receipt: 'a.b.c', submittedAt: 1, inclusion: [] };
    expect(decodeAt('l', () => decodeReceiptLine(line)).index).toBe(0);
    for (const bad of [{ ...line, extra: 1 }, { ...line, index: -1 }, { ...line, inclusion: Array(65).fill(line.leafHash) }, { ...line, receipt: 'r'.repeat(MAX_EXPORT_LINE_BYTES) }]) {
      let err: unknown;
      try {
        decodeAt('receipts.jsonl line 1', () => decodeReceiptLine(bad));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(EvidenceError);
      expect((err as EvidenceError).code).toBe('INVALID_EXPORT');
      expect((err as EvidenceError).message).toMatch(/^receipts\.jsonl line 1: /);
    }
    expect(() => decodeAt('manifest.json', () => decodeManifest({ format: 'hermetic-audit-export', version: 2 }))).toThrow(/version/);
  });
});
