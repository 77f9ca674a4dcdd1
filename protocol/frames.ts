/**
 * WebSocket frames. Each WebSocket message is one JSON object with a `type`. Client
 * frames are decoded once, here, into a discriminated union; the relay dispatches on
 * the union and never touches the raw JSON again. docs/PROTOCOL.md documents each frame.
 */
import { encodeBase64url } from './base64url.js';
import { type JsonObject, array, asObject, bool, bytes, int, optStr, parseJsonObject, str } from './decode.js';
import { BINARY_FRAME, type DeliverFrame, decodeDeliver } from './envelopes.js';
import { type ErrorCode, ProtocolError, parseErrorBody } from './errors.js';
import {
  CHALLENGE_BYTES,
  DEVICE_ID_PATTERN,
  MAX_AUTH_FEATURES,
  MAX_DEVICE_ID_LENGTH,
  MAX_FEATURE_NAME_LENGTH,
  MAX_FRAME_BYTES,
  MAX_ORIGIN_LENGTH,
  MAX_TARGETS_PER_SEND,
  MAX_TOKEN_BYTES,
  MAX_USER_ID_LENGTH,
  USER_ID_PATTERN,
} from './limits.js';
import { STORED_BATCH_FRAME, type StoredBatchFrame, decodeStoredBatch } from './stored-batch.js';
import {
  TOPIC_CLIENT_DECODERS,
  TOPIC_SERVER_DECODERS,
  type TopicClientFrame,
  type TopicServerFrame,
  encodeTopicClientFrame,
  encodeTopicServerFrame,
} from './topic-frames.js';

/** Client → relay. */
export type ClientFrame =
  /** `origin`: the relay origin the device signed (protocol/origin.ts). `features`: what
   * the client understands beyond revision 2 (e.g. FEATURE_STORED_BATCH); absent: none. */
  | {
      readonly type: 'auth';
      readonly token: string;
      readonly deviceId: string;
      readonly origin: string;
      readonly signature: Uint8Array;
      readonly features?: readonly string[] | undefined;
    }
  /** A fresh token for the same user, before the connection's current one expires. */
  | { readonly type: 'token'; readonly token: string }
  | { readonly type: 'ping'; readonly id: number | undefined }
  /** Cumulative: everything up to and including `seq` is processed and may be removed. */
  | { readonly type: 'ack'; readonly seq: number }
  | TopicClientFrame;

export interface StoredRecipient {
  readonly deviceId: string;
  readonly seq: number;
}

/** Relay → client. */
export type ServerFrame =
  | { readonly type: 'challenge'; readonly nonce: Uint8Array }
  /** `expiresAt`: when the token expires (ms since the epoch); send a `token` frame before.
   * `features`: those of the client's `auth` frame the relay will use (absent if none). */
  | { readonly type: 'auth_ok'; readonly userId: string; readonly deviceId: string; readonly expiresAt: number; readonly features?: readonly string[] | undefined }
  | { readonly type: 'token_ok'; readonly expiresAt: number }
  | { readonly type: 'pong'; readonly id: number | undefined }
  /** Answer to a SEND, sent only after the envelopes are committed. */
  | {
      readonly type: 'stored';
      readonly id: number;
      readonly envelopeId: string;
      readonly duplicate: boolean;
      readonly storedAt: number;
      readonly expiresAt: number;
      readonly recipients: readonly StoredRecipient[];
    }
  /** The backlog that existed at connect time has been delivered (through `through`). */
  | { readonly type: 'queue_empty'; readonly through: number }
  /** Sequences from..to expired before delivery; they will never arrive. */
  | { readonly type: 'expired'; readonly from: number; readonly to: number }
  | {
      readonly type: 'error';
      readonly code: ErrorCode;
      readonly message: string;
      readonly id?: number | undefined;
      readonly details?: Readonly<Record<string, unknown>> | undefined;
    }
  | TopicServerFrame;

export type ClientFrameType = ClientFrame['type'];
export type ServerFrameType = ServerFrame['type'];

const MAX_REQUEST_ID = 0xffff_ffff;

/** The `features` list of an auth or auth_ok frame: bounded names; absent means none. */
function features(o: JsonObject): string[] {
  if (o.features === undefined) return [];
  return array(o, 'features', MAX_AUTH_FEATURES, () => new ProtocolError('BAD_REQUEST', `features: at most ${MAX_AUTH_FEATURES}`)).map((v, i) => {
    if (typeof v !== 'string' || v.length === 0 || v.length > MAX_FEATURE_NAME_LENGTH) {
      throw new ProtocolError('BAD_REQUEST', `features[${i}]: a string of 1..${MAX_FEATURE_NAME_LENGTH} characters`);
    }
    return v;
  });
}

