/**
 * Domain separation for everything a Hermetic key signs.
 *
 * A signed transcript is
 *
 *     "hermetic/v1/" || label || 0x00 || body
 *
 * where `label` names the purpose ("published-key", "device-auth", ...). The label cannot
 * contain NUL, so the first NUL ends it and no two (label, body) pairs give the same
 * bytes: a signature made for one purpose never verifies for another. The same prefix
 * is used by the published-key and device-auth transcripts, so a label must be unique
 * across the project; the list lives in docs/CRYPTO.md ("Identity and signing").
 *
 * Raw signatures over formats defined elsewhere (JWS signing input, C2SP signed notes)
 * cannot collide with these: JWS input is base64url and '.', which has no '/'.
 */
import { LABEL_PREFIX } from '../../protocol/labels.js';
import { CryptoError } from '../errors.js';
import { MAX_SIGNATURE_CONTEXT_LABEL_BYTES } from '../limits.js';
import { assertAnyBytes, utf8Encode } from '../primitives/bytes.js';

export const SIGNATURE_CONTEXT_PREFIX = LABEL_PREFIX;

/** Lower-case ASCII words joined by '-' or '/': printable, and never a NUL. */
const LABEL_PATTERN = /^[a-z0-9]+(?:[-/][a-z0-9]+)*$/;

/** The exact bytes signed for (`label`, `body`). */
export function signatureTranscript(label: string, body: Uint8Array): Uint8Array {
  if (typeof label !== 'string' || label.length > MAX_SIGNATURE_CONTEXT_LABEL_BYTES || !LABEL_PATTERN.test(label)) {
    throw new CryptoError(
      'INVALID_ARGUMENT',
      `signature context label must be lower-case words joined by '-' or '/', at most ${MAX_SIGNATURE_CONTEXT_LABEL_BYTES} bytes`,
    );
  }
  assertAnyBytes(body, 'signature body');
  const head = utf8Encode(`${SIGNATURE_CONTEXT_PREFIX}${label}\0`);
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}
