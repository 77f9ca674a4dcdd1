/**
 * crypto/tlog is shared with the SDK in browsers: it must bundle for the web platform
 * with nothing Node-only (no node:* builtins, no Buffer in its sources), and the bundled
 * code itself (loaded back here) must give known answers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { bundleForBrowser, REPO_ROOT } from '../../examples/bundle.js';

const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'tlog-bundle-'));
afterAll(() => fs.rmSync(outdir, { recursive: true, force: true }));

it('bundles for browsers with no Node-only import, and the bundle verifies the reference note', async () => {
  const bundle = await bundleForBrowser({ tlog: path.join(REPO_ROOT, 'crypto', 'tlog', 'index.ts') }, outdir);
  expect(bundle.externalImports).toEqual([]);
  expect(bundle.inputs.some((f) => f.startsWith('crypto/tlog/'))).toBe(true);
  const sources = bundle.inputs.filter((f) => f.startsWith('crypto/tlog/'));
  for (const f of sources) expect(fs.readFileSync(path.join(REPO_ROOT, f), 'utf8')).not.toMatch(/\bBuffer\b|from 'node:/);
  const mod = (await import(bundle.files.tlog!)) as typeof import('../../crypto/tlog/index.js');
  const verifier = mod.NoteVerifier.parse('PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW');
  const note =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n" +
    '\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
  expect(mod.openNote(note, [verifier]).verifiedBy).toHaveLength(1);
  // RFC 6962: the empty tree's root is SHA-256 of the empty string.
  expect(Buffer.from(mod.rootOf([])).toString('hex')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});
