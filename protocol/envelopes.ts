/**
 * Binary frames for the hot path: SEND (client → relay) and DELIVER (relay → client).
 * Envelope bytes are opaque to the relay; binary framing avoids base64 and JSON work per
 * envelope. Layouts (big-endian) are documented in docs/PROTOCOL.md.
 */
import { BinaryReader, BinaryWriter } from './binary.js';
import { ProtocolError } from './errors.js';
import {
  DEVICE_ID_PATTERN,
  ENVELOPE_ID_BYTES,
  MAX_DEVICE_ID_LENGTH,
  MAX_ENVELOPE_BYTES,
  MAX_TARGETS_PER_SEND,
  MAX_TTL_SECONDS,
  MAX_USER_ID_LENGTH,
  MIN_TTL_SECONDS,
  USER_ID_PATTERN,
} from './limits.js';

export const BINARY_FRAME = {
  SEND: 0x01,
  DELIVER: 0x02,
  /** STORED answers of one commit, for a client that asked for them (stored-batch.ts). */
  STORED_BATCH: 0x03,
} as const;

export interface SendTarget {
  readonly deviceId: string;
  readonly payload: Uint8Array;
}

export interface SendFrame {
  readonly type: 'send';
  readonly id: number;
  readonly envelopeId: Uint8Array;
  readonly ttlSeconds: number;
  readonly recipientUserId: string;
  readonly targets: readonly SendTarget[];
}

export interface DeliverFrame {
  readonly type: 'deliver';
  readonly seq: number;
  readonly envelopeId: Uint8Array;
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly storedAtMs: number;
  readonly expiresAtMs: number;
  readonly payload: Uint8Array;
}

/** The request id of a SEND frame when at least its header is present (to answer it). */
export function peekSendId(buf: Uint8Array): number | undefined {
  if (buf.length < 5 || buf[0] !== BINARY_FRAME.SEND) return undefined;
  return (buf[1] as number) * 0x100_0000 + (((buf[2] as number) << 16) | ((buf[3] as number) << 8) | (buf[4] as number));
}

/** Where a SEND's content starts: everything after type, id, envelope id and TTL. */
const SEND_CONTENT_OFFSET = 1 + 4 + ENVELOPE_ID_BYTES + 4;

/**
 * The part of an encoded SEND that says what is sent: the recipient and each target's
 * device and bytes, length-prefixed as framed. Two SENDs with the same envelope id are
 * "the same SEND" when these bytes are equal. Call only on a frame decodeSend accepted.
 */
export function sendContent(frame: Uint8Array): Uint8Array {
  return frame.subarray(SEND_CONTENT_OFFSET);
}

/**
 * Decodes a SEND, copying the envelope id and payloads out of the socket's buffer. With
 * `views`, the caller owns `buf` (a copy it made of the whole frame, which it keeps as it
 * is) and the envelope id and payloads are views into it: one copy per frame instead of
 * one per field.
 */
