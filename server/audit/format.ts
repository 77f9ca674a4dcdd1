/**
 * The audit export format, version 1 (docs/AUDIT.md): a directory of JSON and JSON-lines
 * files and a manifest with the SHA-256 of each. One decoder per kind of line; each is
 * strict (unknown members, wrong types, out-of-range numbers are refused) and throws
 * EvidenceError('INVALID_EXPORT') naming the file and line.
 */
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { type JsonObject, array, asObject, int, str } from '../../protocol/decode.js';
import { ProtocolError } from '../../protocol/errors.js';
import { DEVICE_ID_PATTERN, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import {
  type CheckpointRecord,
  type ConsistencyProofAnswer,
  type LogKeyAnswer,
  LOG_HASH_PATTERN,
  MAX_LOG_ENTRY_BYTES,
  MAX_LOG_NOTE_BYTES,
  MAX_LOG_PROOF_HASHES,
  MAX_LOG_SIZE,
  decodeConsistencyProofAnswer,
  decodeLogKeyAnswer,
} from '../../protocol/log.js';
import { MAX_MISSING_DEVICES_LISTED } from './limits.js';

export const EXPORT_FORMAT = 'hermetic-audit-export';
export const EXPORT_VERSION = 1;

/** The files of an export, by role. */
export const EXPORT_FILES = {
  manifest: 'manifest.json',
  key: 'key.json',
  checkpoints: 'checkpoints.jsonl',
  consistency: 'consistency.jsonl',
  receipts: 'receipts.jsonl',
  jwks: 'jwks.jsonl',
} as const;

/** The files the manifest hashes (all but itself). */
export const HASHED_FILES = [EXPORT_FILES.key, EXPORT_FILES.checkpoints, EXPORT_FILES.consistency, EXPORT_FILES.receipts, EXPORT_FILES.jwks] as const;
export type HashedFile = (typeof HASHED_FILES)[number];

export interface DeviceRef {
  readonly user: string;
  readonly device: string;
}

/** One line of receipts.jsonl: a logged receipt and its audit path in the export's head. */
export interface ReceiptLine {
  readonly index: number;
  readonly leafHash: string;
  readonly receipt: string;
  readonly submittedAt: number;
  /** RFC 6962 audit path of `index` in the tree of the head checkpoint's size. */
  readonly inclusion: readonly string[];
}

/** One line of jwks.jsonl: a recipient device's identity key as the relay served it. */
export interface JwkLine extends DeviceRef {
  readonly jwk: { readonly kty: 'OKP'; readonly crv: 'Ed25519'; readonly x: string; readonly kid: string };
}

export interface ExportRange {
  /** First leaf index, or first submission time (ms), exported. */
  readonly from?: { readonly index: number } | { readonly time: number };
  /** Last leaf index, or last submission time (ms), exported (inclusive). */
  readonly to?: { readonly index: number } | { readonly time: number };
  /** Only receipts naming this user as recipient or sender. */
  readonly party?: string;
}

export interface Manifest {
  readonly format: typeof EXPORT_FORMAT;
  readonly version: typeof EXPORT_VERSION;
  /** When the export was written, ms since the epoch. */
  readonly createdAt: number;
  /** The relay it was exported from (its base URL). */
  readonly relay: string;
  readonly range: ExportRange;
  /** The newest exported checkpoint: every receipt's inclusion proof is for its size. */
  readonly head: { readonly size: number; readonly root: string };
  readonly counts: { readonly checkpoints: number; readonly consistency: number; readonly receipts: number; readonly jwks: number };
  /** Recipient devices the relay no longer serves a key for (revoked): their receipts cannot be checked. */
  readonly missingDevices: readonly DeviceRef[];
  readonly missingDeviceCount: number;
  /** SHA-256 (lowercase hex) and length of every other file. */
  readonly files: Readonly<Record<HashedFile, { readonly sha256: string; readonly bytes: number }>>;
}

function invalid(where: string, message: string): EvidenceError {
  return new EvidenceError('INVALID_EXPORT', `${where}: ${message}`);
}

/** Runs a decoder over `o`, turning its field errors into INVALID_EXPORT at `where`. */
export function decodeAt<T>(where: string, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    if (err instanceof ProtocolError || err instanceof EvidenceError) throw invalid(where, err.message);
    throw err;
  }
}

function only(o: JsonObject, members: readonly string[]): void {
  for (const k of Object.keys(o)) if (!members.includes(k)) throw new ProtocolError('BAD_REQUEST', `unknown member "${k.slice(0, 32)}"`);
}

function hashList(o: JsonObject, field: string): string[] {
  return array(o, field, MAX_LOG_PROOF_HASHES, () => new ProtocolError('BAD_REQUEST', `${field}: at most ${MAX_LOG_PROOF_HASHES} hashes`)).map((h, i) => {
    if (typeof h !== 'string' || !LOG_HASH_PATTERN.test(h)) throw new ProtocolError('BAD_REQUEST', `${field}[${i}]: not a base64 SHA-256 hash`);
    return h;
  });
}

const hash = (o: JsonObject, field: string): string => str(o, field, { max: 44, pattern: LOG_HASH_PATTERN });

