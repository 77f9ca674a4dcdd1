/**
 * C2SP tlog-tiles: path encoding (the spec's examples), which tiles a tree has (the
 * spec's size-70,000 and size-256 examples), tiles built from a node store, entry
 * bundles, and checking fetched tiles against a root.
 */
import { describe, expect, it } from 'vitest';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { TILE_WIDTH } from '../../crypto/tlog/limits.js';
import { MemoryNodeStore } from '../../crypto/tlog/memory-store.js';
import { consistencyProof, inclusionProof, leafHash, treeHash, verifyInclusion } from '../../crypto/tlog/merkle.js';
import {
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
  type Tile,
} from '../../crypto/tlog/tiles.js';
import { BACKENDS, toH } from '../crypto/helpers.js';
import { expectEvidenceError, expectEvidenceErrorSync, flipBit, leafData } from './helpers.js';

const hashTile = (level: number, index: number, width = TILE_WIDTH): Tile => ({ kind: 'hash', level, index, width });
const dataTile = (index: number, width = TILE_WIDTH): Tile => ({ kind: 'data', level: 0, index, width });

describe('tile paths', () => {
  it('encodes indices in x-prefixed 3-digit groups (spec example 1234067)', () => {
    expect(encodeTileIndex(1234067)).toBe('x001/x234/067');
    expect(encodeTileIndex(0)).toBe('000');
    expect(encodeTileIndex(67)).toBe('067');
    expect(encodeTileIndex(1000)).toBe('x001/000');
    expect(encodeTileIndex(999_999)).toBe('x999/999');
  });

  const paths: [string, Tile][] = [
    ['tile/0/x001/x234/067', hashTile(0, 1234067)],
    ['tile/0/x001/x234/067.p/8', hashTile(0, 1234067, 8)],
    ['tile/3/000.p/1', hashTile(3, 0, 1)],
    ['tile/63/999', hashTile(63, 999)],
    ['tile/entries/x001/000', dataTile(1000)],
    ['tile/entries/005.p/255', dataTile(5, 255)],
  ];
  it.each(paths)('%s round trips', (path, tile) => {
    expect(parseTilePath(path)).toEqual(tile);
    expect(formatTilePath(tile)).toBe(path);
  });

  const bad = [
    'tile/0/67',
    'tile/0/0067',
    'tile/0/x000/067',
    'tile/0/x1/067',
    'tile/0/001/002',
    'tile/0/x001',
    'tile/00/000',
    'tile/64/000',
    'tile/-1/000',
    'tile/0/000.p/0',
    'tile/0/000.p/256',
    'tile/0/000.p/010',
    'tile/0/000.p/',
    'tile/0/000.p',
    'tile/0/000/',
    '/tile/0/000',
    'tiles/0/000',
    'tile/entries',
    'tile/data/000',
    'tile/0/x001/x002/x003/x004/x005/x006/007',
    'tile/0/' + 'x001/'.repeat(30) + '000',
  ];
  it.each(bad)('%s -> INVALID_TILE', (path) => {
    expectEvidenceErrorSync(() => parseTilePath(path), 'INVALID_TILE');
  });

  it('format refuses impossible tiles', () => {
    expectEvidenceErrorSync(() => formatTilePath(hashTile(64, 0)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => formatTilePath(hashTile(0, 0, 0)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => formatTilePath(hashTile(0, 0, 257)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => formatTilePath(hashTile(0, -1)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => formatTilePath({ kind: 'data', level: 1, index: 0, width: 1 }), 'INVALID_TILE');
  });
});

describe('tiles of a tree size', () => {
  it('matches the spec example for size 70,000', () => {
    const tiles = tilesForSize(70_000);
    const byLevel = (l: number) => tiles.filter((t) => t.level === l);
    expect(byLevel(0).filter((t) => t.width === 256)).toHaveLength(273);
    expect(byLevel(0).filter((t) => t.width < 256)).toEqual([hashTile(0, 273, 112)]);
    expect(byLevel(1)).toEqual([hashTile(1, 0), hashTile(1, 1, 17)]);
    expect(byLevel(2)).toEqual([hashTile(2, 0, 1)]);
    expect(tiles).toHaveLength(273 + 1 + 2 + 1);
    expect(partialTilesForSize(70_000)).toEqual([hashTile(0, 273, 112), hashTile(1, 1, 17), hashTile(2, 0, 1)]);
  });

  it('matches the spec example for size 256, and the empty tree has none', () => {
    expect(tilesForSize(256)).toEqual([hashTile(0, 0), hashTile(1, 0, 1)]);
    expect(tilesForSize(0)).toEqual([]);
    expect(tilesForSize(1)).toEqual([hashTile(0, 0, 1)]);
  });

  it('widths and availability follow the size', () => {
    expect(tileWidthAt(0, 273, 70_000)).toBe(112);
    expect(tileWidthAt(0, 272, 70_000)).toBe(256);
    expect(tileWidthAt(0, 274, 70_000)).toBe(0);
    expect(tileWidthAt(3, 0, 70_000)).toBe(0);
    expect(tileWithin(hashTile(0, 273, 112), 70_000)).toBe(true);
    expect(tileWithin(hashTile(0, 273, 100), 70_000)).toBe(true); // an older partial tile
    expect(tileWithin(hashTile(0, 273, 113), 70_000)).toBe(false);
    expect(tileWithin(hashTile(0, 273), 70_000)).toBe(false);
    expect(tileWithin(hashTile(1, 0), 70_000)).toBe(true);
    expect(tileWithin(dataTile(273, 112), 70_000)).toBe(true);
    expect(tileWithin(hashTile(0, 0, 1), -1)).toBe(false);
  });

  it('a hash tile holds level 8L nodes N*256 ..', () => {
    expect(tileNodeIds(hashTile(1, 2, 3))).toEqual([
      { level: 8, index: 512 },
      { level: 8, index: 513 },
      { level: 8, index: 514 },
    ]);
  });
});

describe('entry bundles', () => {
  it('round trips with uint16 big-endian length prefixes', () => {
    const entries = [new Uint8Array(0), Uint8Array.of(1, 2, 3), new Uint8Array(300).fill(7), new Uint8Array(65535).fill(1)];
    const bytes = encodeEntryBundle(entries);
    expect(Array.from(bytes.subarray(0, 7))).toEqual([0, 0, 0, 3, 1, 2, 3]);
    expect(Array.from(bytes.subarray(7, 9))).toEqual([1, 44]);
    expect(parseEntryBundle(dataTile(0, 4), bytes)).toEqual(entries);
  });

  it('refuses malformed bundles', () => {
    const bytes = encodeEntryBundle([Uint8Array.of(1, 2), Uint8Array.of(3)]);
    expect(parseEntryBundle(dataTile(0, 2), bytes)).toHaveLength(2);
    expectEvidenceErrorSync(() => parseEntryBundle(dataTile(0, 3), bytes), 'INVALID_TILE'); // fewer than width
    expectEvidenceErrorSync(() => parseEntryBundle(dataTile(0, 1), bytes), 'INVALID_TILE'); // more than width
    expectEvidenceErrorSync(() => parseEntryBundle(dataTile(0, 2), bytes.subarray(0, bytes.length - 1)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => parseEntryBundle(dataTile(0, 2), bytes.subarray(0, 5)), 'INVALID_TILE'); // inside a length
    expectEvidenceErrorSync(() => parseEntryBundle(dataTile(0, 2), Uint8Array.of(...bytes, 0)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => parseEntryBundle(hashTile(0, 0, 2), bytes), 'INVALID_TILE');
    expectEvidenceErrorSync(() => encodeEntryBundle([new Uint8Array(65536)]), 'INVALID_TILE');
    expectEvidenceErrorSync(() => encodeEntryBundle([]), 'INVALID_TILE');
  });
});

describe.each(BACKENDS.slice(0, 2))('tiles from a node store (%s)', (_name, backend) => {
  const SIZE = 3 * 256 + 232; // three full level-0 tiles, a partial one, a partial level-1 tile
  const entries = Array.from({ length: SIZE }, (_, i) => leafData(i));

  async function fixture(): Promise<{ store: MemoryNodeStore; root: Uint8Array; tiles: TileSet; raw: Map<string, Uint8Array> }> {
    const store = new MemoryNodeStore(backend);
    const root = await store.append(entries.map((e) => leafHash(e, backend)));
    const tiles = new TileSet(backend);
    const raw = new Map<string, Uint8Array>();
    for (const t of tilesForSize(SIZE)) {
      const bytes = await buildHashTile(t, store.read);
      raw.set(formatTilePath(t), bytes);
      tiles.add(t, bytes);
    }
    return { store, root, tiles, raw };
  }

  it('tiles rebuild the root, the proofs and the entries', async () => {
    const { store, root, tiles } = await fixture();
    expect(tilesForSize(SIZE).map(formatTilePath)).toEqual(['tile/0/000', 'tile/0/001', 'tile/0/002', 'tile/0/003.p/232', 'tile/1/000.p/3']);
    await verifyTiles(SIZE, root, tiles, backend);
    expect(toH(await treeHash(SIZE, tiles.read, backend))).toBe(toH(root));
    for (const [index, size] of [
      [0, SIZE],
      [500, SIZE],
      [SIZE - 1, SIZE],
      [100, 300],
    ] as const) {
      const fromTiles = await inclusionProof(index, size, tiles.read, backend);
      expect(fromTiles.map(toH)).toEqual((await inclusionProof(index, size, store.read, backend)).map(toH));
      verifyInclusion(leafHash(entries[index]!, backend), index, size, fromTiles, await treeHash(size, store.read, backend), backend);
    }
    expect((await consistencyProof(300, SIZE, tiles.read, backend)).map(toH)).toEqual(
      (await consistencyProof(300, SIZE, store.read, backend)).map(toH),
    );
    const bundle = encodeEntryBundle(entries.slice(768, SIZE));
    expect(verifyEntryBundle(dataTile(3, 232), bundle, tiles, backend)).toEqual(entries.slice(768, SIZE));
    const wrong = encodeEntryBundle(entries.slice(0, 232));
    await expectEvidenceError(() => verifyEntryBundle(dataTile(3, 232), wrong, tiles, backend), 'INVALID_PROOF');
  });

  it('a tampered, missing or mismatched tile is caught', async () => {
    const { root, raw } = await fixture();
    const build = (skip?: string, flip?: string): TileSet => {
      const set = new TileSet(backend);
      for (const [path, bytes] of raw) {
        if (path !== skip) set.add(parseTilePath(path), path === flip ? flipBit(bytes, 77) : bytes);
      }
      return set;
    };
    for (const path of raw.keys()) {
      await expectEvidenceError(() => verifyTiles(SIZE, root, build(path), backend), 'INVALID_TILE');
      await expectEvidenceError(() => verifyTiles(SIZE, root, build(undefined, path), backend), 'INVALID_PROOF');
    }
    await expectEvidenceError(() => verifyTiles(SIZE, flipBit(root, 1), build(), backend), 'INVALID_PROOF');
    // Tiles for a larger size than we hold are missing.
    await expectEvidenceError(() => verifyTiles(SIZE + 24, root, build(), backend), 'INVALID_TILE');
    // Two widths of one tile must agree; the narrower is a prefix of the wider.
    const set = build();
    set.add(hashTile(0, 3, 10), raw.get('tile/0/003.p/232')!.subarray(0, 320));
    expectEvidenceErrorSync(() => set.add(hashTile(0, 3, 10), flipBit(raw.get('tile/0/003.p/232')!.subarray(0, 320), 3)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => set.add(hashTile(0, 3, 10), new Uint8Array(319)), 'INVALID_TILE');
    expectEvidenceErrorSync(() => parseHashTile(hashTile(0, 0, 1), new Uint8Array(64)), 'INVALID_TILE');
    // A node the tiles do not cover.
    expectEvidenceErrorSync(() => set.node(0, SIZE), 'INVALID_TILE');
    expectEvidenceErrorSync(() => set.node(-1, 0), 'INVALID_TILE');
    expectEvidenceErrorSync(() => set.node(0, 0.5), 'INVALID_TILE');
  });
});

it('a tree of 70,000 leaves: all seven tile kinds verify against the root', async () => {
  const size = 70_000;
  const store = new MemoryNodeStore(defaultBackend);
  const root = await store.append(Array.from({ length: size }, (_, i) => leafHash(leafData(i))));
  const tiles = new TileSet();
  for (const t of tilesForSize(size)) tiles.add(t, await buildHashTile(t, store.read));
  await verifyTiles(size, root, tiles);
  const index = 65_600;
  const proof = await inclusionProof(index, size, tiles.read);
  verifyInclusion(leafHash(leafData(index)), index, size, proof, root);
});
