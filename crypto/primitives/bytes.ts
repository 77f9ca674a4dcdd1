/**
 * Small byte helpers shared by every crypto/ module: constant-time comparison,
 * concatenation, text and hex/base64url codecs, and fixed-width big-endian integers.
 *
 * Decoders throw CryptoError('INVALID_ARGUMENT') with a labelled message; they are used
 * on wire data, so they never return a partially decoded value.
 */
import { CryptoError } from '../errors.js';

/**
 * Constant-time equality: the running time depends only on the lengths, never on where
 * the first difference is, so comparing a MAC, a scanned safety number or a key does not
 * leak how many leading bytes an attacker guessed right. Lengths are public.
 */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/** Concatenates into one fresh array. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const encoder = new TextEncoder();
// fatal: a wire string that is not valid UTF-8 is rejected rather than silently mangled.
const decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8Encode(s: string): Uint8Array {
  return encoder.encode(s);
}

export function utf8Decode(b: Uint8Array): string {
  try {
    return decoder.decode(b);
  } catch (cause) {
    throw new CryptoError('INVALID_ARGUMENT', 'bytes are not valid UTF-8', { cause });
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function toHex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += HEX[b[i] as number] as string;
  return s;
}

function hexNibble(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return -1;
}

export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new CryptoError('INVALID_ARGUMENT', 'hex string must have even length');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexNibble(s.charCodeAt(2 * i));
    const lo = hexNibble(s.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) throw new CryptoError('INVALID_ARGUMENT', 'hex string has a non-hex character');
    out[i] = (hi << 4) | lo;
  }
  return out;
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64URL_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < B64URL.length; i++) B64URL_INDEX[B64URL.charCodeAt(i)] = i;

/** RFC 4648 §5 base64url without padding (the form JOSE and URLs use). */
export function toBase64Url(b: Uint8Array): string {
  let s = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = ((b[i] as number) << 16) | ((b[i + 1] as number) << 8) | (b[i + 2] as number);
    s += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]! + B64URL[(n >>> 6) & 63]! + B64URL[n & 63]!;
  }
  const rest = b.length - i;
  if (rest === 1) {
    const n = (b[i] as number) << 16;
    s += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]!;
  } else if (rest === 2) {
    const n = ((b[i] as number) << 16) | ((b[i + 1] as number) << 8);
    s += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]! + B64URL[(n >>> 6) & 63]!;
  }
  return s;
}

/**
 * Strict base64url decoding: no padding, no whitespace, and the unused low bits of the
 * last character must be zero, so every byte string has exactly one accepted encoding
 * (a relay cannot make two different-looking strings that decode alike).
 */
export function fromBase64Url(s: string): Uint8Array {
  if (s.length % 4 === 1) throw new CryptoError('INVALID_ARGUMENT', 'base64url string has an impossible length');
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? (B64URL_INDEX[c] as number) : -1;
    if (v < 0) throw new CryptoError('INVALID_ARGUMENT', 'base64url string has a character outside the alphabet');
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >>> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) {
    throw new CryptoError('INVALID_ARGUMENT', 'base64url string has non-zero trailing bits');
  }
  return out;
}

/** 4-byte big-endian encoding of an unsigned 32-bit integer. */
export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new CryptoError('INVALID_ARGUMENT', 'u32 value must be an integer in [0, 2^32)');
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, false);
  return out;
}

export function readU32be(b: Uint8Array, offset = 0): number {
  if (!Number.isInteger(offset) || offset < 0 || offset + 4 > b.length) {
    throw new CryptoError('INVALID_ARGUMENT', 'u32 read out of bounds');
  }
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(offset, false);
}

/** 8-byte big-endian encoding; accepts a safe integer or a bigint in [0, 2^64). */
export function u64be(n: number | bigint): Uint8Array {
  const v = typeof n === 'bigint' ? n : Number.isSafeInteger(n) && n >= 0 ? BigInt(n) : -1n;
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
    throw new CryptoError('INVALID_ARGUMENT', 'u64 value must be an integer in [0, 2^64)');
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, false);
  return out;
}

export function readU64be(b: Uint8Array, offset = 0): bigint {
  if (!Number.isInteger(offset) || offset < 0 || offset + 8 > b.length) {
    throw new CryptoError('INVALID_ARGUMENT', 'u64 read out of bounds');
  }
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(offset, false);
}

/**
 * Labelled length assert used on every primitive input. `code` is INVALID_KEY for key
 * material and INVALID_ARGUMENT for everything else.
 */
export function assertBytes(
  value: unknown,
  length: number,
  label: string,
  code: 'INVALID_KEY' | 'INVALID_ARGUMENT' = 'INVALID_ARGUMENT',
): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new CryptoError(code, `${label} must be a Uint8Array`);
  if (value.length !== length) throw new CryptoError(code, `${label} must be ${length} bytes`);
}

/** Asserts a Uint8Array of any length. */
export function assertAnyBytes(value: unknown, label: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new CryptoError('INVALID_ARGUMENT', `${label} must be a Uint8Array`);
}