function deviceRef(o: JsonObject): DeviceRef {
  return {
    user: str(o, 'user', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    device: str(o, 'device', { max: 64, pattern: DEVICE_ID_PATTERN }),
  };
}

export function decodeCheckpointLine(o: JsonObject): CheckpointRecord {
  only(o, ['size', 'root', 'signedAt', 'note']);
  return { size: int(o, 'size', 0, MAX_LOG_SIZE), root: hash(o, 'root'), signedAt: int(o, 'signedAt', 0, Number.MAX_SAFE_INTEGER), note: str(o, 'note', { max: MAX_LOG_NOTE_BYTES }) };
}

export function decodeConsistencyLine(o: JsonObject): ConsistencyProofAnswer {
  only(o, ['from', 'to', 'hashes']);
  return decodeConsistencyProofAnswer(o);
}

export function decodeReceiptLine(o: JsonObject): ReceiptLine {
  only(o, ['index', 'leafHash', 'receipt', 'submittedAt', 'inclusion']);
  return {
    index: int(o, 'index', 0, MAX_LOG_SIZE),
    leafHash: hash(o, 'leafHash'),
    receipt: str(o, 'receipt', { max: MAX_LOG_ENTRY_BYTES }),
    submittedAt: int(o, 'submittedAt', 0, Number.MAX_SAFE_INTEGER),
    inclusion: hashList(o, 'inclusion'),
  };
}

const B64URL_KEY = /^[A-Za-z0-9_-]{43}$/;

export function decodeJwkLine(o: JsonObject): JwkLine {
  only(o, ['user', 'device', 'jwk']);
  const j = asObject(o.jwk, 'jwk');
  only(j, ['kty', 'crv', 'x', 'kid']);
  if (j.kty !== 'OKP' || j.crv !== 'Ed25519') throw new ProtocolError('BAD_REQUEST', 'jwk: not an Ed25519 OKP key');
  return { ...deviceRef(o), jwk: { kty: 'OKP', crv: 'Ed25519', x: str(j, 'x', { max: 43, pattern: B64URL_KEY }), kid: str(j, 'kid', { max: 43, pattern: B64URL_KEY }) } };
}

export function decodeKeyFile(o: JsonObject): LogKeyAnswer {
  only(o, ['origin', 'verifierKey']);
  return decodeLogKeyAnswer(o);
}

function bound(o: JsonObject, field: string): { index: number } | { time: number } | undefined {
  if (o[field] === undefined) return undefined;
  const b = asObject(o[field], field);
  if (b.index !== undefined) {
    only(b, ['index']);
    return { index: int(b, 'index', 0, MAX_LOG_SIZE) };
  }
  only(b, ['time']);
  return { time: int(b, 'time', 0, Number.MAX_SAFE_INTEGER) };
}

export function decodeManifest(o: JsonObject): Manifest {
  only(o, ['format', 'version', 'createdAt', 'relay', 'range', 'head', 'counts', 'missingDevices', 'missingDeviceCount', 'files']);
  if (o.format !== EXPORT_FORMAT) throw new ProtocolError('BAD_REQUEST', `format: not ${EXPORT_FORMAT}`);
  if (o.version !== EXPORT_VERSION) throw new ProtocolError('BAD_REQUEST', `version: only ${EXPORT_VERSION} is supported`);
  const r = asObject(o.range, 'range');
  only(r, ['from', 'to', 'party']);
  const from = bound(r, 'from');
  const to = bound(r, 'to');
  const party = r.party === undefined ? undefined : str(r, 'party', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN });
  const h = asObject(o.head, 'head');
  only(h, ['size', 'root']);
  const c = asObject(o.counts, 'counts');
  only(c, ['checkpoints', 'consistency', 'receipts', 'jwks']);
  const f = asObject(o.files, 'files');
  only(f, HASHED_FILES);
  const files = {} as Record<HashedFile, { sha256: string; bytes: number }>;
  for (const name of HASHED_FILES) {
    const e = asObject(f[name], `files.${name}`);
    only(e, ['sha256', 'bytes']);
    files[name] = { sha256: str(e, 'sha256', { max: 64, pattern: /^[0-9a-f]{64}$/ }), bytes: int(e, 'bytes', 0, Number.MAX_SAFE_INTEGER) };
  }
  const missing = array(o, 'missingDevices', MAX_MISSING_DEVICES_LISTED, () => new ProtocolError('BAD_REQUEST', 'missingDevices: too many'));
  return {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    createdAt: int(o, 'createdAt', 0, Number.MAX_SAFE_INTEGER),
    relay: str(o, 'relay', { max: 2048 }),
    range: { ...(from ? { from } : {}), ...(to ? { to } : {}), ...(party ? { party } : {}) },
    head: { size: int(h, 'size', 0, MAX_LOG_SIZE), root: hash(h, 'root') },
    counts: { checkpoints: int(c, 'checkpoints', 0, MAX_LOG_SIZE), consistency: int(c, 'consistency', 0, MAX_LOG_SIZE), receipts: int(c, 'receipts', 0, MAX_LOG_SIZE), jwks: int(c, 'jwks', 0, MAX_LOG_SIZE) },
    missingDevices: missing.map((m, i) => decodeAt(`missingDevices[${i}]`, () => deviceRef(asObject(m, 'device')))),
    missingDeviceCount: int(o, 'missingDeviceCount', 0, MAX_LOG_SIZE),
    files,
  };
}
