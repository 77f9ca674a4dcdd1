/**
 * The RFC 6962 §2.1 Merkle hash tree over log entries, with proofs verified as RFC 9162
 * §2.1.3.2 and §2.1.4.2 describe.
 *
 * Storage model: the tree is kept as its complete subtrees. Node (level, index) is the
 * hash of the perfect subtree over leaves [index * 2^level, (index + 1) * 2^level);
 * level 0 holds the leaf hashes. Every node a tree of size n needs exists once the tree
 * has grown past it and never changes, so a store only appends (about two rows per
 * leaf). Any hash the RFC algorithms need — the root of the first n leaves, an audit
 * path, a consistency proof — is a right fold over at most ~log2(n) complete nodes.
 *
 * Reading is batched: a `NodeReader` is given every (level, index) one operation needs
 * in one call (one SQL query for the relay), and returns the hashes in that order.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { copyBytes, equalBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { EvidenceError } from '../evidence/errors.js';
import { HASH_BYTES, MAX_PROOF_HASHES, MAX_TREE_SIZE } from './limits.js';

/** A complete-subtree node: level 0 = leaf hash; covers leaves [index*2^level, (index+1)*2^level). */
export interface NodeId {
  readonly level: number;
  readonly index: number;
}

export interface MerkleNode extends NodeId {
  readonly hash: Uint8Array;
}

/**
 * Reads complete nodes: given ids (distinct), returns their 32-byte hashes in the same
 * order, synchronously or as a promise. A node that is not stored is the reader's error
 * to throw; callers only ask for nodes of trees the store holds.
 */
export type NodeReader = (ids: readonly NodeId[]) => Promise<readonly Uint8Array[]> | readonly Uint8Array[];

const LEAF_PREFIX = Uint8Array.of(0x00);
const NODE_PREFIX = Uint8Array.of(0x01);

/** RFC 6962 leaf hash: SHA-256(0x00 || data). */
export function leafHash(data: Uint8Array, backend: CryptoBackend = defaultBackend): Uint8Array {
  const buf = new Uint8Array(1 + data.length);
  buf.set(LEAF_PREFIX, 0);
  buf.set(data, 1);
  return backend.sha256(buf);
}

/** RFC 6962 interior node hash: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array, backend: CryptoBackend = defaultBackend): Uint8Array {
  const buf = new Uint8Array(1 + left.length + right.length);
  buf.set(NODE_PREFIX, 0);
  buf.set(left, 1);
  buf.set(right, 1 + left.length);
  return backend.sha256(buf);
}

/** The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1). */
export function emptyRoot(backend: CryptoBackend = defaultBackend): Uint8Array {
  return backend.sha256(new Uint8Array(0));
}

/** Largest power of two strictly below n (n >= 2): the RFC's split point k. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH of a list of leaf hashes, straight from the RFC 6962 recursion (no store). */
export function rootOf(leafHashes: readonly Uint8Array[], backend: CryptoBackend = defaultBackend): Uint8Array {
  if (leafHashes.length === 0) return emptyRoot(backend);
  const rec = (lo: number, hi: number): Uint8Array => {
    if (hi - lo === 1) return leafHashes[lo] as Uint8Array;
    const k = splitPoint(hi - lo);
    return nodeHash(rec(lo, lo + k), rec(lo + k, hi), backend);
  };
  return rec(0, leafHashes.length);
}

function isSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && n <= MAX_TREE_SIZE;
}

function proofError(message: string): EvidenceError {
  return new EvidenceError('INVALID_PROOF', message);
}

/**
 * The complete nodes whose right fold is MTH(D[start:end]), left to right. The range
 * must be one the RFC recursion produces: start a multiple of the largest power of two
 * not above end - start (then every piece is aligned).
 */
export function subtreeNodes(start: number, end: number): NodeId[] {
  if (!isSize(start) || !isSize(end) || end <= start) throw proofError('subtree range must be non-empty');
  const out: NodeId[] = [];
  let pos = start;
  let rest = end - start;
  while (rest > 0) {
    let level = 0;
    while (2 ** (level + 1) <= rest) level++;
    const width = 2 ** level;
    // Only the first (widest) piece can be misaligned: the later ones are narrower.
    if (pos % width !== 0) throw proofError('subtree range is not aligned to a complete subtree');
    out.push({ level, index: pos / width });
    pos += width;
    rest -= width;
  }
  return out;
}

