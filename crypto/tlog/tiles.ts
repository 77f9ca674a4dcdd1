/**
 * C2SP tiled logs (c2sp.org/tlog-tiles): tile paths, which tiles a tree has, tile and
 * entry-bundle bytes, and checking a set of fetched tiles against a checkpoint.
 *
 * A level-L hash tile N of width W holds the tree-level-8L nodes N*256 .. N*256+W-1
 * (each the root of a perfect subtree of 256^L leaves), concatenated; full tiles have
 * W = 256. Entry bundle N holds the entries of level-0 tile N, each prefixed by its
 * big-endian uint16 length. Partial tiles are the right edge: at level L a tree of size
 * S has floor(S / 256^L) mod 256 hashes in its partial tile.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { equalBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { EvidenceError } from '../evidence/errors.js';
import { parseDecimal } from './checkpoint.js';
import {
  HASH_BYTES,
  MAX_ENTRY_BYTES,
  MAX_TILE_LEVEL,
  MAX_TILE_PATH_CHARS,
  MAX_TREE_SIZE,
  TILE_HEIGHT,
  TILE_WIDTH,
} from './limits.js';
import { leafHash, nodeHash, readNodes, treeHash, type NodeId, type NodeReader } from './merkle.js';

/** A hash tile (`tile/<L>/<N>`) or an entry bundle (`tile/entries/<N>`); width 256 = full. */
export interface Tile {
  readonly kind: 'hash' | 'data';
  /** Tile level (0 for entry bundles). */
  readonly level: number;
  readonly index: number;
  /** 1..256; below 256 the tile is partial (`.p/<W>`). */
  readonly width: number;
}

function tileError(message: string): EvidenceError {
  return new EvidenceError('INVALID_TILE', message);
}

/** Hashes at tree level 8*level in a tree of `size` leaves. */
function countAtTileLevel(level: number, size: number): number {
  return Math.floor(size / TILE_WIDTH ** level);
}

function checkTile(tile: Tile): void {
  const { kind, level, index, width } = tile;
  if (kind !== 'hash' && kind !== 'data') throw tileError('tile kind must be hash or data');
  if (!Number.isInteger(level) || level < 0 || level > MAX_TILE_LEVEL || (kind === 'data' && level !== 0)) {
    throw tileError('tile level out of range');
  }
  if (!Number.isSafeInteger(index) || index < 0) throw tileError('tile index out of range');
  if (!Number.isInteger(width) || width < 1 || width > TILE_WIDTH) throw tileError('tile width out of range');
}

