/**
 * C2SP checkpoints (c2sp.org/tlog-checkpoint): the note text naming a log's tree head.
 *
 *   <origin>\n<tree size, decimal, no leading zeros>\n<base64 root hash>\n[<extension>\n...]
 *
 * `formatCheckpoint` and `parseCheckpoint` are exact inverses; parsing is strict (one
 * accepted text per checkpoint). `signCheckpoint` / `openCheckpoint` wrap them in a
 * signed note; opening checks the origin is the expected log's.
 */
import { copyBytes, utf8Encode } from '../primitives/bytes.js';
import { EvidenceError } from '../evidence/errors.js';
import { fromBase64, toBase64 } from './base64.js';
import { HASH_BYTES, MAX_CHECKPOINT_EXTENSION_LINES, MAX_KEY_NAME_BYTES, MAX_NOTE_BYTES, MAX_TREE_SIZE } from './limits.js';
import { openNote, signNote, type NoteSigner, type NoteVerifier, type OpenedNote } from './note.js';

export interface Checkpoint {
  /** The log's identity, e.g. `relay.example/log`. */
  readonly origin: string;
  readonly size: number;
  /** The RFC 6962 root of the first `size` leaves (32 bytes). */
  readonly rootHash: Uint8Array;
  /** Opaque, non-empty extension lines (their use is not recommended). */
  readonly extensions: readonly string[];
}

function checkpointError(message: string): EvidenceError {
  return new EvidenceError('INVALID_CHECKPOINT', message);
}

/** A decimal without leading zeros ("0" alone for zero), as a safe integer. */
export function parseDecimal(s: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

// Origins: non-empty, bounded, no control characters (the note forbids them anyway).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function checkLine(line: string, what: string): void {
  if (line.length === 0 || CONTROL.test(line)) throw checkpointError(`${what} must be a non-empty line`);
}

function checkOrigin(origin: unknown): asserts origin is string {
  if (typeof origin !== 'string') throw checkpointError('origin must be a string');
  checkLine(origin, 'origin');
  if (utf8Encode(origin).length > MAX_KEY_NAME_BYTES) throw checkpointError('origin is too long');
}

/** The checkpoint's note text. Throws INVALID_CHECKPOINT for an invalid field. */
export function formatCheckpoint(cp: Checkpoint): string {
  checkOrigin(cp.origin);
  if (!Number.isSafeInteger(cp.size) || cp.size < 0 || cp.size > MAX_TREE_SIZE) throw checkpointError('tree size out of range');
  if (!(cp.rootHash instanceof Uint8Array) || cp.rootHash.length !== HASH_BYTES) throw checkpointError('root hash must be 32 bytes');
  const extensions = cp.extensions ?? [];
  if (extensions.length > MAX_CHECKPOINT_EXTENSION_LINES) throw checkpointError('too many extension lines');
  for (const line of extensions) checkLine(line, 'extension line');
  return [cp.origin, String(cp.size), toBase64(cp.rootHash), ...extensions].join('\n') + '\n';
}

/** Strictly parses a checkpoint note text. Throws INVALID_CHECKPOINT. */
export function parseCheckpoint(text: string): Checkpoint {
  if (typeof text !== 'string' || text.length > MAX_NOTE_BYTES) throw checkpointError('checkpoint text is not a bounded string');
  if (!text.endsWith('\n')) throw checkpointError('checkpoint text must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw checkpointError('checkpoint needs origin, size and root hash lines');
  if (lines.length > 3 + MAX_CHECKPOINT_EXTENSION_LINES) throw checkpointError('too many extension lines');
  const [origin, sizeText, rootText, ...extensions] = lines as [string, string, string, ...string[]];
  checkOrigin(origin);
  const size = parseDecimal(sizeText);
  if (size === undefined) throw checkpointError('tree size must be a decimal without leading zeros');
  const rootHash = fromBase64(rootText);
  if (rootHash === undefined || rootHash.length !== HASH_BYTES) throw checkpointError('root hash must be base64 of 32 bytes');
  for (const line of extensions) checkLine(line, 'extension line');
  return { origin, size, rootHash, extensions };
}

/** The checkpoint as a note signed by `signers` (the log's key first, by convention). */
export function signCheckpoint(cp: Checkpoint, signers: NoteSigner | readonly NoteSigner[]): string {
  return signNote(formatCheckpoint(cp), signers);
}

export interface OpenedCheckpoint {
  readonly checkpoint: Checkpoint;
  readonly note: OpenedNote;
}

/**
 * Opens a signed checkpoint: the note must carry a valid signature by one of
 * `verifiers` (the log's keys) and name `origin`. Throws INVALID_NOTE / BAD_SIGNATURE
 * from the note, INVALID_CHECKPOINT for a malformed body or another log's origin.
 */
export function openCheckpoint(
  note: string | Uint8Array,
  origin: string,
  verifiers: readonly NoteVerifier[],
): OpenedCheckpoint {
  const opened = openNote(note, verifiers);
  const checkpoint = parseCheckpoint(opened.text);
  if (checkpoint.origin !== origin) throw checkpointError('checkpoint names another log');
  return { checkpoint: { ...checkpoint, rootHash: copyBytes(checkpoint.rootHash) }, note: opened };
}
