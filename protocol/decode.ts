/**
 * Field decoders for untrusted JSON. Input is decoded once, at the boundary, into typed
 * plain objects; code past the boundary trusts the type. Every failure is a
 * ProtocolError('BAD_REQUEST') naming the field, never a TypeError from deep inside.
 */
import { decodeBase64url } from './base64url.js';
import { ProtocolError } from './errors.js';
import { MAX_KEY_ID } from './limits.js';

export type JsonObject = { readonly [k: string]: unknown };

function bad(field: string, why: string): ProtocolError {
  return new ProtocolError('BAD_REQUEST', `${field}: ${why}`);
}

/** Parses JSON text whose size the caller has already bounded. */
export function parseJsonObject(text: string, what = 'body'): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad(what, 'not valid JSON');
  }
  return asObject(v, what);
}

export function asObject(v: unknown, field: string): JsonObject {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, 'expected an object');
  return v as JsonObject;
}

export function str(o: JsonObject, field: string, opts: { max: number; pattern?: RegExp }): string {
  const v = o[field];
  if (typeof v !== 'string') throw bad(field, 'expected a string');
  if (v.length === 0 || v.length > opts.max) throw bad(field, `length must be 1..${opts.max}`);
  if (opts.pattern && !opts.pattern.test(v)) throw bad(field, 'has characters outside the allowed set');
  return v;
}

export function optStr(o: JsonObject, field: string, opts: { max: number; pattern?: RegExp }): string | undefined {
  return o[field] === undefined ? undefined : str(o, field, opts);
}

export function int(o: JsonObject, field: string, min: number, max: number): number {
  const v = o[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(field, 'expected an integer');
  if (v < min || v > max) throw bad(field, `must be in ${min}..${max}`);
  return v;
}

export function bool(o: JsonObject, field: string): boolean {
  const v = o[field];
  if (typeof v !== 'boolean') throw bad(field, 'expected true or false');
  return v;
}

export function keyId(o: JsonObject, field = 'keyId'): number {
  return int(o, field, 0, MAX_KEY_ID);
}

/** base64url bytes of an exact length, or of a length in [min, max]. */
export function bytes(o: JsonObject, field: string, len: number | { min: number; max: number }): Uint8Array {
  return bytesValue(o[field], field, len);
}

/** The same check for a value that is not an object field (an array element). */
export function bytesValue(v: unknown, field: string, len: number | { min: number; max: number }): Uint8Array {
  if (typeof v !== 'string') throw bad(field, 'expected base64url bytes');
  const max = typeof len === 'number' ? len : len.max;
  // Bound the string before decoding it: 4 characters per 3 bytes.
  if (v.length > Math.ceil((max * 4) / 3)) throw bad(field, `longer than ${max} bytes`);
  const b = decodeBase64url(v);
  if (!b) throw bad(field, 'not canonical base64url');
  if (typeof len === 'number' ? b.length !== len : b.length < len.min || b.length > len.max) {
    throw bad(field, typeof len === 'number' ? `must be ${len} bytes` : `must be ${len.min}..${len.max} bytes`);
  }
  return b;
}

export function array(o: JsonObject, field: string, maxItems: number, onTooMany: () => ProtocolError): readonly unknown[] {
  const v = o[field];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw bad(field, 'expected an array');
  if (v.length > maxItems) throw onTooMany();
  return v;
}
