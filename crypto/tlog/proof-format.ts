/**
 * C2SP tlog proofs (c2sp.org/tlog-proof): an offline-verifiable proof that an entry is
 * in a log, as text.
 *
 *   c2sp.org/tlog-proof@v1
 *   [extra <base64 opaque data>]
 *   index <decimal>
 *   <base64 hash>          (the RFC 6962 audit path, leaf sibling first)
 *   ...
 *   <empty line>
 *   <the signed checkpoint note, verbatim>
 *
 * The extra data is not authenticated; callers must not trust it.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import { EvidenceError } from '../evidence/errors.js';
import { fromBase64, toBase64 } from './base64.js';
import { openCheckpoint, parseDecimal, type Checkpoint } from './checkpoint.js';
import { HASH_BYTES, MAX_PROOF_HASHES, MAX_TLOG_PROOF_BYTES, MAX_TLOG_PROOF_EXTRA_BYTES } from './limits.js';
import { verifyInclusion } from './merkle.js';
import type { NoteVerifier } from './note.js';

export const TLOG_PROOF_HEADER = 'c2sp.org/tlog-proof@v1';

export interface TlogProof {
  /** Opaque, unauthenticated application data. */
  readonly extra?: Uint8Array;
  readonly index: number;
  /** The inclusion proof (audit path). */
  readonly proof: readonly Uint8Array[];
  /** The signed checkpoint note, verbatim. */
  readonly checkpoint: string;
}

function proofError(message: string): EvidenceError {
  return new EvidenceError('INVALID_PROOF', message);
}

/** The proof's text form. Throws INVALID_PROOF for an out-of-range field. */
export function formatTlogProof(p: TlogProof): string {
  if (!Number.isSafeInteger(p.index) || p.index < 0) throw proofError('index out of range');
  if (p.proof.length > MAX_PROOF_HASHES) throw proofError('too many proof hashes');
  const lines = [TLOG_PROOF_HEADER];
  if (p.extra !== undefined) {
    if (p.extra.length > MAX_TLOG_PROOF_EXTRA_BYTES) throw proofError('extra data over the size limit');
    lines.push(`extra ${toBase64(p.extra)}`);
  }
  lines.push(`index ${p.index}`);
  for (const h of p.proof) {
    if (!(h instanceof Uint8Array) || h.length !== HASH_BYTES) throw proofError('proof hashes must be 32 bytes');
    lines.push(toBase64(h));
  }
  const text = `${lines.join('\n')}\n\n${p.checkpoint}`;
  if (text.length > MAX_TLOG_PROOF_BYTES) throw proofError('tlog proof over the size limit');
  return text;
}

/**
 * Strictly parses a tlog proof's form (the checkpoint is only split off here; verify
 * with `verifyTlogProof`). Throws INVALID_PROOF.
 */
export function parseTlogProof(input: string | Uint8Array): TlogProof {
  let text: string;
  if (input instanceof Uint8Array) {
    if (input.length > MAX_TLOG_PROOF_BYTES) throw proofError('tlog proof over the size limit');
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      throw proofError('tlog proof is not valid UTF-8');
    }
  } else if (typeof input === 'string') {
    if (input.length > MAX_TLOG_PROOF_BYTES) throw proofError('tlog proof over the size limit');
    text = input;
  } else {
    throw proofError('tlog proof must be a string or bytes');
  }
  const split = text.indexOf('\n\n');
  if (split < 0) throw proofError('tlog proof has no empty line before its checkpoint');
  const lines = text.slice(0, split).split('\n');
  const checkpoint = text.slice(split + 2);
  if (lines.shift() !== TLOG_PROOF_HEADER) throw proofError(`tlog proof must start with ${TLOG_PROOF_HEADER}`);
  let extra: Uint8Array | undefined;
  if (lines[0]?.startsWith('extra ')) {
    const encoded = (lines.shift() as string).slice('extra '.length);
    if (encoded.length > ((MAX_TLOG_PROOF_EXTRA_BYTES + 2) / 3) * 4 + 4) throw proofError('extra data over the size limit');
    extra = fromBase64(encoded);
    if (extra === undefined || extra.length > MAX_TLOG_PROOF_EXTRA_BYTES) throw proofError('extra data must be base64');
  }
  const indexLine = lines.shift();
  const index = indexLine?.startsWith('index ') ? parseDecimal(indexLine.slice('index '.length)) : undefined;
  if (index === undefined) throw proofError('tlog proof needs an "index <decimal>" line');
  if (lines.length > MAX_PROOF_HASHES) throw proofError('too many proof hashes');
  const proof = lines.map((line) => {
    const h = fromBase64(line);
    if (h === undefined || h.length !== HASH_BYTES) throw proofError('proof lines must be base64 of 32 bytes');
    return h;
  });
  return extra === undefined ? { index, proof, checkpoint } : { extra, index, proof, checkpoint };
}

export interface VerifiedTlogProof {
  readonly checkpoint: Checkpoint;
  readonly index: number;
  /** Unauthenticated: not covered by any signature. */
  readonly extra?: Uint8Array;
}

/**
 * Verifies a tlog proof for the entry whose RFC 6962 leaf hash is `leaf`: the
 * checkpoint must be signed by one of `logKeys` and name `origin`, and the audit path
 * must lead from the leaf at `index` to its root. Throws EvidenceError (INVALID_PROOF,
 * or the note and checkpoint codes).
 */
export function verifyTlogProof(
  input: string | Uint8Array | TlogProof,
  leaf: Uint8Array,
  origin: string,
  logKeys: readonly NoteVerifier[],
  backend: CryptoBackend = defaultBackend,
): VerifiedTlogProof {
  const p = typeof input === 'string' || input instanceof Uint8Array ? parseTlogProof(input) : input;
  const { checkpoint } = openCheckpoint(p.checkpoint, origin, logKeys);
  verifyInclusion(leaf, p.index, checkpoint.size, p.proof, checkpoint.rootHash, backend);
  return p.extra === undefined ? { checkpoint, index: p.index } : { checkpoint, index: p.index, extra: p.extra };
}
