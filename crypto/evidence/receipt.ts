/**
 * Delivery receipts: what a recipient device signs about the envelopes it processed.
 *
 * A receipt is a compact JWS (jws.ts) of type `hermetic-receipt+jws` over a JSON payload:
 *
 *   { "v": 1, "recipient": { "user", "device" }, "issuedAt": ms, "entries": [entry, ...] }
 *
 * with one entry per envelope (one signature serves a batch):
 *
 *   envelopeId    base64url, 16 bytes
 *   sha256        base64url SHA-256 of the exact ciphertext bytes received
 *   seq           the envelope's sequence in the recipient device's mailbox
 *   sender        { "user", "device" } as the relay delivered it
 *   messageNumber the sender's per-conversation message number (when it decrypted)
 *   eventSha256   SHA-256 of the signed event's JWS, when the message carried one
 *   sentAt        the sender's clock (when it decrypted); storedAt the relay's; receivedAt ours
 *   disposition   "processed", or "rejected" with a `reason` code
 *   flags         the anomaly flags raised for it (RECEIPT_FLAGS)
 *
 * Parsing is strict (unknown members, wrong types, out-of-range numbers, too many
 * entries are INVALID_RECEIPT), so that two parties can never read one receipt two ways.
 */
import type { IdentityKey, IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import { decodeBase64url } from '../../protocol/base64url.js';
import { DEVICE_ID_PATTERN, ENVELOPE_ID_BYTES, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { EvidenceError } from './errors.js';
import { type ParsedJws, jsonPayload, parseJws, signJws, verifyParsedJws } from './jws.js';

export const RECEIPT_TYP = 'hermetic-receipt+jws';
export const RECEIPT_VERSION = 1;
/** Entries in one receipt. */
export const MAX_RECEIPT_ENTRIES = 128;
/** Longest receipt JWS accepted: what one entry of the transparency log holds (a tlog-tiles
 * entry bundle prefixes each entry with a 16-bit length). A signer splits a batch that
 * would be longer. */
export const MAX_RECEIPT_JWS_BYTES = 65_535;
/** Longest rejection reason. */
export const MAX_REASON_LENGTH = 64;

/** Anomalies a recipient reports about an envelope (docs/ERRORS.md, "Message flags"). */
export const RECEIPT_FLAGS = [
  'DUPLICATE',
  'REPLAY',
  'GAP',
  'REORDERED',
  'LATE',
  'CLOCK_SKEW',
  'DECRYPT_FAILED',
  'BAD_SIGNATURE',
  'IDENTITY_CHANGED',
  'EXPIRED',
  'EVENT_ID_REUSED',
  'EVENT_CHAIN_BROKEN',
] as const;
export type ReceiptFlag = (typeof RECEIPT_FLAGS)[number];

export interface Party {
  readonly user: string;
  readonly device: string;
}

export interface ReceiptEntry {
  readonly envelopeId: string;
  readonly sha256: string;
  readonly seq: number;
  readonly sender: Party;
  readonly messageNumber?: number;
  readonly eventSha256?: string;
  readonly sentAt?: number;
  readonly storedAt: number;
  readonly receivedAt: number;
  readonly disposition: 'processed' | 'rejected';
  readonly reason?: string;
  readonly flags: readonly ReceiptFlag[];
}

export interface ReceiptPayload {
  readonly v: 1;
  readonly recipient: Party;
  readonly issuedAt: number;
  readonly entries: readonly ReceiptEntry[];
}

const encoder = new TextEncoder();
const ENTRY_MEMBERS = new Set(['envelopeId', 'sha256', 'seq', 'sender', 'messageNumber', 'eventSha256', 'sentAt', 'storedAt', 'receivedAt', 'disposition', 'reason', 'flags']);
const FLAG_SET = new Set<string>(RECEIPT_FLAGS);

function fail(detail: string): never {
  throw new EvidenceError('INVALID_RECEIPT', `receipt: ${detail}`);
}

function onlyMembers(o: Record<string, unknown>, allowed: Set<string>, what: string): void {
  for (const k of Object.keys(o)) if (!allowed.has(k)) fail(`${what} has an unknown member "${k.slice(0, 32)}"`);
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${what} is not an object`);
  return v as Record<string, unknown>;
}

/** A non-negative safe integer (times in ms, sequences, counters). */
function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} is not a non-negative integer`);
  return v;
}

function bytes64(v: unknown, length: number, what: string): string {
  if (typeof v !== 'string') fail(`${what} is not a string`);
  const b = decodeBase64url(v);
  if (b === undefined || b.length !== length) fail(`${what} is not ${length} bytes of base64url`);
  return v;
}

const PARTY_MEMBERS = new Set(['user', 'device']);
function party(v: unknown, what: string): Party {
  const o = object(v, what);
  onlyMembers(o, PARTY_MEMBERS, what);
  const { user, device } = o;
  if (typeof user !== 'string' || user.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(user)) fail(`${what}.user is not a user id`);
  if (typeof device !== 'string' || !DEVICE_ID_PATTERN.test(device)) fail(`${what}.device is not a device id`);
  return { user, device };
}

function entry(v: unknown, i: number): ReceiptEntry {
  const what = `entries[${i}]`;
  const o = object(v, what);
  onlyMembers(o, ENTRY_MEMBERS, what);
  const disposition = o.disposition;
  if (disposition !== 'processed' && disposition !== 'rejected') fail(`${what}.disposition is neither "processed" nor "rejected"`);
  if ((disposition === 'rejected') !== (o.reason !== undefined)) fail(`${what}: a reason is given exactly when it was rejected`);
  if (o.reason !== undefined && (typeof o.reason !== 'string' || !/^[A-Z_]{1,64}$/.test(o.reason))) fail(`${what}.reason is not a code`);
  if (!Array.isArray(o.flags) || o.flags.length > RECEIPT_FLAGS.length) fail(`${what}.flags is not a list of flags`);
  const flags = o.flags as unknown[];
  for (const f of flags) if (typeof f !== 'string' || !FLAG_SET.has(f)) fail(`${what}.flags has an unknown flag`);
  if (new Set(flags).size !== flags.length) fail(`${what}.flags repeats a flag`);
  return {
    envelopeId: bytes64(o.envelopeId, ENVELOPE_ID_BYTES, `${what}.envelopeId`),
    sha256: bytes64(o.sha256, 32, `${what}.sha256`),
    seq: count(o.seq, `${what}.seq`),
    sender: party(o.sender, `${what}.sender`),
    ...(o.messageNumber === undefined ? {} : { messageNumber: count(o.messageNumber, `${what}.messageNumber`) }),
    ...(o.eventSha256 === undefined ? {} : { eventSha256: bytes64(o.eventSha256, 32, `${what}.eventSha256`) }),
    ...(o.sentAt === undefined ? {} : { sentAt: count(o.sentAt, `${what}.sentAt`) }),
    storedAt: count(o.storedAt, `${what}.storedAt`),
    receivedAt: count(o.receivedAt, `${what}.receivedAt`),
    disposition,
    ...(o.reason === undefined ? {} : { reason: o.reason as string }),
    flags: flags as ReceiptFlag[],
  };
}

const PAYLOAD_MEMBERS = new Set(['v', 'recipient', 'issuedAt', 'entries']);

/** Checks a receipt payload object against the schema. Throws INVALID_RECEIPT. */
export function validateReceiptPayload(v: unknown): ReceiptPayload {
  const o = object(v, 'the payload');
  onlyMembers(o, PAYLOAD_MEMBERS, 'the payload');
  if (o.v !== RECEIPT_VERSION) fail(`version ${typeof o.v === 'number' ? o.v : typeof o.v} is not supported`);
  if (!Array.isArray(o.entries) || o.entries.length === 0 || o.entries.length > MAX_RECEIPT_ENTRIES) fail(`entries must be a list of 1..${MAX_RECEIPT_ENTRIES}`);
  const entries = o.entries.map(entry);
  if (new Set(entries.map((e) => `${e.sender.user} ${e.sender.device} ${e.envelopeId}`)).size !== entries.length) fail('an envelope is listed twice');
  return { v: RECEIPT_VERSION, recipient: party(o.recipient, 'recipient'), issuedAt: count(o.issuedAt, 'issuedAt'), entries };
}

/** Signs a receipt (after checking it against the schema, so we never sign one that others refuse). */
export function signReceipt(signer: IdentityKeyPair, payload: ReceiptPayload, backend: CryptoBackend = defaultBackend): string {
  const checked = validateReceiptPayload(JSON.parse(JSON.stringify(validateReceiptPayload(payload))));
  const jws = signJws(signer, RECEIPT_TYP, encoder.encode(JSON.stringify(checked)), backend);
  if (jws.length > MAX_RECEIPT_JWS_BYTES) throw new EvidenceError('INVALID_RECEIPT', `receipt: longer than ${MAX_RECEIPT_JWS_BYTES} bytes`);
  return jws;
}

export interface ParsedReceipt {
  readonly jws: string;
  readonly parsed: ParsedJws;
  readonly payload: ReceiptPayload;
}

/** Parses a receipt JWS and its payload without checking the signature (to find the signer). */
export function parseReceipt(jws: string): ParsedReceipt {
  const parsed = parseJws(jws, RECEIPT_TYP, MAX_RECEIPT_JWS_BYTES);
  return { jws, parsed, payload: validateReceiptPayload(jsonPayload(parsed, 'INVALID_RECEIPT')) };
}

/** Parses and verifies a receipt with the recipient device's identity key. */
export function verifyReceipt(jws: string, key: IdentityKey, backend: CryptoBackend = defaultBackend): ParsedReceipt {
  const r = parseReceipt(jws);
  verifyParsedJws(r.parsed, key, backend);
  return r;
}
