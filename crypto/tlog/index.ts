/**
 * Public surface of the transparency-log code: the RFC 6962 Merkle tree and its proofs,
 * C2SP signed notes, checkpoints, tiles and tlog proofs. Pure TypeScript (hashing and
 * signatures through the CryptoBackend), shared by the relay, the auditor and the SDK.
 */
export {
  appendLeaves,
  consistencyProof,
  emptyRoot,
  frontierNodes,
  inclusionProof,
  leafHash,
  newNodes,
  nodeHash,
  readNodes,
  rootOf,
  subtreeHash,
  subtreeNodes,
  treeHash,
  verifyConsistency,
  verifyInclusion,
} from './merkle.js';
export type { AppendResult, MerkleNode, NodeId, NodeReader } from './merkle.js';
export { MemoryNodeStore } from './memory-store.js';
export { isValidKeyName, NoteSigner, NoteVerifier, noteKeyId, openNote, parseNote, SIG_TYPE_ED25519, signNote } from './note.js';
export type { NoteSignature, OpenedNote } from './note.js';
export { formatCheckpoint, openCheckpoint, parseCheckpoint, signCheckpoint } from './checkpoint.js';
export type { Checkpoint, OpenedCheckpoint } from './checkpoint.js';
export {
  buildHashTile,
  encodeEntryBundle,
  encodeTileIndex,
  formatTilePath,
  parseEntryBundle,
  parseHashTile,
  parseTilePath,
  partialTilesForSize,
  tileNodeIds,
  TileSet,
  tilesForSize,
  tileWidthAt,
  tileWithin,
  verifyEntryBundle,
  verifyTiles,
} from './tiles.js';
export type { Tile } from './tiles.js';
export { formatTlogProof, parseTlogProof, TLOG_PROOF_HEADER, verifyTlogProof } from './proof-format.js';
export type { TlogProof, VerifiedTlogProof } from './proof-format.js';
export { fromBase64, toBase64 } from './base64.js';
export * as tlogLimits from './limits.js';
