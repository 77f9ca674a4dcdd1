/**
 * Strict standard base64 (RFC 4648 §4, with padding), the encoding signed notes,
 * checkpoints and tlog proofs use. Strict means one encoding per byte string: correct
 * padding, no whitespace, zero unused bits. Built on the project's base64url codec.
 */
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';

const STD_BODY = /^[A-Za-z0-9+/]*$/;

export function toBase64(bytes: Uint8Array): string {
  const url = encodeBase64url(bytes).replace(/-/g, '+').replace(/_/g, '/');
  return url + '='.repeat((4 - (url.length % 4)) % 4);
}

/** Undefined for anything that is not the canonical padded encoding of some bytes. */
export function fromBase64(s: string): Uint8Array | undefined {
  if (s.length % 4 !== 0) return undefined;
  let body = s;
  if (body.endsWith('==')) body = body.slice(0, -2);
  else if (body.endsWith('=')) body = body.slice(0, -1);
  if (!STD_BODY.test(body)) return undefined;
  return decodeBase64url(body.replace(/\+/g, '-').replace(/\//g, '_'));
}
