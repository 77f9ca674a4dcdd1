/**
 * The receipt log's HTTP contract (docs/PROTOCOL.md "Receipt log"): the submit request,
 * and every JSON answer of the read API, with one decoder each that the relay, the SDK
 * and tests share. Hashes travel as standard base64 (as in checkpoints); receipts as
 * the compact JWS text that is the leaf.
 */
import { type JsonObject, array, asObject, bool, int, str } from './decode.js';
import { ProtocolError } from './errors.js';

/** Receipts in one submission: each costs a signature check and a few row lookups. */
export const MAX_RECEIPTS_PER_SUBMIT = 64;
/**
 * Log submissions per user and relay process: a burst, refilled at a steady rate. Every
 * receipt is kept forever, and a device may sign any number of distinct receipts about
 * an envelope it received, so this (with MAX_RECEIPTS_PER_SUBMIT) bounds how fast one
 * user can grow the log: at most 256 receipts a second per relay.
 */
export const LOG_SUBMIT_BURST = 64;
export const LOG_SUBMITS_PER_SECOND = 4;
/**
 * Longest receipt the log takes: C2SP entry bundles prefix every entry with a big-endian
 * uint16 length, so a longer leaf could not be served in a data tile.
 */
export const MAX_LOG_ENTRY_BYTES = 0xffff;
/** Receipts in one page of GET /v1/log/receipts (and its default). */
export const MAX_LOG_RECEIPTS_PAGE = 256;
export const DEFAULT_LOG_RECEIPTS_PAGE = 100;
/** Checkpoints in one page of GET /v1/log/checkpoints (and its default). */
export const MAX_LOG_CHECKPOINTS_PAGE = 256;
export const DEFAULT_LOG_CHECKPOINTS_PAGE = 100;
/** Longest checkpoint note served (a few lines and signatures). */
export const MAX_LOG_NOTE_BYTES = 16 * 1024;
/** Most hashes in an inclusion or consistency proof (a tree of at most 2^53 leaves). */
export const MAX_LOG_PROOF_HASHES = 64;
/** Largest tree size or index on the wire: indices stay exact JavaScript integers. */
export const MAX_LOG_SIZE = Number.MAX_SAFE_INTEGER;

/** A SHA-256 hash in canonical standard base64. */
export const LOG_HASH_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

function bad(field: string, why: string): ProtocolError {
  return new ProtocolError('BAD_REQUEST', `${field}: ${why}`);
}

function hashes(o: JsonObject, field: string, max: number): string[] {
  const list = array(o, field, max, () => bad(field, `at most ${max} hashes`));
  return list.map((h, i) => {
    if (typeof h !== 'string' || !LOG_HASH_PATTERN.test(h)) throw bad(`${field}[${i}]`, 'not a base64 SHA-256 hash');
    return h;
  });
}

function hash(o: JsonObject, field: string): string {
  return str(o, field, { max: 44, pattern: LOG_HASH_PATTERN });
}

function objects(o: JsonObject, field: string, max: number): JsonObject[] {
  return array(o, field, max, () => bad(field, `at most ${max} items`)).map((v, i) => asObject(v, `${field}[${i}]`));
}

// ---- POST /v1/log/receipts

export interface SubmitReceiptsRequest {
  readonly receipts: readonly string[];
}

/** Counts the receipts before looking at any (TOO_MANY_RECEIPTS past the limit). */
export function decodeSubmitReceiptsRequest(o: JsonObject): SubmitReceiptsRequest {
  if (!Array.isArray(o.receipts)) throw bad('receipts', 'expected an array of compact JWS strings');
  const receipts = array(o, 'receipts', MAX_RECEIPTS_PER_SUBMIT, () => new ProtocolError('TOO_MANY_RECEIPTS', `at most ${MAX_RECEIPTS_PER_SUBMIT} receipts per request`));
  if (receipts.length === 0) throw bad('receipts', 'at least one receipt');
  for (const k of Object.keys(o)) if (k !== 'receipts') throw bad(k.slice(0, 32), 'unknown member');
  return {
    receipts: receipts.map((r, i) => {
      if (typeof r !== 'string') throw new ProtocolError('RECEIPT_INVALID', `receipts[${i}]: not a string`, { index: i });
      return r;
    }),
  };
}

