/**
 * C2SP tlog proofs: the text format (the spec example's layout), strict parsing, and
 * verification against a leaf, a log key and an origin, on both backends.
 */
import { describe, expect, it } from 'vitest';
import { toBase64 } from '../../crypto/tlog/base64.js';
import { signCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { MAX_PROOF_HASHES } from '../../crypto/tlog/limits.js';
import { inclusionProof, leafHash, treeHash } from '../../crypto/tlog/merkle.js';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { formatTlogProof, parseTlogProof, TLOG_PROOF_HEADER, verifyTlogProof } from '../../crypto/tlog/proof-format.js';
import { BACKENDS, toH } from '../crypto/helpers.js';
import { expectEvidenceErrorSync, flipBit, leafData, storeOf } from './helpers.js';

const ORIGIN = 'relay.example/log';

describe.each(BACKENDS)('tlog proofs (%s)', (_name, backend) => {
  const log = NoteSigner.fromSeed(ORIGIN, new Uint8Array(32).fill(5), backend);
  const witness = NoteSigner.fromSeed('witness.example', new Uint8Array(32).fill(6), backend);

  async function proofFor(index: number, size: number, extra?: Uint8Array): Promise<string> {
    const { store } = await storeOf(size, backend);
    const root = await treeHash(size, store.read, backend);
    const checkpoint = signCheckpoint({ origin: ORIGIN, size, rootHash: root, extensions: [] }, [log, witness]);
    const proof = await inclusionProof(index, size, store.read, backend);
    return formatTlogProof(extra === undefined ? { index, proof, checkpoint } : { extra, index, proof, checkpoint });
  }

  it('formats in the spec layout, parses back and verifies', async () => {
    const text = await proofFor(13, 40, Uint8Array.of(1, 2, 3));
    const lines = text.split('\n');
    expect(lines[0]).toBe(TLOG_PROOF_HEADER);
    expect(lines[1]).toBe(`extra ${toBase64(Uint8Array.of(1, 2, 3))}`);
    expect(lines[2]).toBe('index 13');
    expect(lines.slice(3, 9).every((l) => l.length === 44)).toBe(true);
    expect(lines[9]).toBe('');
    expect(lines[10]).toBe(ORIGIN);
    const parsed = parseTlogProof(text);
    expect(formatTlogProof(parsed)).toBe(text);
    const verified = verifyTlogProof(text, leafHash(leafData(13), backend), ORIGIN, [log.verifier], backend);
    expect(verified.index).toBe(13);
    expect(verified.checkpoint.size).toBe(40);
    expect(Array.from(verified.extra!)).toEqual([1, 2, 3]);
    // Bytes in, and no extra line.
    const plain = await proofFor(0, 1);
    expect(plain.split('\n').slice(0, 3)).toEqual([TLOG_PROOF_HEADER, 'index 0', '']);
    expect(verifyTlogProof(new TextEncoder().encode(plain), leafHash(leafData(0), backend), ORIGIN, [log.verifier], backend).extra).toBeUndefined();
  });

  it('rejects a proof for another leaf, index, log or key, or a tampered hash', async () => {
    const text = await proofFor(13, 40);
    const leaf = leafHash(leafData(13), backend);
    const otherLogKey = NoteSigner.fromSeed(ORIGIN, new Uint8Array(32).fill(8), backend);
    expectEvidenceErrorSync(() => verifyTlogProof(text, leafHash(leafData(12), backend), ORIGIN, [log.verifier], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyTlogProof(text.replace('index 13', 'index 12'), leaf, ORIGIN, [log.verifier], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyTlogProof(text.replace('index 13', 'index 40'), leaf, ORIGIN, [log.verifier], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyTlogProof(text, leaf, 'relay.example/other', [log.verifier], backend), 'INVALID_CHECKPOINT');
    expectEvidenceErrorSync(() => verifyTlogProof(text, leaf, ORIGIN, [otherLogKey.verifier], backend), 'INVALID_NOTE');
    const p = parseTlogProof(text);
    const tampered = { ...p, proof: p.proof.map((h, i) => (i === 2 ? flipBit(h, 100) : h)) };
    expectEvidenceErrorSync(() => verifyTlogProof(tampered, leaf, ORIGIN, [log.verifier], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyTlogProof({ ...p, proof: p.proof.slice(1) }, leaf, ORIGIN, [log.verifier], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyTlogProof(text.replace(`\n${ORIGIN}\n40\n`, `\n${ORIGIN}\n41\n`), leaf, ORIGIN, [log.verifier], backend), 'BAD_SIGNATURE');
    expect(toH(verifyTlogProof(p, leaf, ORIGIN, [log.verifier], backend).checkpoint.rootHash)).toHaveLength(64);
  });
});

describe('malformed tlog proofs', () => {
  const hash = toBase64(new Uint8Array(32).fill(1));
  const cp = `${ORIGIN}\n1\n${hash}\n\n\u2014 ${ORIGIN} AAAAAAAA\n`;
  const bad: [string, string | Uint8Array][] = [
    ['wrong header', `c2sp.org/tlog-proof@v2\nindex 0\n\n${cp}`],
    ['no header', `index 0\n\n${cp}`],
    ['no index', `${TLOG_PROOF_HEADER}\n${hash}\n\n${cp}`],
    ['index with a leading zero', `${TLOG_PROOF_HEADER}\nindex 01\n\n${cp}`],
    ['negative index', `${TLOG_PROOF_HEADER}\nindex -1\n\n${cp}`],
    ['index without a space', `${TLOG_PROOF_HEADER}\nindex\t0\n\n${cp}`],
    ['extra after index', `${TLOG_PROOF_HEADER}\nindex 0\nextra AAAA\n\n${cp}`],
    ['bad extra base64', `${TLOG_PROOF_HEADER}\nextra !!\nindex 0\n\n${cp}`],
    ['short hash', `${TLOG_PROOF_HEADER}\nindex 0\n${toBase64(new Uint8Array(31))}\n\n${cp}`],
    ['hash without padding', `${TLOG_PROOF_HEADER}\nindex 0\n${hash.slice(0, -1)}\n\n${cp}`],
    ['too many hashes', `${TLOG_PROOF_HEADER}\nindex 0\n${`${hash}\n`.repeat(MAX_PROOF_HASHES + 1)}\n${cp}`],
    ['no empty line', `${TLOG_PROOF_HEADER}\nindex 0\n${cp.replace('\n\n', '\n')}`],
    ['oversize', `${TLOG_PROOF_HEADER}\nindex 0\n\n${'a'.repeat(300_000)}`],
    ['invalid UTF-8', Uint8Array.of(0xff, 0x0a, 0x0a)],
  ];
  it.each(bad)('%s -> INVALID_PROOF', (_label, text) => {
    expectEvidenceErrorSync(() => parseTlogProof(text), 'INVALID_PROOF');
  });

  it('the same layout with a valid header parses (so the cases above fail for their defect)', () => {
    expect(parseTlogProof(`${TLOG_PROOF_HEADER}\nindex 0\n${hash}\n\n${cp}`).proof).toHaveLength(1);
  });

  it('format refuses invalid fields', () => {
    expectEvidenceErrorSync(() => formatTlogProof({ index: -1, proof: [], checkpoint: cp }), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => formatTlogProof({ index: 0, proof: [new Uint8Array(3)], checkpoint: cp }), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => formatTlogProof({ extra: new Uint8Array(9000), index: 0, proof: [], checkpoint: cp }), 'INVALID_PROOF');
  });
});