function foldRight(hashes: readonly Uint8Array[], backend: CryptoBackend): Uint8Array {
  let acc = hashes[hashes.length - 1] as Uint8Array;
  for (let i = hashes.length - 2; i >= 0; i--) acc = nodeHash(hashes[i] as Uint8Array, acc, backend);
  return acc;
}

const idKey = (id: NodeId): string => `${id.level}/${id.index}`;

/**
 * One call to the reader, its answer checked for shape (the reader may sit on untrusted
 * data, e.g. fetched tiles). Throws INVALID_PROOF for a wrong count or a non-hash.
 */
export async function readNodes(ids: readonly NodeId[], read: NodeReader): Promise<Uint8Array[]> {
  if (ids.length === 0) return [];
  const hashes: unknown = await read(ids);
  if (!Array.isArray(hashes) || hashes.length !== ids.length) throw proofError('node reader returned the wrong number of hashes');
  // Copies: a proof or tile we hand out must not alias the reader's stored arrays.
  return Array.from(hashes as unknown[], (h) => {
    if (!isHash(h)) throw proofError('node reader returned a malformed hash');
    return copyBytes(h);
  });
}

/** One batched read of many ranges' nodes (deduplicated), checked for shape. */
async function readRanges(
  ranges: readonly (readonly [number, number])[],
  read: NodeReader,
  backend: CryptoBackend,
): Promise<Uint8Array[]> {
  const pieces = ranges.map(([s, e]) => subtreeNodes(s, e));
  const unique = new Map<string, NodeId>();
  for (const list of pieces) for (const id of list) unique.set(idKey(id), id);
  const ids = [...unique.values()];
  const hashes = await readNodes(ids, read);
  const byKey = new Map<string, Uint8Array>();
  ids.forEach((id, i) => byKey.set(idKey(id), hashes[i] as Uint8Array));
  return pieces.map((list) => foldRight(list.map((id) => byKey.get(idKey(id)) as Uint8Array), backend));
}

/** MTH(D[start:end]) from complete nodes (one read). */
export async function subtreeHash(
  start: number,
  end: number,
  read: NodeReader,
  backend: CryptoBackend = defaultBackend,
): Promise<Uint8Array> {
  const [h] = await readRanges([[start, end]], read, backend);
  return h as Uint8Array;
}

/** MTH of the first `size` leaves (the root at that size). */
export async function treeHash(size: number, read: NodeReader, backend: CryptoBackend = defaultBackend): Promise<Uint8Array> {
  if (!isSize(size)) throw proofError('tree size out of range');
  if (size === 0) return emptyRoot(backend);
  return subtreeHash(0, size, read, backend);
}

/** The ids of the complete nodes on the right edge of a tree of `size` leaves, highest first. */
export function frontierNodes(size: number): NodeId[] {
  return size === 0 ? [] : subtreeNodes(0, size);
}

export interface AppendResult {
  /** Every node the append completes, in creation order (each leaf, then its parents). */
  readonly nodes: MerkleNode[];
  /** The new tree size. */
  readonly size: number;
  /** The root at the new size. */
  readonly root: Uint8Array;
}

/**
 * Appends leaf hashes to a tree of `size` leaves: reads only the right-edge nodes the new
 * leaves hang under (one per set bit of `size`, in one call) and returns every complete
 * node the new leaves create, plus the new root.
 */