function optId(o: JsonObject): number | undefined {
  return o.id === undefined ? undefined : int(o, 'id', 0, MAX_REQUEST_ID);
}

const DECODERS: { readonly [T in ClientFrameType]: (o: JsonObject) => Extract<ClientFrame, { type: T }> } = {
  auth: (o) => ({
    type: 'auth',
    token: str(o, 'token', { max: MAX_TOKEN_BYTES }),
    deviceId: str(o, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    origin: str(o, 'origin', { max: MAX_ORIGIN_LENGTH }),
    signature: bytes(o, 'signature', 64),
    ...(o.features === undefined ? {} : { features: features(o) }),
  }),
  token: (o) => ({ type: 'token', token: str(o, 'token', { max: MAX_TOKEN_BYTES }) }),
  ping: (o) => ({ type: 'ping', id: optId(o) }),
  ack: (o) => ({ type: 'ack', seq: int(o, 'seq', 1, Number.MAX_SAFE_INTEGER) }),
  ...TOPIC_CLIENT_DECODERS,
};

function isClientFrameType(t: string): t is ClientFrameType {
  return Object.prototype.hasOwnProperty.call(DECODERS, t);
}

/** The request id of a frame, when one can be read, so that an error can echo it. */
export function peekRequestId(o: JsonObject): number | undefined {
  const v = o.id;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_REQUEST_ID ? v : undefined;
}

/**
 * Decodes one client message. Throws ProtocolError: FRAME_TOO_LARGE (checked before
 * parsing), BAD_REQUEST (not JSON / bad fields) or UNKNOWN_FRAME.
 */
export function decodeClientFrame(data: Uint8Array | string): ClientFrame {
  const size = typeof data === 'string' ? data.length : data.byteLength;
  if (size > MAX_FRAME_BYTES) throw new ProtocolError('FRAME_TOO_LARGE', `frame over ${MAX_FRAME_BYTES} bytes`);
  const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: false }).decode(data);
  const o = parseJsonObject(text, 'frame');
  const type = optStr(o, 'type', { max: 32 });
  if (type === undefined) throw new ProtocolError('BAD_REQUEST', 'type: missing');
  if (!isClientFrameType(type)) throw new ProtocolError('UNKNOWN_FRAME', `unknown frame type ${JSON.stringify(type)}`);
  try {
    return DECODERS[type](o);
  } catch (err) {
    // Keep the request id on the error so the reply can be matched to its request.
    if (err instanceof ProtocolError) throw new ProtocolError(err.code, err.message, { id: peekRequestId(o) });
    throw err;
  }
}

const MAX_SEQ = Number.MAX_SAFE_INTEGER;
const MAX_TIME_MS = Number.MAX_SAFE_INTEGER;

