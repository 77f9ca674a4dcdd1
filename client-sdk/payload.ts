/**
 * What a client puts inside an encrypted envelope (after decryption: the relay never
 * sees this). All integers big-endian.
 *
 *   u8   version (2; version 1 is still read: a message without its number)
 *   u8   type: 1 message, 2 sender-key distribution, 3 session reset, 4 receipt,
 *        5 topic key
 *   u64  sentAt: the sender's clock, ms since the epoch
 *   16   messageId: chosen by the sender; the same for every copy of one message
 *   message:       u32 the sender device's message number in this conversation (the
 *                  recipient user, or the group), 1, 2, 3, ... (version 2 only) |
 *                  u8 recipient length (0: a group message) | recipient user id |
 *                  u8 group id length (0: not a group message) | group id |
 *                  u8 body kind (0 bytes, 1 UTF-8 text, 2 JSON, 3 signed event JWS) | body
 *                  (the recipient is the user the message was sent to; the copies for
 *                  the sender's own devices carry it too, so they know the conversation)
 *   distribution:  u8 group id length (>= 1) | group id | sender-key distribution message
 *   session reset: 16 envelope id that could not be decrypted (zeros: none)
 *   receipt:       a signed delivery receipt, the compact JWS in ASCII (never answered
 *                  with a receipt of its own)
 *   topic key:     a topic key distribution (crypto/topic/topic-key.ts), which names its
 *                  topic (version 2 only)
 *
 * The encoded payload is padded (crypto/padding.ts) before it is encrypted.
 */
import { CryptoError } from '../crypto/errors.js';
import { ByteReader, ByteWriter } from '../crypto/ratchet/byte-codec.js';
import { ENVELOPE_ID_BYTES, MAX_USER_ID_LENGTH } from '../protocol/limits.js';
import { MAX_GROUP_ID_LENGTH } from './limits.js';
import { parseEvent } from '../crypto/evidence/event.js';

export const PAYLOAD_VERSION = 2;
export const MESSAGE_ID_BYTES = 16;

export type BodyKind = 'bytes' | 'text' | 'json' | 'event';
const BODY_KINDS: readonly BodyKind[] = ['bytes', 'text', 'json', 'event'];

export type Payload =
  | { readonly type: 'message'; readonly sentAt: number; readonly messageId: Uint8Array; readonly number: number | undefined; readonly to: string | undefined; readonly groupId: string | undefined; readonly kind: BodyKind; readonly body: Uint8Array }
  | { readonly type: 'distribution'; readonly sentAt: number; readonly messageId: Uint8Array; readonly groupId: string; readonly distribution: Uint8Array }
  | { readonly type: 'reset'; readonly sentAt: number; readonly messageId: Uint8Array; readonly failedEnvelopeId: Uint8Array }
  | { readonly type: 'receipt'; readonly sentAt: number; readonly messageId: Uint8Array; readonly jws: string }
  | { readonly type: 'topic-key'; readonly sentAt: number; readonly messageId: Uint8Array; readonly distribution: Uint8Array };

const TYPE_CODES = { message: 1, distribution: 2, reset: 3, receipt: 4, 'topic-key': 5 } as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function groupBytes(groupId: string | undefined): Uint8Array {
  const b = encoder.encode(groupId ?? '');
  if (b.length > MAX_GROUP_ID_LENGTH) throw new CryptoError('INVALID_ARGUMENT', `a group id is at most ${MAX_GROUP_ID_LENGTH} bytes`);
  return b;
}

export function encodePayload(p: Payload): Uint8Array {
  const w = new ByteWriter(64 + ('body' in p ? p.body.length : 'distribution' in p ? p.distribution.length : 'jws' in p ? p.jws.length : 0));
  w.u8(PAYLOAD_VERSION).u8(TYPE_CODES[p.type]);
  w.u32(Math.floor(p.sentAt / 0x1_0000_0000)).u32(p.sentAt >>> 0);
  w.bytes(p.messageId);
  switch (p.type) {
    case 'message': {
      const to = encoder.encode(p.to ?? '');
      if (to.length > MAX_USER_ID_LENGTH) throw new CryptoError('INVALID_ARGUMENT', `a user id is at most ${MAX_USER_ID_LENGTH} bytes`);
      if ((to.length === 0) === (p.groupId === undefined)) throw new CryptoError('INVALID_ARGUMENT', 'a message names its recipient, or its group, not both');
      if (p.number === undefined || !Number.isInteger(p.number) || p.number < 1 || p.number > 0xffff_ffff) throw new CryptoError('INVALID_ARGUMENT', 'a message number is 1..2^32-1');
      w.u32(p.number).u8(to.length).bytes(to);
      const g = groupBytes(p.groupId);
      w.u8(g.length).bytes(g).u8(BODY_KINDS.indexOf(p.kind)).bytes(p.body);
      break;
    }
    case 'distribution': {
      const g = groupBytes(p.groupId);
      w.u8(g.length).bytes(g).bytes(p.distribution);
      break;
    }
    case 'reset':
      w.bytes(p.failedEnvelopeId);
      break;
    case 'receipt':
      w.bytes(encoder.encode(p.jws));
      break;
    case 'topic-key':
      w.bytes(p.distribution);
      break;
  }
  return w.finish();
}

