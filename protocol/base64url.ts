/**
 * Strict base64url (RFC 4648 §5, no padding) for bytes on the wire. Strict means one
 * encoding per byte string: no padding, no whitespace, no non-zero trailing bits, so
 * that two different strings never decode to the same key. Runs in browsers and Node.
 */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Node's Buffer where there is one: its native codec for all but short strings (a
 * message payload is 1 KiB and more, and the loops below cost several times as much).
 * Not a browser polyfill put in its place that knows no base64url (it would throw). */
interface NativeBuffer extends ArrayLike<number> {
  toString(encoding: 'base64url'): string;
}
const GlobalBuffer = (globalThis as { Buffer?: { from(data: ArrayBufferLike | string, offsetOrEncoding?: number | 'base64url', length?: number): NativeBuffer; isEncoding?(encoding: string): boolean } }).Buffer;
const NativeBuffer = GlobalBuffer?.isEncoding?.('base64url') === true ? GlobalBuffer : undefined;
/** Below this many bytes (or characters), the loops are as fast as the native call. */
const NATIVE_FROM = 96;

export function encodeBase64url(bytes: Uint8Array): string {
  if (NativeBuffer !== undefined && bytes.length >= NATIVE_FROM) return NativeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('base64url');
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]! + ALPHABET[(n >>> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = (bytes[i] as number) << 16;
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]!;
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8);
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]! + ALPHABET[(n >>> 6) & 63]!;
  }
  return out;
}

/** Returns undefined for anything that is not canonical base64url. */
export function decodeBase64url(s: string): Uint8Array | undefined {
  const len = s.length;
  if (len % 4 === 1) return undefined;
  if (NativeBuffer !== undefined && len >= NATIVE_FROM) {
    // The native decoder skips what is not base64 and takes padding and "+/": only a
    // string that encodes back to itself is the one canonical encoding of its bytes.
    const b = NativeBuffer.from(s, 'base64url');
    if (b.toString('base64url') !== s) return undefined;
    return new Uint8Array(b);
  }
  const out = new Uint8Array(Math.floor((len * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? (DECODE[c] as number) : -1;
    if (v < 0) return undefined;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >>> bits) & 0xff;
    }
  }
  // Leftover bits must be zero, or two strings would decode to the same bytes.
  if ((acc & ((1 << bits) - 1)) !== 0) return undefined;
  return out;
}
