/**
 * An in-memory Merkle node store: the tree as arrays of complete nodes per level. Used by
 * tests and by the offline auditor, which rebuilds a log from its entries.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { copyBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { EvidenceError } from '../evidence/errors.js';
import { appendLeaves, type NodeId, type NodeReader } from './merkle.js';

export class MemoryNodeStore {
  readonly #levels: Uint8Array[][] = [];
  #size = 0;
  readonly #backend: CryptoBackend;

  constructor(backend: CryptoBackend = defaultBackend) {
    this.#backend = backend;
  }

  /** Number of leaves. */
  get size(): number {
    return this.#size;
  }

  /** One stored node; throws INVALID_PROOF for a node the tree does not have yet. */
  node(level: number, index: number): Uint8Array {
    const h = this.#levels[level]?.[index];
    if (h === undefined) throw new EvidenceError('INVALID_PROOF', `node ${level}/${index} is not in the tree`);
    return h;
  }

  /** The batch reader the merkle functions take. */
  readonly read: NodeReader = (ids: readonly NodeId[]) => ids.map((id) => this.node(id.level, id.index));

  /** Appends leaf hashes; returns the new root. */
  async append(leafHashes: readonly Uint8Array[]): Promise<Uint8Array> {
    const { nodes, size, root } = await appendLeaves(this.#size, leafHashes, this.read, this.#backend);
    for (const n of nodes) {
      const level = (this.#levels[n.level] ??= []);
      level[n.index] = copyBytes(n.hash);
    }
    this.#size = size;
    return root;
  }
}