function storedRecipient(v: unknown, i: number): StoredRecipient {
  const o = asObject(v, `recipients[${i}]`);
  return {
    deviceId: str(o, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    seq: int(o, 'seq', 1, MAX_SEQ),
  };
}

const SERVER_DECODERS: { readonly [T in ServerFrameType]: (o: JsonObject) => Extract<ServerFrame, { type: T }> } = {
  challenge: (o) => ({ type: 'challenge', nonce: bytes(o, 'nonce', CHALLENGE_BYTES) }),
  auth_ok: (o) => ({
    type: 'auth_ok',
    userId: str(o, 'userId', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    deviceId: str(o, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    expiresAt: int(o, 'expiresAt', 0, MAX_TIME_MS),
    ...(o.features === undefined ? {} : { features: features(o) }),
  }),
  token_ok: (o) => ({ type: 'token_ok', expiresAt: int(o, 'expiresAt', 0, MAX_TIME_MS) }),
  pong: (o) => ({ type: 'pong', id: optId(o) }),
  stored: (o) => {
    const recipients = array(o, 'recipients', MAX_TARGETS_PER_SEND, () => new ProtocolError('BAD_REQUEST', 'recipients: too many')).map(storedRecipient);
    if (recipients.length === 0) throw new ProtocolError('BAD_REQUEST', 'recipients: empty');
    return {
      type: 'stored',
      id: int(o, 'id', 0, MAX_REQUEST_ID),
      envelopeId: str(o, 'envelopeId', { max: 22, pattern: /^[A-Za-z0-9_-]{22}$/ }),
      duplicate: bool(o, 'duplicate'),
      storedAt: int(o, 'storedAt', 0, MAX_TIME_MS),
      expiresAt: int(o, 'expiresAt', 0, MAX_TIME_MS),
      recipients,
    };
  },
  queue_empty: (o) => ({ type: 'queue_empty', through: int(o, 'through', 0, MAX_SEQ) }),
  expired: (o) => {
    const from = int(o, 'from', 1, MAX_SEQ);
    const to = int(o, 'to', from, MAX_SEQ);
    return { type: 'expired', from, to };
  },
  error: (o) => {
    const e = parseErrorBody(o);
    if (e === undefined) throw new ProtocolError('BAD_REQUEST', 'error: not a well-formed error with a known code');
    return {
      type: 'error',
      code: e.code,
      message: e.message,
      ...(e.id !== undefined ? { id: e.id } : {}),
      ...(e.details !== undefined ? { details: e.details } : {}),
    };
  },
  ...TOPIC_SERVER_DECODERS,
};

function isServerFrameType(t: string): t is ServerFrameType {
  return Object.prototype.hasOwnProperty.call(SERVER_DECODERS, t);
}

/**
 * Decodes one message from the relay: a JSON control frame (text), or a binary DELIVER or
 * STORED_BATCH. Throws ProtocolError for anything malformed, oversized or unknown: a
 * client decodes what the relay sends once, here, and trusts only the typed result.
 */
export function decodeServerFrame(data: string | Uint8Array, binary = typeof data !== 'string'): ServerFrame | DeliverFrame | StoredBatchFrame {
  const size = typeof data === 'string' ? data.length : data.byteLength;
  if (size > MAX_SERVER_FRAME_BYTES) throw new ProtocolError('FRAME_TOO_LARGE', `frame over ${MAX_SERVER_FRAME_BYTES} bytes`);
  if (binary) {
    if (typeof data === 'string') throw new ProtocolError('BAD_REQUEST', 'a binary frame must be bytes');
    if (data[0] === STORED_BATCH_FRAME) return decodeStoredBatch(data);
    if (data[0] === BINARY_FRAME.DELIVER) return decodeDeliver(data);
    throw new ProtocolError('UNKNOWN_FRAME', 'unknown binary frame type');
  }
  const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: false }).decode(data);
  const o = parseJsonObject(text, 'frame');
  const type = optStr(o, 'type', { max: 32 });
  if (type === undefined) throw new ProtocolError('BAD_REQUEST', 'type: missing');
  if (!isServerFrameType(type)) throw new ProtocolError('UNKNOWN_FRAME', `unknown frame type ${JSON.stringify(type)}`);
  return SERVER_DECODERS[type](o);
}

/** The largest message a relay sends: a DELIVER of the largest envelope, with room. */
const MAX_SERVER_FRAME_BYTES = MAX_FRAME_BYTES;

export function encodeServerFrame(f: ServerFrame): string {
  switch (f.type) {
    case 'challenge':
      return JSON.stringify({ type: 'challenge', nonce: encodeBase64url(f.nonce) });
    case 'stored':
      return encodeStored(f);
    case 'auth_ok':
    case 'token_ok':
    case 'pong':
    case 'queue_empty':
    case 'expired':
    case 'error':
      return JSON.stringify(f);
    default:
      return encodeTopicServerFrame(f);
  }
}

/** Strings that can go between JSON quotes as they are. */
const PLAIN_JSON_STRING = /^[A-Za-z0-9_-]*$/;

/**
 * STORED answers every SEND, so it is written by hand: the same text as JSON.stringify
 * (same keys, same order), several times faster. Anything not plainly safe to write
 * between quotes goes through JSON.stringify.
 */
function encodeStored(f: Extract<ServerFrame, { type: 'stored' }>): string {
  if (
    !Number.isSafeInteger(f.id) ||
    !Number.isSafeInteger(f.storedAt) ||
    !Number.isSafeInteger(f.expiresAt) ||
    !PLAIN_JSON_STRING.test(f.envelopeId) ||
    !f.recipients.every((r) => Number.isSafeInteger(r.seq) && PLAIN_JSON_STRING.test(r.deviceId))
  ) {
    return JSON.stringify(f);
  }
  let recipients = '';
  for (const r of f.recipients) recipients += `${recipients ? ',' : ''}{"deviceId":"${r.deviceId}","seq":${r.seq}}`;
  return `{"type":"stored","id":${f.id},"envelopeId":"${f.envelopeId}","duplicate":${f.duplicate},"storedAt":${f.storedAt},"expiresAt":${f.expiresAt},"recipients":[${recipients}]}`;
}

export function encodeClientFrame(f: ClientFrame): string {
  switch (f.type) {
    case 'auth':
      return JSON.stringify({
        type: 'auth',
        token: f.token,
        deviceId: f.deviceId,
        origin: f.origin,
        signature: encodeBase64url(f.signature),
        ...(f.features !== undefined && f.features.length > 0 ? { features: f.features } : {}),
      });
    case 'token':
    case 'ping':
    case 'ack':
      return JSON.stringify(f);
    default:
      return encodeTopicClientFrame(f);
  }
}

