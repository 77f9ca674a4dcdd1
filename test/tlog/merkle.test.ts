/**
 * The RFC 6962 Merkle tree: roots, incremental node creation, inclusion and consistency
 * proofs, on both backends.
 *
 * test/vectors/rfc6962-tree.json: leaf inputs, leaf hashes and the roots of the trees of
 * the first N = 0..8 leaves, as published in transparency-dev/merkle
 * (testonly/constants.go, Apache-2.0).
 */
import { fc, test as fcTest } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import {
  appendLeaves,
  consistencyProof,
  inclusionProof,
  leafHash,
  newNodes,
  nodeHash,
  rootOf,
  subtreeHash,
  treeHash,
  verifyConsistency,
  verifyInclusion,
  type NodeId,
} from '../../crypto/tlog/merkle.js';
import { MemoryNodeStore } from '../../crypto/tlog/memory-store.js';
import { BACKENDS, hex, loadVectors, noble, toH } from '../crypto/helpers.js';
import { expectEvidenceError, expectEvidenceErrorSync, flipBit, storeOf } from './helpers.js';

interface TreeVectors {
  leaf_inputs_hex: string[];
  leaf_hashes_hex: string[];
  root_hashes_by_size_hex: string[];
}
const vectors = loadVectors<TreeVectors>('rfc6962-tree.json');
const inputs = vectors.leaf_inputs_hex.map(hex);
const roots = vectors.root_hashes_by_size_hex.map(hex);

describe.each(BACKENDS)('RFC 6962 tree (%s)', (_name, backend) => {
  const leaves = inputs.map((d) => leafHash(d, backend));

  it('leaf hashes match the vectors', () => {
    expect(leaves.map(toH)).toEqual(vectors.leaf_hashes_hex);
  });

  it('rootOf gives every vector root for N = 0..8', () => {
    expect(roots).toHaveLength(9);
    for (let n = 0; n <= 8; n++) expect(toH(rootOf(leaves.slice(0, n), backend)), `N=${n}`).toBe(toH(roots[n]!));
  });

  it('newNodes + treeHash give every vector root, however the leaves are batched', async () => {
    // One leaf at a time: every intermediate size is a checkpoint.
    const store = new MemoryNodeStore(backend);
    expect(toH(await treeHash(0, store.read, backend))).toBe(toH(roots[0]!));
    for (let n = 1; n <= 8; n++) {
      const root = await store.append([leaves[n - 1]!]);
      expect(toH(root), `append root N=${n}`).toBe(toH(roots[n]!));
      expect(toH(await treeHash(n, store.read, backend)), `treeHash N=${n}`).toBe(toH(roots[n]!));
    }
    // In uneven batches, the nodes created are the same set.
    const batched = new MemoryNodeStore(backend);
    await batched.append(leaves.slice(0, 3));
    await batched.append(leaves.slice(3, 8));
    for (let n = 1; n <= 8; n++) expect(toH(await treeHash(n, batched.read, backend))).toBe(toH(roots[n]!));
  });

  it('newNodes creates exactly the complete nodes, reading only the right edge', async () => {
    const store = new MemoryNodeStore(backend);
    await store.append(leaves.slice(0, 5));
    const asked: NodeId[] = [];
    const read = (ids: readonly NodeId[]) => {
      asked.push(...ids);
      return store.read(ids);
    };
    const created = await newNodes(5, leaves.slice(5, 8), read, backend);
    // Size 5 = 4 + 1: its right edge is node (2,0) and leaf (0,4).
    expect(asked).toEqual([
      { level: 2, index: 0 },
      { level: 0, index: 4 },
    ]);
    expect(created.map((n) => `${n.level}/${n.index}`)).toEqual(['0/5', '1/2', '0/6', '0/7', '1/3', '2/1', '3/0']);
    expect(toH(created.at(-1)!.hash)).toBe(toH(roots[8]!));
    expect(toH(created.find((n) => n.level === 1 && n.index === 2)!.hash)).toBe(toH(nodeHash(leaves[4]!, leaves[5]!, backend)));
  });

  it('inclusion proofs for every (index, size <= 8) verify, and every tampering is rejected', async () => {
    const store = new MemoryNodeStore(backend);
    await store.append(leaves);
    for (let size = 1; size <= 8; size++) {
      const root = roots[size]!;
      for (let index = 0; index < size; index++) {
        const proof = await inclusionProof(index, size, store.read, backend);
        verifyInclusion(leaves[index]!, index, size, proof, root, backend);
        for (let i = 0; i < proof.length; i++) {
          for (const bit of [0, 255]) {
            const bad = proof.map((h, j) => (j === i ? flipBit(h, bit) : h));
            expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, index, size, bad, root, backend), 'INVALID_PROOF');
          }
          const removed = proof.filter((_, j) => j !== i);
          expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, index, size, removed, root, backend), 'INVALID_PROOF');
        }
        expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, index, size, [...proof, root], root, backend), 'INVALID_PROOF');
        expectEvidenceErrorSync(() => verifyInclusion(flipBit(leaves[index]!, 3), index, size, proof, root, backend), 'INVALID_PROOF');
        expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, index, size, proof, flipBit(root, 9), backend), 'INVALID_PROOF');
        for (let other = 0; other < 8; other++) {
          if (other !== index) {
            expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, other, size, proof, root, backend), 'INVALID_PROOF');
          }
        }
        for (let otherSize = index + 1; otherSize <= 8; otherSize++) {
          if (otherSize === size) continue;
          // A proof for one size does not verify at another (against that size's root either).
          expectEvidenceErrorSync(() => verifyInclusion(leaves[index]!, index, otherSize, proof, roots[otherSize]!, backend), 'INVALID_PROOF');
        }
      }
    }
  });

  it('consistency proofs for every 1 <= m <= n <= 8 verify, and every tampering is rejected', async () => {
    const store = new MemoryNodeStore(backend);
    await store.append(leaves);
    for (let n = 1; n <= 8; n++) {
      for (let m = 1; m <= n; m++) {
        const proof = await consistencyProof(m, n, store.read, backend);
        verifyConsistency(m, n, roots[m]!, roots[n]!, proof, backend);
        if (m === n) {
          expect(proof).toEqual([]);
          expectEvidenceErrorSync(() => verifyConsistency(m, n, roots[m]!, roots[n]!, [roots[m]!], backend), 'INVALID_PROOF');
          continue;
        }
        for (let i = 0; i < proof.length; i++) {
          for (const bit of [0, 200]) {
            const bad = proof.map((h, j) => (j === i ? flipBit(h, bit) : h));
            expectEvidenceErrorSync(() => verifyConsistency(m, n, roots[m]!, roots[n]!, bad, backend), 'INVALID_PROOF');
          }
          const removed = proof.filter((_, j) => j !== i);
          expectEvidenceErrorSync(() => verifyConsistency(m, n, roots[m]!, roots[n]!, removed, backend), 'INVALID_PROOF');
        }
        expectEvidenceErrorSync(() => verifyConsistency(m, n, roots[m]!, roots[n]!, [...proof, roots[1]!], backend), 'INVALID_PROOF');
        expectEvidenceErrorSync(() => verifyConsistency(m, n, roots[n]!, roots[m]!, proof, backend), 'INVALID_PROOF');
        expectEvidenceErrorSync(() => verifyConsistency(n, m, roots[m]!, roots[n]!, proof, backend), 'INVALID_PROOF');
        for (let other = 1; other <= 8; other++) {
          if (other !== m && other < n) {
            expectEvidenceErrorSync(() => verifyConsistency(other, n, roots[m]!, roots[n]!, proof, backend), 'INVALID_PROOF');
          }
        }
      }
    }
  });

  it('the empty tree is consistent with any tree, through an empty proof only', async () => {
    const store = new MemoryNodeStore(backend);
    await store.append(leaves);
    expect(await consistencyProof(0, 5, store.read, backend)).toEqual([]);
    verifyConsistency(0, 5, roots[0]!, roots[5]!, [], backend);
    expectEvidenceErrorSync(() => verifyConsistency(0, 5, roots[1]!, roots[5]!, [], backend), 'INVALID_PROOF');
    expectEvidenceErrorSync(() => verifyConsistency(0, 5, roots[0]!, roots[5]!, [roots[1]!], backend), 'INVALID_PROOF');
  });
});