export async function appendLeaves(
  size: number,
  newLeafHashes: readonly Uint8Array[],
  read: NodeReader,
  backend: CryptoBackend = defaultBackend,
): Promise<AppendResult> {
  if (!isSize(size) || !isSize(size + newLeafHashes.length)) throw proofError('tree size out of range');
  for (const h of newLeafHashes) if (!isHash(h)) throw proofError('leaf hash must be 32 bytes');
  // pending[level] = the last complete node at that level if it is a left child still
  // waiting for its right sibling.
  const pending: (Uint8Array | undefined)[] = [];
  const edge = frontierNodes(size);
  const edgeHashes = await readNodes(edge, read);
  edge.forEach((id, i) => {
    pending[id.level] = edgeHashes[i];
  });
  const nodes: MerkleNode[] = [];
  let n = size;
  for (const leaf of newLeafHashes) {
    let hash = leaf;
    let level = 0;
    let index = n;
    nodes.push({ level, index, hash });
    while (index % 2 === 1) {
      hash = nodeHash(pending[level] as Uint8Array, hash, backend);
      pending[level] = undefined;
      level++;
      index = (index - 1) / 2;
      nodes.push({ level, index, hash });
    }
    pending[level] = hash;
    n++;
  }
  let root: Uint8Array | undefined;
  for (let level = 0; level < pending.length; level++) {
    const h = pending[level];
    if (h !== undefined) root = root === undefined ? h : nodeHash(h, root, backend);
  }
  return { nodes, size: n, root: root ?? emptyRoot(backend) };
}

/** Every complete node that appending these leaf hashes to a tree of `size` leaves creates. */
export async function newNodes(
  size: number,
  newLeafHashes: readonly Uint8Array[],
  read: NodeReader,
  backend: CryptoBackend = defaultBackend,
): Promise<MerkleNode[]> {
  return (await appendLeaves(size, newLeafHashes, read, backend)).nodes;
}

/** The subtree ranges of RFC 6962 PATH(index, D[0:size]), leaf sibling first. */
function inclusionRanges(index: number, size: number): [number, number][] {
  const ranges: [number, number][] = [];
  let lo = 0;
  let hi = size;
  while (hi - lo > 1) {
    const k = splitPoint(hi - lo);
    if (index < lo + k) {
      ranges.push([lo + k, hi]);
      hi = lo + k;
    } else {
      ranges.push([lo, lo + k]);
      lo += k;
    }
  }
  return ranges.reverse();
}

/** The subtree ranges of RFC 6962 PROOF(m, D[0:n]) (0 < m < n), in proof order. */
function consistencyRanges(m: number, n: number): [number, number][] {
  const ranges: [number, number][] = [];
  let lo = 0;
  let hi = n;
  let mm = m;
  let whole = true; // SUBPROOF's flag b: the old tree is the whole of this subtree's left part
  while (mm !== hi - lo) {
    const k = splitPoint(hi - lo);
    if (mm <= k) {
      ranges.push([lo + k, hi]);
      hi = lo + k;
    } else {
      ranges.push([lo, lo + k]);
      lo += k;
      mm -= k;
      whole = false;
    }
  }
  if (!whole) ranges.push([lo, hi]);
  return ranges.reverse();
}

/** RFC 6962 §2.1.1 audit path for leaf `index` in the tree of `size` leaves. */
export async function inclusionProof(
  index: number,
  size: number,
  read: NodeReader,
  backend: CryptoBackend = defaultBackend,
): Promise<Uint8Array[]> {
  if (!isSize(size) || !isSize(index) || index >= size) throw proofError('leaf index must be below the tree size');
  return readRanges(inclusionRanges(index, size), read, backend);
}

/** RFC 6962 §2.1.2 consistency proof from size m to size n (empty when m is 0 or m = n). */
export async function consistencyProof(
  m: number,
  n: number,
  read: NodeReader,
  backend: CryptoBackend = defaultBackend,
): Promise<Uint8Array[]> {
  if (!isSize(m) || !isSize(n) || m > n) throw proofError('consistency proof needs 0 <= m <= n');
  if (m === 0 || m === n) return [];
  return readRanges(consistencyRanges(m, n), read, backend);
}

function wellFormedHashes(list: unknown): list is readonly Uint8Array[] {
  if (!Array.isArray(list) || list.length > MAX_PROOF_HASHES) return false;
  // An indexed loop, not every(): every() skips the holes of a sparse array.
  for (let i = 0; i < list.length; i++) if (!isHash(list[i])) return false;
  return true;
}

function isHash(h: unknown): h is Uint8Array {
  return h instanceof Uint8Array && h.length === HASH_BYTES;
}

/**
 * RFC 9162 §2.1.3.2: does `proof` show that `leaf` (a leaf hash) is at `index` in the
 * tree of `size` leaves whose root is `root`? Throws EvidenceError('INVALID_PROOF') when
 * it does not, or when any input is malformed; never anything else.
 */
