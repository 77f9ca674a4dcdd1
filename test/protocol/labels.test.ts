/**
 * The label registry (protocol/labels.ts) is the only place a `hermetic/v1/` label is
 * spelled, and every label in it is distinct, across signatures and KDF info strings.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KDF_LABELS, LABEL_PREFIX, SIGNATURE_LABELS, kdfLabelBytes, signatureLabelBytes } from '../../protocol/labels.js';
import { REPO_ROOT } from '../helpers/relay.js';

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

describe('label registry', () => {
  it('holds distinct labels', () => {
    const all = [...Object.values(SIGNATURE_LABELS), ...Object.values(KDF_LABELS)];
    expect(new Set(all).size).toBe(all.length);
    for (const l of all) expect(l).toMatch(/^[a-z0-9]+(?:[-/][a-z0-9]+)*$/);
  });

  it('builds the signature head with a NUL and the KDF info without', () => {
    expect(new TextDecoder().decode(signatureLabelBytes(SIGNATURE_LABELS.deviceAuth))).toBe('hermetic/v1/device-auth/2\0');
    expect(new TextDecoder().decode(kdfLabelBytes(KDF_LABELS.ratchetRoot))).toBe('hermetic/v1/ratchet/root');
  });

  it('is the only source that spells the prefix in code', () => {
    const offenders: string[] = [];
    for (const dir of ['protocol', 'crypto', 'server', 'client-sdk']) {
      for (const file of sources(path.join(REPO_ROOT, dir))) {
        if (file.endsWith(path.join('protocol', 'labels.ts'))) continue;
        // Code only: strip comments before looking.
        const code = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
        if (code.includes(LABEL_PREFIX)) offenders.push(path.relative(REPO_ROOT, file));
      }
    }
    expect(offenders).toEqual([]);
  });
});