/** Decodes a payload. Throws CryptoError INVALID_MESSAGE / UNSUPPORTED_VERSION. */
export function decodePayload(bytes: Uint8Array): Payload {
  if (bytes.length === 0) throw new CryptoError('INVALID_MESSAGE', 'payload: empty');
  const version = bytes[0];
  if (version !== PAYLOAD_VERSION && version !== 1) throw new CryptoError('UNSUPPORTED_VERSION', `payload version ${version} is not supported`);
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'payload');
  r.u8();
  const type = r.u8();
  const hi = r.u32();
  const lo = r.u32();
  if (hi > 0x1fffff) throw r.fail('sentAt out of range');
  const sentAt = hi * 0x1_0000_0000 + lo;
  const messageId = r.bytes(MESSAGE_ID_BYTES);
  const group = (): string => {
    const n = r.u8();
    if (n > MAX_GROUP_ID_LENGTH) throw r.fail('group id too long');
    try {
      return decoder.decode(r.bytes(n));
    } catch (err) {
      if (err instanceof CryptoError) throw err;
      throw r.fail('group id is not UTF-8');
    }
  };
  switch (type) {
    case TYPE_CODES.message: {
      const number = version === 1 ? undefined : r.u32();
      if (number === 0) throw r.fail('message number 0');
      const n = r.u8();
      if (n > MAX_USER_ID_LENGTH) throw r.fail('recipient too long');
      let to: string;
      try {
        to = decoder.decode(r.bytes(n));
      } catch (err) {
        if (err instanceof CryptoError) throw err;
        throw r.fail('recipient is not UTF-8');
      }
      const g = group();
      if ((to === '') === (g === '')) throw r.fail('a message names its recipient, or its group, not both');
      const kind = BODY_KINDS[r.u8()];
      if (kind === undefined) throw r.fail('unknown body kind');
      const body = r.bytes(r.remaining);
      return { type: 'message', sentAt, messageId, number, to: to === '' ? undefined : to, groupId: g === '' ? undefined : g, kind, body };
    }
    case TYPE_CODES.distribution: {
      const g = group();
      if (g === '') throw r.fail('a distribution names its group');
      return { type: 'distribution', sentAt, messageId, groupId: g, distribution: r.bytes(r.remaining) };
    }
    case TYPE_CODES.reset: {
      const failedEnvelopeId = r.bytes(ENVELOPE_ID_BYTES);
      r.end();
      return { type: 'reset', sentAt, messageId, failedEnvelopeId };
    }
    case TYPE_CODES.receipt: {
      if (version === 1) throw r.fail('a receipt needs payload version 2');
      const raw = r.bytes(r.remaining);
      // A compact JWS is base64url and dots: ASCII, never empty.
      if (raw.length === 0 || raw.some((b) => b < 0x21 || b > 0x7e)) throw r.fail('a receipt is a compact JWS in ASCII');
      return { type: 'receipt', sentAt, messageId, jws: decoder.decode(raw) };
    }
    case TYPE_CODES['topic-key']: {
      if (version === 1) throw r.fail('a topic key needs payload version 2');
      const distribution = r.bytes(r.remaining);
      if (distribution.length === 0) throw r.fail('an empty topic key');
      return { type: 'topic-key', sentAt, messageId, distribution };
    }
    default:
      throw r.fail(`unknown type ${type}`);
  }
}

/** A body as the application gave it, and back. */
export function encodeBody(body: unknown): { kind: BodyKind; bytes: Uint8Array } {
  if (body instanceof Uint8Array) return { kind: 'bytes', bytes: body };
  if (typeof body === 'string') return { kind: 'text', bytes: encoder.encode(body) };
  // JSON has no NaN, Infinity or undefined: JSON.stringify would quietly turn them into
  // null (or drop them), so the receiver would get another value than the one sent.
  const json = JSON.stringify(body, (_k, v: unknown) => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new CryptoError('INVALID_ARGUMENT', 'a JSON body holds no NaN or Infinity');
    return v;
  });
  if (json === undefined) throw new CryptoError('INVALID_ARGUMENT', 'a body is bytes, a string or a JSON value');
  return { kind: 'json', bytes: encoder.encode(json) };
}

export function decodeBody(kind: BodyKind, bytes: Uint8Array): unknown {
  if (kind === 'bytes') return bytes;
  // A signed event's body is its JWS; the verified event is what the application gets
  // (the inbox verified it before storing it).
  if (kind === 'event') return parseEvent(decoder.decode(bytes)).event;
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new CryptoError('INVALID_MESSAGE', 'a text body is not UTF-8');
  }
  if (kind === 'text') return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new CryptoError('INVALID_MESSAGE', 'a JSON body does not parse');
  }
}