export interface LoggedReceipt {
  /** The leaf index. */
  readonly index: number;
  readonly leafHash: string;
  /** The receipt was already in the log (this is its existing index). */
  readonly duplicate: boolean;
}

export interface SubmitReceiptsAnswer {
  readonly entries: readonly LoggedReceipt[];
  /** A signed checkpoint covering every entry, when `?checkpoint=1` asked for one. */
  readonly checkpoint?: string;
}

export function decodeSubmitReceiptsAnswer(o: JsonObject): SubmitReceiptsAnswer {
  const entries = objects(o, 'entries', MAX_RECEIPTS_PER_SUBMIT).map((e) => ({
    index: int(e, 'index', 0, MAX_LOG_SIZE),
    leafHash: hash(e, 'leafHash'),
    duplicate: bool(e, 'duplicate'),
  }));
  return o.checkpoint === undefined ? { entries } : { entries, checkpoint: str(o, 'checkpoint', { max: MAX_LOG_NOTE_BYTES }) };
}

// ---- proofs

export interface InclusionProofAnswer {
  readonly index: number;
  readonly size: number;
  readonly hashes: readonly string[];
}

export function decodeInclusionProofAnswer(o: JsonObject): InclusionProofAnswer {
  return { index: int(o, 'index', 0, MAX_LOG_SIZE), size: int(o, 'size', 1, MAX_LOG_SIZE), hashes: hashes(o, 'hashes', MAX_LOG_PROOF_HASHES) };
}

export interface ConsistencyProofAnswer {
  readonly from: number;
  readonly to: number;
  readonly hashes: readonly string[];
}

export function decodeConsistencyProofAnswer(o: JsonObject): ConsistencyProofAnswer {
  return { from: int(o, 'from', 0, MAX_LOG_SIZE), to: int(o, 'to', 0, MAX_LOG_SIZE), hashes: hashes(o, 'hashes', MAX_LOG_PROOF_HASHES) };
}

// ---- key and checkpoints

export interface LogKeyAnswer {
  /** The checkpoint origin line. */
  readonly origin: string;
  /** The C2SP signed-note verifier key string. */
  readonly verifierKey: string;
}

export function decodeLogKeyAnswer(o: JsonObject): LogKeyAnswer {
  return { origin: str(o, 'origin', { max: 256 }), verifierKey: str(o, 'verifierKey', { max: 512 }) };
}

export interface CheckpointRecord {
  readonly size: number;
  readonly root: string;
  /** When the relay signed it, ms since the epoch. */
  readonly signedAt: number;
  /** The signed note, as served by GET /v1/log/checkpoint. */
  readonly note: string;
}

export interface CheckpointsAnswer {
  readonly checkpoints: readonly CheckpointRecord[];
}

export function decodeCheckpointsAnswer(o: JsonObject): CheckpointsAnswer {
  return {
    checkpoints: objects(o, 'checkpoints', MAX_LOG_CHECKPOINTS_PAGE).map((c) => ({
      size: int(c, 'size', 0, MAX_LOG_SIZE),
      root: hash(c, 'root'),
      signedAt: int(c, 'signedAt', 0, Number.MAX_SAFE_INTEGER),
      note: str(c, 'note', { max: MAX_LOG_NOTE_BYTES }),
    })),
  };
}

// ---- GET /v1/log/receipts

export interface ReceiptRecord {
  readonly index: number;
  readonly leafHash: string;
  /** The receipt (compact JWS), byte for byte the leaf. */
  readonly receipt: string;
  readonly submittedAt: number;
}

export interface ReceiptsAnswer {
  readonly receipts: readonly ReceiptRecord[];
  /** The `from` of the next page, when this one was full. */
  readonly next?: number;
}

export function decodeReceiptsAnswer(o: JsonObject): ReceiptsAnswer {
  const receipts = objects(o, 'receipts', MAX_LOG_RECEIPTS_PAGE).map((r) => ({
    index: int(r, 'index', 0, MAX_LOG_SIZE),
    leafHash: hash(r, 'leafHash'),
    receipt: str(r, 'receipt', { max: MAX_LOG_ENTRY_BYTES }),
    submittedAt: int(r, 'submittedAt', 0, Number.MAX_SAFE_INTEGER),
  }));
  return o.next === undefined ? { receipts } : { receipts, next: int(o, 'next', 0, MAX_LOG_SIZE) };
}
