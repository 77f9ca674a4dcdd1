/**
 * Signed events: CloudEvents-shaped JSON (the structured JSON format of CloudEvents 1.0)
 * signed by the sending device's identity key as a compact JWS of type
 * `hermetic-event+jws`, carried inside the end-to-end encrypted payload. Unlike a ratchet
 * message, which is deniable, a signed event can be shown to a third party later: it is
 * evidence of what the device sent (non-repudiation).
 *
 *   specversion "1.0"; id, source, type (the app's); time (RFC 3339, the signer's clock);
 *   subject (optional); datacontenttype "application/json"; data (any JSON);
 *   sequence     per (signing device, source): 1, 2, 3, ...
 *   previoushash base64url SHA-256 of the previous event's JWS from that device and
 *                source (absent on sequence 1): the events form a hash chain
 *   signeruser, signerdevice  who signed it (the JWS kid is that device's key thumbprint)
 *
 * (source, id) is the idempotency key: a receiver processes an event once, and flags
 * the same id arriving with different content.
 */
import type { IdentityKey, IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { DEVICE_ID_PATTERN, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { EvidenceError } from './errors.js';
import { MAX_JSON_DEPTH } from './json.js';
import { type ParsedJws, jsonPayload, parseJws, signJws, verifyParsedJws } from './jws.js';

export const EVENT_TYP = 'hermetic-event+jws';
/** Longest signed event accepted. */
export const MAX_EVENT_JWS_BYTES = 128 * 1024;
/** Longest id, type and subject; longest source. */
export const MAX_EVENT_ATTRIBUTE_LENGTH = 256;

/** What the application gives to `sendEvent`. */
export interface EventInput {
  readonly id: string;
  readonly type: string;
  readonly source?: string;
  readonly subject?: string;
  /** Defaults to now. */
  readonly time?: string;
  readonly data: unknown;
}

export interface SignedEvent {
  readonly specversion: '1.0';
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly time: string;
  readonly subject?: string;
  readonly datacontenttype: 'application/json';
  readonly data: unknown;
  readonly sequence: number;
  readonly previoushash?: string;
  readonly signeruser: string;
  readonly signerdevice: string;
}

const encoder = new TextEncoder();
const MEMBERS = new Set(['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype', 'data', 'sequence', 'previoushash', 'signeruser', 'signerdevice']);
/** RFC 3339 date-time (the profile CloudEvents uses). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

function fail(detail: string): never {
  throw new EvidenceError('INVALID_EVENT', `event: ${detail}`);
}

/** Whether arrays/objects in `v` nest deeper than `max` (an iterative walk; cycles count as too deep). */
function depthExceeds(v: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[v, 0]];
  let visited = 0;
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number];
    if (x === null || typeof x !== 'object') continue;
    if (d >= max || ++visited > MAX_EVENT_NODES) return true;
    for (const child of Array.isArray(x) ? x : Object.values(x as Record<string, unknown>)) stack.push([child, d + 1]);
  }
  return false;
}

/** Arrays and objects in one event's data (an event is at most MAX_EVENT_JWS_BYTES anyway). */
const MAX_EVENT_NODES = 65_536;

function attribute(v: unknown, what: string, optional = false): string | undefined {
  if (v === undefined && optional) return undefined;
  // Printable, no control characters: attributes show up in logs and reports.
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_EVENT_ATTRIBUTE_LENGTH || /[\u0000-\u001f\u007f]/.test(v)) {
    fail(`${what} must be a string of 1..${MAX_EVENT_ATTRIBUTE_LENGTH} printable characters`);
  }
  return v;
}

/** Checks an event object against the schema. Throws INVALID_EVENT. */
export function validateEvent(v: unknown): SignedEvent {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('not a JSON object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!MEMBERS.has(k)) fail(`unknown attribute "${k.slice(0, 32)}"`);
  if (o.specversion !== '1.0') fail('specversion must be "1.0"');
  if (o.datacontenttype !== 'application/json') fail('datacontenttype must be "application/json"');
  if (!('data' in o)) fail('data is missing');
  // Also for an event built in code (not parsed): data is walked later (hashing, canonical form).
  if (depthExceeds(o.data, MAX_JSON_DEPTH)) fail(`data is nested deeper than ${MAX_JSON_DEPTH}`);
  const time = attribute(o.time, 'time')!;
  if (!RFC3339.test(time) || Number.isNaN(Date.parse(time))) fail('time is not an RFC 3339 date-time');
  const sequence = o.sequence;
  if (typeof sequence !== 'number' || !Number.isSafeInteger(sequence) || sequence < 1) fail('sequence is not a positive integer');
  if ((sequence === 1) !== (o.previoushash === undefined)) fail('previoushash is given exactly when sequence is above 1');
  if (o.previoushash !== undefined) {
    const h = typeof o.previoushash === 'string' ? decodeBase64url(o.previoushash) : undefined;
    if (h === undefined || h.length !== 32) fail('previoushash is not 32 bytes of base64url');
  }
  const user = o.signeruser;
  if (typeof user !== 'string' || user.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(user)) fail('signeruser is not a user id');
  if (typeof o.signerdevice !== 'string' || !DEVICE_ID_PATTERN.test(o.signerdevice)) fail('signerdevice is not a device id');
  const subject = attribute(o.subject, 'subject', true);
  return {
    specversion: '1.0',
    id: attribute(o.id, 'id')!,
    source: attribute(o.source, 'source')!,
    type: attribute(o.type, 'type')!,
    time,
    ...(subject === undefined ? {} : { subject }),
    datacontenttype: 'application/json',
    data: o.data,
    sequence,
    ...(o.previoushash === undefined ? {} : { previoushash: o.previoushash as string }),
    signeruser: user,
    signerdevice: o.signerdevice,
  };
}

/** SHA-256 of an event's JWS (what the next event's `previoushash` and a receipt's `eventSha256` hold). */
export function eventHash(jws: string, backend: CryptoBackend = defaultBackend): string {
  return encodeBase64url(backend.sha256(encoder.encode(jws)));
}

/** Signs an event (checked against the schema first). */
export function signEvent(signer: IdentityKeyPair, event: SignedEvent, backend: CryptoBackend = defaultBackend): string {
  // Checked as given (bounded depth) and again as JSON will carry it (undefined members gone).
  const checked = validateEvent(JSON.parse(JSON.stringify(validateEvent(event))));
  const jws = signJws(signer, EVENT_TYP, encoder.encode(JSON.stringify(checked)), backend);
  if (jws.length > MAX_EVENT_JWS_BYTES) fail(`longer than ${MAX_EVENT_JWS_BYTES} bytes signed`);
  return jws;
}

export interface ParsedEvent {
  readonly jws: string;
  readonly parsed: ParsedJws;
  readonly event: SignedEvent;
}

/** Parses a signed event without checking its signature (to find the signer). */
export function parseEvent(jws: string): ParsedEvent {
  const parsed = parseJws(jws, EVENT_TYP, MAX_EVENT_JWS_BYTES);
  return { jws, parsed, event: validateEvent(jsonPayload(parsed, 'INVALID_EVENT')) };
}

/** Parses and verifies a signed event with the signing device's identity key. */
export function verifyEvent(jws: string, key: IdentityKey, backend: CryptoBackend = defaultBackend): ParsedEvent {
  const e = parseEvent(jws);
  verifyParsedJws(e.parsed, key, backend);
  return e;
}
