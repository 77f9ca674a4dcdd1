/**
 * The exact bytes a device signs with its identity key when it proves itself to the
 * relay. Each transcript starts with its own NUL-terminated label (domain separation:
 * a signature made for one purpose is never valid for another) and length-prefixes
 * every variable field (no two field splits give the same bytes).
 */
import { SIGNATURE_LABELS, signatureLabelBytes } from './labels.js';

const encoder = new TextEncoder();

/** u16 big-endian length || UTF-8 bytes. Fields are bounded far below 65535 by limits. */
function lengthPrefixed(s: string): Uint8Array {
  const b = encoder.encode(s);
  if (b.length > 0xffff) throw new RangeError('field too long for a transcript');
  const out = new Uint8Array(2 + b.length);
  out[0] = b.length >>> 8;
  out[1] = b.length & 0xff;
  out.set(b, 2);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Signed once at registration: proves the registrant holds the identity key, so no one
 * can claim another device's identity key as their own (unknown key-share). */
export function deviceRegistrationTranscript(userId: string, deviceId: string, identityKey: Uint8Array): Uint8Array {
  return concat([signatureLabelBytes(SIGNATURE_LABELS.deviceRegistration), lengthPrefixed(userId), lengthPrefixed(deviceId), identityKey]);
}

/** Signed on every WebSocket connection: binds the fresh server challenge to the user,
 * the device and the relay's origin (protocol/origin.ts), so a signature cannot be
 * replayed on another connection, for another device, or by a relay that forwarded the
 * challenge of another. Label version 2: version 1 had no origin. */
export function deviceAuthTranscript(challenge: Uint8Array, userId: string, deviceId: string, relayOrigin: string): Uint8Array {
  return concat([signatureLabelBytes(SIGNATURE_LABELS.deviceAuth), challenge, lengthPrefixed(userId), lengthPrefixed(deviceId), lengthPrefixed(relayOrigin)]);
}