/** The tile index in 3-digit path elements, all but the last prefixed with x: 1234067 -> x001/x234/067. */
export function encodeTileIndex(index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw tileError('tile index out of range');
  const groups: string[] = [];
  let n = index;
  do {
    groups.unshift(String(n % 1000).padStart(3, '0'));
    n = Math.floor(n / 1000);
  } while (n > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join('/');
}

/** `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` (relative to the log prefix). */
export function formatTilePath(tile: Tile): string {
  checkTile(tile);
  const head = tile.kind === 'data' ? 'tile/entries' : `tile/${tile.level}`;
  const partial = tile.width < TILE_WIDTH ? `.p/${tile.width}` : '';
  return `${head}/${encodeTileIndex(tile.index)}${partial}`;
}

/** Strictly parses a tile path (one accepted path per tile). Throws INVALID_TILE. */
export function parseTilePath(path: string): Tile {
  if (typeof path !== 'string' || path.length > MAX_TILE_PATH_CHARS) throw tileError('tile path is not a bounded string');
  const parts = path.split('/');
  if (parts.length < 3 || parts[0] !== 'tile') throw tileError('tile path must start with tile/');
  const levelText = parts[1] as string;
  let kind: Tile['kind'] = 'hash';
  let level = 0;
  if (levelText === 'entries') kind = 'data';
  else {
    const l = parseDecimal(levelText);
    if (l === undefined || l > MAX_TILE_LEVEL) throw tileError('tile level must be a decimal 0..63');
    level = l;
  }
  let rest = parts.slice(2);
  let width = TILE_WIDTH;
  const last = rest.length - 1;
  if (rest.length >= 2 && (rest[last - 1] as string).endsWith('.p')) {
    const w = parseDecimal(rest[last] as string);
    if (w === undefined || w < 1 || w >= TILE_WIDTH) throw tileError('partial tile width must be 1..255');
    width = w;
    rest = [...rest.slice(0, last - 1), (rest[last - 1] as string).slice(0, -2)];
  }
  let index = 0;
  rest.forEach((element, i) => {
    const isLast = i === rest.length - 1;
    const digits = isLast ? element : element.startsWith('x') ? element.slice(1) : '';
    if (!/^[0-9]{3}$/.test(digits)) throw tileError('tile index elements must be x### ... ###');
    index = index * 1000 + Number(digits);
  });
  if (!Number.isSafeInteger(index)) throw tileError('tile index out of range');
  const tile: Tile = { kind, level, index, width };
  // Canonical form only (no x000/ leading groups): the path must be the one we would write.
  if (formatTilePath(tile) !== path) throw tileError('tile path is not in canonical form');
  return tile;
}

/**
 * The width of level-`level` tile `index` in a tree of `size` leaves: 256 for a full
 * tile, 1..255 for the partial right-edge tile, 0 when the tree has no such tile.
 */
export function tileWidthAt(level: number, index: number, size: number): number {
  const count = countAtTileLevel(level, size);
  const start = index * TILE_WIDTH;
  if (count <= start) return 0;
  return Math.min(TILE_WIDTH, count - start);
}

/** Whether `tile` (at its width) can be built from a tree of `size` leaves. */
export function tileWithin(tile: Tile, size: number): boolean {
  checkTile(tile);
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_TREE_SIZE) return false;
  return tile.index * TILE_WIDTH + tile.width <= countAtTileLevel(tile.level, size);
}

/** Every hash tile of a tree of `size` leaves (full and partial), level by level. */
export function tilesForSize(size: number): Tile[] {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_TREE_SIZE) throw tileError('tree size out of range');
  const out: Tile[] = [];
  for (let level = 0; countAtTileLevel(level, size) > 0; level++) {
    const count = countAtTileLevel(level, size);
    for (let index = 0; index * TILE_WIDTH < count; index++) {
      out.push({ kind: 'hash', level, index, width: Math.min(TILE_WIDTH, count - index * TILE_WIDTH) });
    }
  }
  return out;
}

/** The partial (right-edge) hash tiles of a tree of `size` leaves, lowest level first. */
export function partialTilesForSize(size: number): Tile[] {
  const out: Tile[] = [];
  for (let level = 0; countAtTileLevel(level, size) > 0; level++) {
    const width = countAtTileLevel(level, size) % TILE_WIDTH;
    if (width > 0) out.push({ kind: 'hash', level, index: Math.floor(countAtTileLevel(level, size) / TILE_WIDTH), width });
  }
  return out;
}

/** The complete nodes a hash tile holds, in order. */
export function tileNodeIds(tile: Tile): NodeId[] {
  checkTile(tile);
  if (tile.kind !== 'hash') throw tileError('entry bundles hold entries, not nodes');
  const level = tile.level * TILE_HEIGHT;
  return Array.from({ length: tile.width }, (_, i) => ({ level, index: tile.index * TILE_WIDTH + i }));
}

/** A hash tile's bytes, from complete nodes (one batched read). */
export async function buildHashTile(tile: Tile, read: NodeReader): Promise<Uint8Array> {
  const hashes = await readNodes(tileNodeIds(tile), read);
  const out = new Uint8Array(hashes.length * HASH_BYTES);
  hashes.forEach((h, i) => out.set(h, i * HASH_BYTES));
  return out;
}

