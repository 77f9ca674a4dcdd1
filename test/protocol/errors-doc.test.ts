/**
 * docs/ERRORS.md and the code must list the same error codes (wire, crypto, SDK, process)
 * and the same message flags: a code added in code but not documented (or documented but
 * gone) fails here.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FLAG_CODES, SDK_ERROR_CODES } from '../../client-sdk/index.js';
import { CRYPTO_ERROR_CODES } from '../../crypto/errors.js';
import { EVIDENCE_ERROR_CODES } from '../../crypto/evidence/errors.js';
import { ERROR_CODES } from '../../protocol/errors.js';
import { DataDirLockedError } from '../../server/storage/pglite.js';

const doc = fs.readFileSync(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8');

/** The codes in the table under a `## <title>` heading. */
function section(title: string): Map<string, string[]> {
  const start = doc.indexOf(`## ${title}`);
  if (start < 0) throw new Error(`docs/ERRORS.md has no section "${title}"`);
  const next = doc.indexOf('\n## ', start + 3);
  const body = doc.slice(start, next < 0 ? undefined : next);
  const rows = new Map<string, string[]>();
  for (const line of body.split('\n')) {
    const m = /^\| `([A-Z_]+)` \|(.*)$/.exec(line);
    if (m) rows.set(m[1] as string, (m[2] as string).split('|').map((c) => c.trim()));
  }
  return rows;
}

describe('docs/ERRORS.md', () => {
  it('lists exactly the wire error codes, with their HTTP status and retry flag', () => {
    const rows = section('Wire protocol');
    expect([...rows.keys()].sort()).toEqual(Object.keys(ERROR_CODES).sort());
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      const cells = rows.get(code)!;
      expect(cells[0], code).toBe(String(spec.http));
      expect(cells[1], code).toBe(spec.retry ? 'yes' : 'no');
    }
  });

  it('lists exactly the crypto error codes', () => {
    expect([...section('Cryptography').keys()].sort()).toEqual([...CRYPTO_ERROR_CODES].sort());
  });

  it('lists exactly the evidence error codes, each with a meaning', () => {
    const rows = section('Evidence');
    expect([...rows.keys()].sort()).toEqual(Object.keys(EVIDENCE_ERROR_CODES).sort());
    for (const [code, cells] of rows) expect(cells[0], code).not.toBe('');
  });

  it('lists exactly the SDK error codes, each with a meaning', () => {
    const rows = section('Client SDK');
    expect([...rows.keys()].sort()).toEqual(Object.keys(SDK_ERROR_CODES).sort());
    for (const [code, cells] of rows) expect(cells[0], code).not.toBe('');
  });

  it('lists exactly the message flags, each with a meaning', () => {
    const rows = section('Message flags');
    expect([...rows.keys()].sort()).toEqual([...FLAG_CODES].sort());
    for (const [code, cells] of rows) expect(cells[0], code).not.toBe('');
  });

  it('lists the process error codes', () => {
    expect([...section('Process').keys()]).toEqual([new DataDirLockedError('x').code]);
  });
});
