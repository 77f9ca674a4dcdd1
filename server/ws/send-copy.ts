/**
 * A SEND frame taken out of the socket's message buffer (valid only during the message
 * handler) into memory of its own, with its content hash.
 *
 * One copy of the whole frame, with room for the content hash after it: the envelope id,
 * payload and hash are views into it, where a copy per field was an allocation per field,
 * garbage collected per SEND. Not from Node's buffer pool: an envelope kept in a stream's
 * live cache would keep a whole 8 KiB slab alive, beyond what the cache counts. A view of
 * one target's payload would keep the other targets' bytes alive too, so a SEND of several
 * targets is copied apart, its hash included: nothing then holds the frame's copy, and a
 * pending SEND holds about its frame's size (what the pending budget counts), not twice it.
 */
import { type SendFrame, decodeSend, sendContent } from '../../protocol/envelopes.js';
import { writeContentHash } from '../mailbox/content-hash.js';
import { CONTENT_HASH_BYTES } from '../mailbox/send-batch.js';

export interface OwnedSend {
  readonly frame: SendFrame;
  /** SHA-256 of the SEND's content (what "the same SEND" means for idempotency). */
  readonly contentHash: Uint8Array;
}

/** Decodes `bytes` (a SEND frame) into memory of its own; throws ProtocolError as decodeSend. */
export function ownSend(bytes: Uint8Array): OwnedSend {
  const size = bytes.length;
  const copy = new Uint8Array(size + CONTENT_HASH_BYTES);
  copy.set(bytes);
  const own = copy.subarray(0, size);
  const frame = decodeSend(own, { views: true });
  const contentHash = copy.subarray(size);
  writeContentHash(sendContent(own), contentHash);
  if (frame.targets.length === 1) return { frame, contentHash };
  return {
    frame: { ...frame, envelopeId: frame.envelopeId.slice(), targets: frame.targets.map((t) => ({ deviceId: t.deviceId, payload: t.payload.slice() })) },
    contentHash: contentHash.slice(),
  };
}
