/**
 * The SEND content hash the relay records for idempotency: SHA-256 of the SEND's content
 * bytes (protocol/envelopes.ts sendContent; docs/PROTOCOL.md, "the same content").
 *
 * Written into the caller's buffer from node:crypto's one-shot `hash` with a latin1
 * string result ('binary', i.e. latin1: one character per byte): a Buffer result costs an ArrayBuffer of its
 * own per call, about a third of the hash's whole cost on a 1 KiB SEND.
 */
import crypto from 'node:crypto';
import { CONTENT_HASH_BYTES } from './send-batch.js';

/** Writes SHA-256(content) into `into` at `at` (CONTENT_HASH_BYTES bytes). */
export function writeContentHash(content: Uint8Array, into: Buffer, at: number): void {
  const written = into.write(crypto.hash('sha256', content, 'binary'), at, CONTENT_HASH_BYTES, 'binary');
  if (written !== CONTENT_HASH_BYTES) throw new RangeError(`no room for the content hash at ${at}`);
}
