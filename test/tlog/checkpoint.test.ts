/**
 * C2SP checkpoints: the spec example's body, strict parsing, signing and opening with
 * the origin check, on both backends.
 */
import { describe, expect, it } from 'vitest';
import { toBase64 } from '../../crypto/tlog/base64.js';
import { formatCheckpoint, openCheckpoint, parseCheckpoint, signCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { NoteSigner, signNote } from '../../crypto/tlog/note.js';
import { BACKENDS, toH } from '../crypto/helpers.js';
import { expectEvidenceErrorSync } from './helpers.js';

// The body of the example in c2sp.org/tlog-checkpoint.
const SPEC_BODY = 'example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n';
const ROOT = new Uint8Array(32).map((_, i) => i * 3);

describe('checkpoint body', () => {
  it('parses and re-formats the spec example exactly', () => {
    const cp = parseCheckpoint(SPEC_BODY);
    expect(cp.origin).toBe('example.com/behind-the-sofa');
    expect(cp.size).toBe(20852163);
    expect(toBase64(cp.rootHash)).toBe('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=');
    expect(cp.extensions).toEqual([]);
    expect(formatCheckpoint(cp)).toBe(SPEC_BODY);
  });

  it('round trips sizes 0 and 2^53-1 and extension lines', () => {
    for (const cp of [
      { origin: 'relay.example/log', size: 0, rootHash: ROOT, extensions: [] },
      { origin: 'relay.example/log', size: Number.MAX_SAFE_INTEGER, rootHash: ROOT, extensions: ['ext one', 'two'] },
    ]) {
      const text = formatCheckpoint(cp);
      const back = parseCheckpoint(text);
      expect(back.size).toBe(cp.size);
      expect(toH(back.rootHash)).toBe(toH(ROOT));
      expect(back.extensions).toEqual(cp.extensions);
      expect(formatCheckpoint(back)).toBe(text);
    }
  });

  const root = toBase64(ROOT);
  const bad: [string, string][] = [
    ['no final newline', `o\n1\n${root}`],
    ['two lines', `o\n1\n`],
    ['empty origin', `\n1\n${root}\n`],
    ['leading zero', `o\n01\n${root}\n`],
    ['negative size', `o\n-1\n${root}\n`],
    ['size with a plus', `o\n+1\n${root}\n`],
    ['size with spaces', `o\n 1\n${root}\n`],
    ['size above 2^53', `o\n9007199254740993\n${root}\n`],
    ['hex size', `o\n0x10\n${root}\n`],
    ['short root', `o\n1\n${toBase64(ROOT.subarray(1))}\n`],
    ['unpadded root', `o\n1\n${root.replace('=', '')}\n`],
    ['base64url root', `o\n1\n${toBase64(new Uint8Array(32).fill(0xfb)).replace(/\+/g, '-').replace(/\//g, '_')}\n`],
    ['empty extension line', `o\n1\n${root}\n\n`],
    ['too many extension lines', `o\n1\n${root}\n${'e\n'.repeat(17)}`],
    ['control character in origin', `o\u0001\n1\n${root}\n`],
  ];
  it.each(bad)('%s -> INVALID_CHECKPOINT', (_label, text) => {
    expectEvidenceErrorSync(() => parseCheckpoint(text), 'INVALID_CHECKPOINT');
  });

  it('format refuses invalid fields', () => {
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: '', size: 1, rootHash: ROOT, extensions: [] }), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: 'o', size: -1, rootHash: ROOT, extensions: [] }), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: 'o', size: 1.5, rootHash: ROOT, extensions: [] }), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: 'o', size: 1, rootHash: ROOT.subarray(2), extensions: [] }), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: 'o', size: 1, rootHash: ROOT, extensions: ['a\nb'] }), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => formatCheckpoint({ origin: 'o\n', size: 1, rootHash: ROOT, extensions: [] }), 'INVALID_CHECKPOINT');
  });
});

describe.each(BACKENDS)('signed checkpoints (%s)', (_name, backend) => {
  const log = NoteSigner.fromSeed('relay.example/log', new Uint8Array(32).fill(9), backend);
  const witness = NoteSigner.fromSeed('witness.example', new Uint8Array(32).fill(10), backend);
  const cp = { origin: 'relay.example/log', size: 42, rootHash: ROOT, extensions: [] };

  it('signs and opens, checking the origin and the log key', () => {
    const note = signCheckpoint(cp, [log, witness]);
    const opened = openCheckpoint(note, 'relay.example/log', [log.verifier]);
    expect(opened.checkpoint.size).toBe(42);
    expect(toH(opened.checkpoint.rootHash)).toBe(toH(ROOT));
    expect(opened.note.unknown.map((s) => s.name)).toEqual(['witness.example']);
    expectEvidenceErrorSync(() => openCheckpoint(note, 'relay.example/other', [log.verifier]), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => openCheckpoint(note, 'relay.example/log', [NoteSigner.fromSeed('relay.example/log', new Uint8Array(32).fill(11), backend).verifier]), 'INVALID_NOTE');
    expectEvidenceErrorSync(() => openCheckpoint(note.replace('\n42\n', '\n43\n'), 'relay.example/log', [log.verifier]), 'BAD_SIGNATURE');
  });

  it('a validly signed note that is not a checkpoint is INVALID_CHECKPOINT', () => {
    const note = signNote('relay.example/log\n007\nxx\n', log);
    expectEvidenceErrorSync(() => openCheckpoint(note, 'relay.example/log', [log.verifier]), 'INVALID_CHECKPOINT');
  });
});