/** Splits a hash tile into its hashes; the size must be exactly 32 * width. */
export function parseHashTile(tile: Tile, bytes: Uint8Array): Uint8Array[] {
  checkTile(tile);
  if (tile.kind !== 'hash') throw tileError('not a hash tile');
  if (!(bytes instanceof Uint8Array) || bytes.length !== tile.width * HASH_BYTES) throw tileError('hash tile has the wrong size');
  return Array.from({ length: tile.width }, (_, i) => bytes.slice(i * HASH_BYTES, (i + 1) * HASH_BYTES));
}

/** An entry bundle: each entry as a big-endian uint16 length and its bytes. */
export function encodeEntryBundle(entries: readonly Uint8Array[]): Uint8Array {
  if (entries.length < 1 || entries.length > TILE_WIDTH) throw tileError('an entry bundle holds 1..256 entries');
  let total = 0;
  for (const e of entries) {
    if (!(e instanceof Uint8Array) || e.length > MAX_ENTRY_BYTES) throw tileError('entry over 65535 bytes');
    total += 2 + e.length;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const e of entries) {
    out[off] = e.length >>> 8;
    out[off + 1] = e.length & 0xff;
    out.set(e, off + 2);
    off += 2 + e.length;
  }
  return out;
}

/** Parses an entry bundle holding exactly `tile.width` entries and nothing more. */
export function parseEntryBundle(tile: Tile, bytes: Uint8Array): Uint8Array[] {
  checkTile(tile);
  if (tile.kind !== 'data') throw tileError('not an entry bundle');
  if (!(bytes instanceof Uint8Array) || bytes.length > tile.width * (2 + MAX_ENTRY_BYTES)) throw tileError('entry bundle has the wrong size');
  const entries: Uint8Array[] = [];
  let off = 0;
  while (off < bytes.length) {
    if (entries.length === tile.width) throw tileError('entry bundle has more entries than its width');
    if (off + 2 > bytes.length) throw tileError('entry bundle ends inside a length');
    const len = ((bytes[off] as number) << 8) | (bytes[off + 1] as number);
    if (off + 2 + len > bytes.length) throw tileError('entry bundle ends inside an entry');
    entries.push(bytes.slice(off + 2, off + 2 + len));
    off += 2 + len;
  }
  if (entries.length !== tile.width) throw tileError('entry bundle has fewer entries than its width');
  return entries;
}

/** The root of a perfect subtree over a power-of-two row of hashes. */
function perfectRoot(hashes: readonly Uint8Array[], backend: CryptoBackend): Uint8Array {
  let row = hashes;
  while (row.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i < row.length; i += 2) next.push(nodeHash(row[i] as Uint8Array, row[i + 1] as Uint8Array, backend));
    row = next;
  }
  return row[0] as Uint8Array;
}

/**
 * Hash tiles a client fetched, as a node store: reads any complete node whose level-8L
 * hashes are in the set, hashing the levels between tile levels. Tiles of one (level,
 * index) at different widths must agree on their common prefix; the widest is kept.
 */
export class TileSet {
  readonly #tiles = new Map<string, Uint8Array[]>();
  readonly #backend: CryptoBackend;

  constructor(backend: CryptoBackend = defaultBackend) {
    this.#backend = backend;
  }

  /** Adds a fetched hash tile (checked for size). Throws INVALID_TILE. */
  add(tile: Tile, bytes: Uint8Array): void {
    const hashes = parseHashTile(tile, bytes);
    const key = `${tile.level}/${tile.index}`;
    const have = this.#tiles.get(key);
    if (have !== undefined) {
      const common = Math.min(have.length, hashes.length);
      for (let i = 0; i < common; i++) {
        if (!equalBytes(have[i] as Uint8Array, hashes[i] as Uint8Array)) throw tileError('two widths of one tile disagree');
      }
      if (have.length >= hashes.length) return;
    }
    this.#tiles.set(key, hashes);
  }

