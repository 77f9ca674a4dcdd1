/**
 * Every transparency-log parser and verifier, fed arbitrary input and single-character
 * mutations of valid input, either accepts it or throws an EvidenceError — never
 * anything else.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect } from 'vitest';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { parseCheckpoint, signCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { NoteSigner, NoteVerifier, openNote } from '../../crypto/tlog/note.js';
import { formatTlogProof, parseTlogProof } from '../../crypto/tlog/proof-format.js';
import { parseEntryBundle, parseTilePath } from '../../crypto/tlog/tiles.js';

const signer = NoteSigner.fromSeed('log.example', new Uint8Array(32).fill(3));
const note = signCheckpoint({ origin: 'log.example', size: 9, rootHash: new Uint8Array(32).fill(4), extensions: [] }, signer);
const proof = formatTlogProof({ index: 3, proof: [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)], checkpoint: note });

/** Runs fn; passes when it returns or throws an EvidenceError. */
function acceptsOrRejects(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EvidenceError);
  }
}

const parsers: [string, (s: string) => unknown][] = [
  ['openNote', (s) => openNote(s, [signer.verifier])],
  ['parseCheckpoint', (s) => parseCheckpoint(s)],
  ['parseTilePath', (s) => parseTilePath(s)],
  ['parseTlogProof', (s) => parseTlogProof(s)],
  ['NoteVerifier.parse', (s) => NoteVerifier.parse(s)],
  ['NoteSigner.parse', (s) => NoteSigner.parse(s)],
];

describe.each(parsers)('%s', (_name, parse) => {
  test.prop([fc.string({ unit: 'binary', maxLength: 300 })], { numRuns: 200 })('arbitrary strings', (s) => {
    acceptsOrRejects(() => parse(s));
  });

  test.prop([fc.nat(), fc.string({ unit: 'binary', minLength: 0, maxLength: 3 }), fc.nat({ max: 3 })], { numRuns: 200 })(
    'mutated valid input',
    (at, insert, cut) => {
      for (const valid of [note, proof, note.split('\n\n')[0]! + '\n', 'tile/1/x001/234.p/7', signer.verifier.toString()]) {
        const i = at % (valid.length + 1);
        acceptsOrRejects(() => parse(valid.slice(0, i) + insert + valid.slice(i + cut)));
      }
    },
  );
});

test.prop([fc.uint8Array({ maxLength: 600 }), fc.integer({ min: 1, max: 256 })], { numRuns: 200 })(
  'parseEntryBundle on arbitrary bytes',
  (bytes, width) => {
    acceptsOrRejects(() => parseEntryBundle({ kind: 'data', level: 0, index: 0, width }, bytes));
  },
);