describe('bad input never crashes a verifier', () => {
  const h = new Uint8Array(32);
  const cases: [string, () => void][] = [
    ['index >= size', () => verifyInclusion(h, 3, 3, [], h)],
    ['negative index', () => verifyInclusion(h, -1, 3, [], h)],
    ['fractional size', () => verifyInclusion(h, 0, 2.5, [], h)],
    ['huge size', () => verifyInclusion(h, 0, 2 ** 60, [], h)],
    ['short leaf hash', () => verifyInclusion(h.subarray(1), 0, 1, [], h)],
    ['short root', () => verifyInclusion(h, 0, 1, [], h.subarray(1))],
    ['short proof hash', () => verifyInclusion(h, 0, 2, [h.subarray(1)], h)],
    ['proof not an array', () => verifyInclusion(h, 0, 2, 'x' as unknown as Uint8Array[], h)],
    ['proof of strings', () => verifyInclusion(h, 0, 2, ['x'] as unknown as Uint8Array[], h)],
    ['sparse proof array', () => verifyInclusion(h, 0, 2, new Array<Uint8Array>(1), h)],
    ['sparse consistency proof', () => verifyConsistency(1, 3, h, h, new Array<Uint8Array>(2))],
    ['too many hashes', () => verifyInclusion(h, 0, 2 ** 40, Array.from({ length: 65 }, () => h), h)],
    ['m > n', () => verifyConsistency(4, 3, h, h, [h])],
    ['NaN size', () => verifyConsistency(Number.NaN, 3, h, h, [h])],
    ['string size', () => verifyConsistency('1' as unknown as number, 3, h, h, [h])],
    ['empty consistency proof', () => verifyConsistency(1, 3, h, h, [])],
    ['short root in consistency', () => verifyConsistency(1, 3, h.subarray(2), h, [h])],
  ];
  it.each(cases)('%s -> INVALID_PROOF', (_label, fn) => {
    expectEvidenceErrorSync(fn, 'INVALID_PROOF');
  });

  it('producers refuse out-of-range requests and unaligned ranges', async () => {
    const { store } = await storeOf(5, noble);
    await expectEvidenceError(() => inclusionProof(5, 5, store.read), 'INVALID_PROOF');
    await expectEvidenceError(() => consistencyProof(3, 2, store.read), 'INVALID_PROOF');
    await expectEvidenceError(() => subtreeHash(1, 3, store.read), 'INVALID_PROOF');
    await expectEvidenceError(() => subtreeHash(2, 2, store.read), 'INVALID_PROOF');
    // A node the store does not have yet.
    await expectEvidenceError(() => treeHash(6, store.read), 'INVALID_PROOF');
  });

  it('proofs are copies: changing one does not change the store', async () => {
    const { store } = await storeOf(4, noble);
    const root = await treeHash(4, store.read);
    const proof = await inclusionProof(0, 4, store.read);
    proof[0]!.fill(0);
    expect(toH(await treeHash(4, store.read))).toBe(toH(root));
    expect(toH((await inclusionProof(0, 4, store.read))[0]!)).not.toBe(toH(proof[0]!));
  });

  it('a reader returning malformed hashes is refused', async () => {
    await expectEvidenceError(() => treeHash(3, () => new Array<Uint8Array>(2)), 'INVALID_PROOF');
    const bad = () => [new Uint8Array(31)];
    await expectEvidenceError(() => treeHash(1, bad), 'INVALID_PROOF');
    await expectEvidenceError(() => appendLeaves(1, [new Uint8Array(32)], bad), 'INVALID_PROOF');
    await expectEvidenceError(() => treeHash(3, () => [new Uint8Array(32)]), 'INVALID_PROOF');
    await expectEvidenceError(() => appendLeaves(0, [new Uint8Array(5)], bad), 'INVALID_PROOF');
  });
});

