/**
 * Small byte helpers shared by every crypto/ module: constant-time comparison,
 * concatenation, text and hex/base64url codecs, and fixed-width big-endian integers.
 *
 * Decoders throw CryptoError('INVALID_ARGUMENT') with a labelled message; they are used
 * on wire data, so they never return a partially decoded value.
 */
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
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

/**
 * A copy of `b` as a plain Uint8Array. Copy bytes a caller passed in with this, not
 * with `b.slice()`: on a Node Buffer (what sockets, files and the pg driver return)
 * slice() is a view of the caller's memory, not a copy.
 */
export function copyBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
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

/** RFC 4648 §5 base64url without padding (the form JOSE and URLs use): protocol/base64url.ts. */
export function toBase64Url(b: Uint8Array): string {
  return encodeBase64url(b);
}

/**
 * Strict base64url decoding (protocol/base64url.ts): no padding, no whitespace, and the
 * unused low bits of the last character must be zero, so every byte string has exactly
 * one accepted encoding. Throws INVALID_ARGUMENT for anything else.
 */
export function fromBase64Url(s: string): Uint8Array {
  const out = typeof s === 'string' ? decodeBase64url(s) : undefined;
  if (out === undefined) throw new CryptoError('INVALID_ARGUMENT', 'not canonical base64url');
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
