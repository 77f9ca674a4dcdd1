/**
 * STORED_BATCH (binary, relay → client): the STORED answers of one connection's SENDs
 * that one commit produced, in one frame instead of one JSON text message each. A client
 * opts in at authentication (the `features` of its `auth` frame, FEATURE_STORED_BATCH);
 * a client that does not gets the JSON `stored` frames. Layout (big-endian) in
 * docs/PROTOCOL.md, "STORED_BATCH".
 *
 * Each answer says exactly what the JSON frame says (the envelope id as its 16 bytes
 * rather than base64url), so the decoder hands back the same typed `stored` frames.
 */
import { encodeBase64url } from './base64url.js';
import { BinaryReader, BinaryWriter } from './binary.js';
import { BINARY_FRAME } from './envelopes.js';
import { ProtocolError } from './errors.js';
import type { ServerFrame, StoredRecipient } from './frames.js';
import { DEVICE_ID_PATTERN, ENVELOPE_ID_BYTES, MAX_DEVICE_ID_LENGTH, MAX_STORED_PER_BATCH, MAX_TARGETS_PER_SEND } from './limits.js';

/** The frame type byte, after SEND (0x01) and DELIVER (0x02). */
export const STORED_BATCH_FRAME = BINARY_FRAME.STORED_BATCH;
/** The layout version this code reads and writes. */
export const STORED_BATCH_VERSION = 1;
/** What a client names in its `auth` frame's `features` to be answered with this frame. */
export const FEATURE_STORED_BATCH = 'stored-batch/1';

/** Flag bits of an answer; the others must be 0. */
const FLAG_DUPLICATE = 0x01;
/** u32 id, envelope id, u8 flags, u64 storedAt, u64 expiresAt, u8 recipient count. */
const ANSWER_FIXED_BYTES = 4 + ENVELOPE_ID_BYTES + 1 + 8 + 8 + 1;
/** str8 device id and u64 seq, at their longest. */
const RECIPIENT_MAX_BYTES = 1 + MAX_DEVICE_ID_LENGTH + 8;
/** The largest frame the relay can write: MAX_STORED_PER_BATCH answers with every field
 * at its longest (256 × 1,206 + 4 = 308,740 bytes, well inside MAX_FRAME_BYTES). */
export const MAX_STORED_BATCH_BYTES = 4 + MAX_STORED_PER_BATCH * (ANSWER_FIXED_BYTES + MAX_TARGETS_PER_SEND * RECIPIENT_MAX_BYTES);

/** One answer as the relay holds it: the envelope id as bytes (no base64url work). */
export interface StoredAnswer {
  readonly id: number;
  readonly envelopeId: Uint8Array;
  readonly duplicate: boolean;
  readonly storedAt: number;
  readonly expiresAt: number;
  readonly recipients: readonly StoredRecipient[];
}

export type StoredFrame = Extract<ServerFrame, { type: 'stored' }>;

export interface StoredBatchFrame {
  readonly type: 'stored_batch';
  /** The answers, each as the JSON `stored` frame would have said it. */
  readonly answers: readonly StoredFrame[];
}

/**
 * Encodes 1..MAX_STORED_PER_BATCH answers into one frame. With `into`, the frame is
 * written into that (reused) writer and the result is a view valid until its next use.
 */
export function encodeStoredBatch(answers: readonly StoredAnswer[], into = new BinaryWriter(256)): Uint8Array {
  if (answers.length === 0 || answers.length > MAX_STORED_PER_BATCH) throw new RangeError(`a STORED_BATCH carries 1..${MAX_STORED_PER_BATCH} answers`);
  const w = into.reset();
  w.u8(STORED_BATCH_FRAME).u8(STORED_BATCH_VERSION).u16(answers.length);
  for (const a of answers) {
    if (a.envelopeId.length !== ENVELOPE_ID_BYTES) throw new RangeError('envelope id must be 16 bytes');
    const n = a.recipients.length;
    if (n === 0 || n > MAX_TARGETS_PER_SEND) throw new RangeError(`an answer names 1..${MAX_TARGETS_PER_SEND} recipients`);
    w.u32(a.id).bytes(a.envelopeId).u8(a.duplicate ? FLAG_DUPLICATE : 0).u64(a.storedAt).u64(a.expiresAt).u8(n);
    for (const r of a.recipients) w.str8(r.deviceId).u64(r.seq);
  }
  return w.finish();
}

/**
 * Decodes a STORED_BATCH. Everything is bounded before it is read: a frame over
 * MAX_STORED_BATCH_BYTES is FRAME_TOO_LARGE, another type or version UNKNOWN_FRAME, and
 * a count out of range, a truncated answer, unknown flag bits, a sequence of 0, a bad
 * device id or trailing bytes BAD_REQUEST.
 */
export function decodeStoredBatch(buf: Uint8Array): StoredBatchFrame {
  if (buf.length > MAX_STORED_BATCH_BYTES) throw new ProtocolError('FRAME_TOO_LARGE', `STORED_BATCH over ${MAX_STORED_BATCH_BYTES} bytes`);
  const r = new BinaryReader(buf);
  if (r.u8('frame type') !== STORED_BATCH_FRAME) throw new ProtocolError('UNKNOWN_FRAME', 'not a STORED_BATCH frame');
  const version = r.u8('version');
  if (version !== STORED_BATCH_VERSION) throw new ProtocolError('UNKNOWN_FRAME', `STORED_BATCH version ${version} is not known`);
  const count = r.u16('count');
  if (count === 0 || count > MAX_STORED_PER_BATCH) throw new ProtocolError('BAD_REQUEST', `count must be 1..${MAX_STORED_PER_BATCH}`);
  // Every answer takes at least ANSWER_FIXED_BYTES plus one recipient: a count the
  // frame cannot hold is refused before anything is allocated for it.
  if (r.remaining < count * (ANSWER_FIXED_BYTES + 1 + 1 + 8)) throw new ProtocolError('BAD_REQUEST', 'frame truncated: shorter than its count');
  const answers: StoredFrame[] = [];
  for (let i = 0; i < count; i++) {
    const id = r.u32('id');
    const envelopeId = encodeBase64url(r.bytes(ENVELOPE_ID_BYTES, 'envelopeId'));
    const flags = r.u8('flags');
    if ((flags & ~FLAG_DUPLICATE) !== 0) throw new ProtocolError('BAD_REQUEST', `answers[${i}]: unknown flags`);
    const storedAt = r.u64('storedAt');
    const expiresAt = r.u64('expiresAt');
    const n = r.u8('recipient count');
    if (n === 0 || n > MAX_TARGETS_PER_SEND) throw new ProtocolError('BAD_REQUEST', `answers[${i}]: 1..${MAX_TARGETS_PER_SEND} recipients`);
    const recipients: StoredRecipient[] = [];
    for (let k = 0; k < n; k++) {
      const deviceId = r.str8(`answers[${i}].recipients[${k}].deviceId`, MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN);
      const seq = r.u64('seq');
      if (seq === 0) throw new ProtocolError('BAD_REQUEST', `answers[${i}].recipients[${k}].seq must be at least 1`);
      recipients.push({ deviceId, seq });
    }
    answers.push({ type: 'stored', id, envelopeId, duplicate: (flags & FLAG_DUPLICATE) !== 0, storedAt, expiresAt, recipients });
  }
  r.end('STORED_BATCH');
  return { type: 'stored_batch', answers };
}