describe.each(BACKENDS.slice(0, 2))('random trees (%s)', (_name, backend) => {
  fcTest.prop(
    [
      fc.integer({ min: 1, max: 3000 }),
      fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 6 }),
      fc.nat(),
      fc.nat(),
      fc.nat(),
    ],
    { numRuns: 25 },
  )('incremental appends equal rootOf; proofs verify; tampering fails', async (total, batchSizes, a, b, bit) => {
    const all = Array.from({ length: total }, (_, i) => leafHash(Uint8Array.of(i & 0xff, i >>> 8, 1), backend));
    const store = new MemoryNodeStore(backend);
    const appended: [number, Uint8Array][] = [];
    let pos = 0;
    for (let i = 0; pos < total; i++) {
      const step = Math.min(batchSizes[i % batchSizes.length]!, total - pos);
      appended.push([pos + step, await store.append(all.slice(pos, pos + step))]);
      pos += step;
    }
    // The root after each batch equals the RFC recursion over that prefix (checked at the
    // last size and two others, so the test stays fast) and what treeHash reads back.
    const checked = [appended.at(-1)!, appended[a % appended.length]!, appended[b % appended.length]!];
    for (const [n, r] of checked) {
      expect(toH(r)).toBe(toH(rootOf(all.slice(0, n), backend)));
      expect(toH(await treeHash(n, store.read, backend))).toBe(toH(r));
    }
    const size = total;
    const root = await treeHash(size, store.read, backend);
    const index = a % size;
    const proof = await inclusionProof(index, size, store.read, backend);
    verifyInclusion(all[index]!, index, size, proof, root, backend);
    if (proof.length > 0) {
      const k = bit % proof.length;
      const bad = proof.map((h, j) => (j === k ? flipBit(h, bit) : h));
      expectEvidenceErrorSync(() => verifyInclusion(all[index]!, index, size, bad, root, backend), 'INVALID_PROOF');
      expectEvidenceErrorSync(() => verifyInclusion(all[index]!, index, size, proof.slice(1), root, backend), 'INVALID_PROOF');
    }
    const m = 1 + (b % size);
    const rootM = await treeHash(m, store.read, backend);
    const cproof = await consistencyProof(m, size, store.read, backend);
    verifyConsistency(m, size, rootM, root, cproof, backend);
    if (cproof.length > 0) {
      const k = bit % cproof.length;
      const bad = cproof.map((h, j) => (j === k ? flipBit(h, bit) : h));
      expectEvidenceErrorSync(() => verifyConsistency(m, size, rootM, root, bad, backend), 'INVALID_PROOF');
      expectEvidenceErrorSync(() => verifyConsistency(m, size, rootM, root, [...cproof, root], backend), 'INVALID_PROOF');
    }
  });
});
