/**
 * The SEND content hash the relay records for idempotency: SHA-256 of the SEND's content
 * bytes (protocol/envelopes.ts sendContent; docs/PROTOCOL.md, "the same content").
 *
 * Written into the caller's bytes from node:crypto's one-shot `hash` with a 'binary'
 * (latin1: one character per byte) string result: a Buffer result costs an ArrayBuffer of
 * its own per call, about a third of the hash's whole cost on a 1 KiB SEND.
 */
import crypto from 'node:crypto';
import { CONTENT_HASH_BYTES } from './send-batch.js';

/** Writes SHA-256(content) into `into`, which is CONTENT_HASH_BYTES long. */
export function writeContentHash(content: Uint8Array, into: Uint8Array): void {
  if (into.length !== CONTENT_HASH_BYTES) throw new RangeError(`a content hash takes ${CONTENT_HASH_BYTES} bytes, not ${into.length}`);
  const digest = crypto.hash('sha256', content, 'binary');
  for (let i = 0; i < CONTENT_HASH_BYTES; i++) into[i] = digest.charCodeAt(i);
}
