/**
 * Every bound the transparency-log code enforces on outside input, with the reason
 * beside it. Checked before any work (hashing, signature checks, allocation) is done.
 */

/** SHA-256 output: every Merkle node hash and checkpoint root hash has this size. */
export const HASH_BYTES = 32;

/**
 * Largest tree size handled. Sizes and indices are JavaScript numbers; above 2^53 they
 * stop being exact integers, and no log this code runs reaches that size.
 */
export const MAX_TREE_SIZE = Number.MAX_SAFE_INTEGER;

/**
 * Most hashes in one inclusion or consistency proof. A proof for a tree of at most 2^53
 * leaves has at most 53 (inclusion) or 54 (consistency) hashes; anything longer is
 * malformed and is refused before it is hashed.
 */
export const MAX_PROOF_HASHES = 64;

/**
 * Largest signed note accepted. The signed-note spec asks verifiers to accept at least
 * 16 signatures, which may be post-quantum ones of up to ~5 kB each; 128 KiB leaves room
 * for that while bounding what one unauthenticated note can make us parse.
 */
export const MAX_NOTE_BYTES = 128 * 1024;

/** Most signature lines in one note (the spec's floor is 16). */
export const MAX_NOTE_SIGNATURES = 32;

/** Longest key name (note signer, checkpoint origin): names are short URLs. */
export const MAX_KEY_NAME_BYTES = 256;

/** Longest encoded verifier or signer key string we parse. */
export const MAX_KEY_STRING_CHARS = 512;

/** Most extension lines after a checkpoint's root hash (their use is not recommended). */
export const MAX_CHECKPOINT_EXTENSION_LINES = 16;

/** Hashes in a full tile (tile height 8), and the largest entry-bundle width. */
export const TILE_WIDTH = 256;

/** Tile height: a level-L tile holds tree level 8*L. */
export const TILE_HEIGHT = 8;

/** Highest tile level a path may name (tlog-tiles: 0..63). */
export const MAX_TILE_LEVEL = 63;

/** Longest tile path parsed ("tile/entries/x001/x234/067.p/255" is 32 characters). */
export const MAX_TILE_PATH_CHARS = 96;

/** Largest log entry: entry bundles prefix each entry with a big-endian uint16 length. */
export const MAX_ENTRY_BYTES = 0xffff;

/**
 * Largest tlog-proof file: the header, extra data, index and proof lines plus a
 * checkpoint note with its signatures.
 */
export const MAX_TLOG_PROOF_BYTES = MAX_NOTE_BYTES + 16 * 1024;

/** Largest opaque extra data in a tlog-proof (decoded bytes). */
export const MAX_TLOG_PROOF_EXTRA_BYTES = 8 * 1024;