  /** The hashes held for level-`level` tile `index` (undefined when not fetched). */
  hashes(level: number, index: number): readonly Uint8Array[] | undefined {
    return this.#tiles.get(`${level}/${index}`);
  }

  /** Node (level, index) from the tiles; throws INVALID_TILE when they do not hold it. */
  node(level: number, index: number): Uint8Array {
    if (!Number.isInteger(level) || level < 0 || level >= (MAX_TILE_LEVEL + 1) * TILE_HEIGHT || !Number.isSafeInteger(index) || index < 0) {
      throw tileError('node id out of range');
    }
    const tileLevel = Math.floor(level / TILE_HEIGHT);
    const span = 2 ** (level - tileLevel * TILE_HEIGHT);
    const first = index * span;
    const tileIndex = Math.floor(first / TILE_WIDTH);
    const offset = first % TILE_WIDTH;
    const hashes = this.#tiles.get(`${tileLevel}/${tileIndex}`);
    if (hashes === undefined || offset + span > hashes.length) throw tileError(`no tile holds node ${level}/${index}`);
    return perfectRoot(hashes.slice(offset, offset + span), this.#backend);
  }

  /** The batch reader the merkle functions take. */
  readonly read: NodeReader = (ids: readonly NodeId[]) => ids.map((id) => this.node(id.level, id.index));
}

/**
 * Checks that `tiles` hold the whole tree of `size` leaves with root `rootHash` (from a
 * verified checkpoint): every tile of that size is present, the root recomputed from
 * the right-edge tiles matches, and every full tile hashes to its entry in the tile
 * above. Throws INVALID_TILE for a missing tile, INVALID_PROOF when a hash disagrees.
 */
export async function verifyTiles(
  size: number,
  rootHash: Uint8Array,
  tiles: TileSet,
  backend: CryptoBackend = defaultBackend,
): Promise<void> {
  const needed = tilesForSize(size);
  for (const t of needed) {
    const have = tiles.hashes(t.level, t.index);
    if (have === undefined || have.length < t.width) throw tileError(`missing ${formatTilePath(t)}`);
  }
  const root = await treeHash(size, tiles.read, backend);
  if (!equalBytes(root, rootHash)) throw new EvidenceError('INVALID_PROOF', 'tiles do not give the checkpoint root');
  for (const t of needed) {
    if (t.width < TILE_WIDTH) continue; // partial tiles are all on the root's right edge, checked above
    // The full tile's own subtree root, hashed from its 256 hashes (not read from above).
    const own = perfectRoot(tiles.hashes(t.level, t.index) as Uint8Array[], backend);
    const parent = tiles.hashes(t.level + 1, Math.floor(t.index / TILE_WIDTH))?.[t.index % TILE_WIDTH];
    if (parent === undefined || !equalBytes(own, parent)) {
      throw new EvidenceError('INVALID_PROOF', `${formatTilePath(t)} does not match the tile above`);
    }
  }
}

/**
 * Checks an entry bundle against the level-0 hashes in `tiles`: each entry's leaf hash
 * must be the tile's hash at its position. Returns the entries.
 */
export function verifyEntryBundle(
  tile: Tile,
  bytes: Uint8Array,
  tiles: TileSet,
  backend: CryptoBackend = defaultBackend,
): Uint8Array[] {
  const entries = parseEntryBundle(tile, bytes);
  const hashes = tiles.hashes(0, tile.index);
  if (hashes === undefined || hashes.length < entries.length) throw tileError('no level-0 tile for this entry bundle');
  entries.forEach((e, i) => {
    if (!equalBytes(leafHash(e, backend), hashes[i] as Uint8Array)) {
      throw new EvidenceError('INVALID_PROOF', `entry ${tile.index * TILE_WIDTH + i} does not match its leaf hash`);
    }
  });
  return entries;
}