export function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  size: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
  backend: CryptoBackend = defaultBackend,
): void {
  if (!isHash(leaf) || !isHash(root)) throw proofError('leaf hash and root must be 32 bytes');
  if (!isSize(size) || !isSize(index) || index >= size) throw proofError('leaf index must be below the tree size');
  if (!wellFormedHashes(proof)) throw proofError('proof must be a list of at most 64 hashes of 32 bytes');
  const walk = new PathWalk(index, size - 1);
  let r = leaf;
  for (const p of proof) {
    if (walk.step() === 'left') r = nodeHash(p, r, backend);
    else r = nodeHash(r, p, backend);
  }
  walk.finish();
  if (!equalBytes(r, root)) throw proofError('inclusion proof does not lead to the root');
}

/**
 * RFC 9162 §2.1.4.2: does `proof` show the tree of m leaves with root `rootM` is a prefix
 * of the tree of n leaves with root `rootN`? For m = n the proof must be empty and the
 * roots equal; for m = 0 the proof must be empty and rootM the empty-tree root. Throws
 * EvidenceError('INVALID_PROOF') otherwise; never anything else.
 */
export function verifyConsistency(
  m: number,
  n: number,
  rootM: Uint8Array,
  rootN: Uint8Array,
  proof: readonly Uint8Array[],
  backend: CryptoBackend = defaultBackend,
): void {
  if (!isHash(rootM) || !isHash(rootN)) throw proofError('roots must be 32 bytes');
  if (!isSize(m) || !isSize(n) || m > n) throw proofError('consistency proof needs 0 <= m <= n');
  if (!wellFormedHashes(proof)) throw proofError('proof must be a list of at most 64 hashes of 32 bytes');
  if (m === 0 || m === n) {
    if (proof.length !== 0) throw proofError('consistency proof must be empty for this pair of sizes');
    const expected = m === 0 ? emptyRoot(backend) : rootN;
    if (!equalBytes(rootM, expected)) throw proofError('roots are not consistent');
    return;
  }
  if (proof.length === 0) throw proofError('consistency proof is empty');
  // A power-of-two old tree is itself a node of the new one, so the proof omits its hash.
  const path = isPowerOfTwo(m) ? [rootM, ...proof] : [...proof];
  const walk = new PathWalk(m - 1, n - 1);
  walk.skipRightChildren();
  let fr = path[0] as Uint8Array;
  let sr = path[0] as Uint8Array;
  for (let i = 1; i < path.length; i++) {
    const c = path[i] as Uint8Array;
    if (walk.step() === 'left') {
      fr = nodeHash(c, fr, backend);
      sr = nodeHash(c, sr, backend);
    } else {
      sr = nodeHash(sr, c, backend);
    }
  }
  walk.finish();
  if (!equalBytes(fr, rootM) || !equalBytes(sr, rootN)) throw proofError('consistency proof does not lead to both roots');
}

/**
 * The index bookkeeping RFC 9162's two verification algorithms share: fn is the position
 * of the node being built, sn the last position at that level. Numbers, not 32-bit
 * integers, so sizes up to 2^53 work (no bitwise operators).
 */
class PathWalk {
  constructor(
    private fn: number,
    private sn: number,
  ) {}

  /** Consistency step 4: climb while fn is a right child. */
  skipRightChildren(): void {
    while (this.fn % 2 === 1) this.shift();
  }

  /** Which side the next proof hash goes on; throws when the proof is too long. */
  step(): 'left' | 'right' {
    if (this.sn === 0) throw proofError('proof has too many hashes');
    let side: 'left' | 'right' = 'right';
    if (this.fn % 2 === 1 || this.fn === this.sn) {
      side = 'left';
      // The rightmost node has no sibling at levels where it is a left child: skip them.
      while (this.fn % 2 === 0 && this.fn !== 0) this.shift();
    }
    this.shift();
    return side;
  }

  /** The proof must have reached the root. */
  finish(): void {
    if (this.sn !== 0) throw proofError('proof has too few hashes');
  }

  private shift(): void {
    this.fn = Math.floor(this.fn / 2);
    this.sn = Math.floor(this.sn / 2);
  }
}

function isPowerOfTwo(x: number): boolean {
  let v = x;
  while (v > 1 && v % 2 === 0) v /= 2;
  return v === 1;
}