export function decodeSend(buf: Uint8Array, opts: { readonly views?: boolean } = {}): SendFrame {
  const r = new BinaryReader(buf);
  const views = opts.views === true;
  if (r.u8('frame type') !== BINARY_FRAME.SEND) throw new ProtocolError('UNKNOWN_FRAME', 'not a SEND frame');
  const id = r.u32('id');
  try {
    const envelopeId = views ? r.bytes(ENVELOPE_ID_BYTES, 'envelopeId') : r.copy(ENVELOPE_ID_BYTES, 'envelopeId');
    const ttlSeconds = r.u32('ttl');
    if (ttlSeconds < MIN_TTL_SECONDS || ttlSeconds > MAX_TTL_SECONDS) {
      throw new ProtocolError('BAD_REQUEST', `ttl must be ${MIN_TTL_SECONDS}..${MAX_TTL_SECONDS} seconds`);
    }
    const recipientUserId = r.str8('recipient', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const count = r.u8('target count');
    if (count === 0) throw new ProtocolError('BAD_REQUEST', 'a SEND needs at least one target');
    if (count > MAX_TARGETS_PER_SEND) {
      throw new ProtocolError('TOO_MANY_TARGETS', `at most ${MAX_TARGETS_PER_SEND} targets per SEND`);
    }
    const targets: SendTarget[] = [];
    // Field names are constants (no string built per target of every SEND); the index is
    // added to the message of a refusal only.
    for (let i = 0; i < count; i++) {
      try {
        const deviceId = r.str8('deviceId', MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN);
        // At most 16 targets: a scan is cheaper than a set made per SEND.
        for (const t of targets) if (t.deviceId === deviceId) throw new ProtocolError('BAD_REQUEST', `target ${deviceId} repeated`);
        const len = r.u32('length');
        if (len === 0 || len > MAX_ENVELOPE_BYTES) {
          throw new ProtocolError('ENVELOPE_TOO_LARGE', `envelope payload must be 1..${MAX_ENVELOPE_BYTES} bytes`);
        }
        targets.push({ deviceId, payload: views ? r.bytes(len, 'payload') : r.copy(len, 'payload') });
      } catch (err) {
        if (err instanceof ProtocolError) throw new ProtocolError(err.code, `targets[${i}]: ${err.message}`);
        throw err;
      }
    }
    r.end('SEND');
    return { type: 'send', id, envelopeId, ttlSeconds, recipientUserId, targets };
  } catch (err) {
    if (err instanceof ProtocolError) throw new ProtocolError(err.code, err.message, { id });
    throw err;
  }
}

export function encodeSend(f: Omit<SendFrame, 'type'>): Uint8Array {
  const w = new BinaryWriter(64 + f.targets.reduce((n, t) => n + t.payload.length + 70, 0));
  w.u8(BINARY_FRAME.SEND).u32(f.id).bytes(f.envelopeId).u32(f.ttlSeconds).str8(f.recipientUserId).u8(f.targets.length);
  for (const t of f.targets) w.str8(t.deviceId).u32(t.payload.length).bytes(t.payload);
  return w.finish();
}

export function encodeDeliver(f: Omit<DeliverFrame, 'type'>, into?: BinaryWriter): Uint8Array {
  // With `into`, the frame is written into that (reused) writer and the result is a view
  // valid until its next use: for a transport that copies on send.
  const w = into ? into.reset() : new BinaryWriter(64 + f.senderUserId.length * 3 + f.senderDeviceId.length * 3 + f.payload.length);
  w.u8(BINARY_FRAME.DELIVER)
    .u64(f.seq)
    .bytes(f.envelopeId)
    .str8(f.senderUserId)
    .str8(f.senderDeviceId)
    .u64(f.storedAtMs)
    .u64(f.expiresAtMs)
    .u32(f.payload.length)
    .bytes(f.payload);
  return w.finish();
}

/**
 * The header of a DELIVER that does not decode (an oversized or truncated payload), so a
 * client can still acknowledge it and say which envelope was bad. Undefined when even
 * the header is unreadable.
 */
export function peekDeliverHeader(buf: Uint8Array): { seq: number; envelopeId: Uint8Array; senderUserId: string; senderDeviceId: string } | undefined {
  try {
    const r = new BinaryReader(buf);
    if (r.u8('frame type') !== BINARY_FRAME.DELIVER) return undefined;
    const seq = r.u64('seq');
    const envelopeId = r.bytes(ENVELOPE_ID_BYTES, 'envelopeId').slice();
    const senderUserId = r.str8('sender', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const senderDeviceId = r.str8('senderDevice', MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN);
    return seq >= 1 ? { seq, envelopeId, senderUserId, senderDeviceId } : undefined;
  } catch {
    return undefined;
  }
}

export function decodeDeliver(buf: Uint8Array): DeliverFrame {
  const r = new BinaryReader(buf);
  if (r.u8('frame type') !== BINARY_FRAME.DELIVER) throw new ProtocolError('UNKNOWN_FRAME', 'not a DELIVER frame');
  const seq = r.u64('seq');
  const envelopeId = r.copy(ENVELOPE_ID_BYTES, 'envelopeId');
  const senderUserId = r.str8('sender', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
  const senderDeviceId = r.str8('senderDevice', MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN);
  const storedAtMs = r.u64('storedAt');
  const expiresAtMs = r.u64('expiresAt');
  const len = r.u32('length');
  if (len > MAX_ENVELOPE_BYTES) throw new ProtocolError('ENVELOPE_TOO_LARGE', 'envelope payload too large');
  const payload = r.copy(len, 'payload');
  r.end('DELIVER');
  return { type: 'deliver', seq, envelopeId, senderUserId, senderDeviceId, storedAtMs, expiresAtMs, payload };
}
