/**
 * Shared helpers for the transparency-log tests: asserting EvidenceError codes, and
 * building stores of deterministic leaves.
 */
import { expect } from 'vitest';
import { EvidenceError, type EvidenceErrorCode } from '../../crypto/evidence/errors.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { leafHash } from '../../crypto/tlog/merkle.js';
import { MemoryNodeStore } from '../../crypto/tlog/memory-store.js';

/** Asserts `fn` throws (or rejects with) an EvidenceError with `code`. */
export async function expectEvidenceError(fn: () => unknown, code: EvidenceErrorCode): Promise<EvidenceError> {
  try {
    await fn();
  } catch (e) {
    return checkEvidenceError(e, code);
  }
  return checkEvidenceError(undefined, code);
}

/** Synchronous variant, for code that must throw without awaiting. */
export function expectEvidenceErrorSync(fn: () => unknown, code: EvidenceErrorCode): EvidenceError {
  try {
    fn();
  } catch (e) {
    return checkEvidenceError(e, code);
  }
  return checkEvidenceError(undefined, code);
}

function checkEvidenceError(caught: unknown, code: EvidenceErrorCode): EvidenceError {
  expect(caught, 'expected an EvidenceError').toBeInstanceOf(EvidenceError);
  const err = caught as EvidenceError;
  expect(err.code).toBe(code);
  return err;
}

/** Leaf data i: the 4-byte big-endian index followed by a byte derived from it. */
export function leafData(i: number): Uint8Array {
  return Uint8Array.of(i >>> 24, (i >>> 16) & 0xff, (i >>> 8) & 0xff, i & 0xff, (i * 7) & 0xff);
}

/** A store holding `n` deterministic leaves, appended in one batch. */
export async function storeOf(n: number, backend: CryptoBackend): Promise<{ store: MemoryNodeStore; leaves: Uint8Array[] }> {
  const leaves = Array.from({ length: n }, (_, i) => leafHash(leafData(i), backend));
  const store = new MemoryNodeStore(backend);
  await store.append(leaves);
  return { store, leaves };
}

/** A copy of `b` with one bit flipped. */
export function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const out = new Uint8Array(b);
  out[Math.floor(bit / 8) % out.length]! ^= 1 << (bit % 8);
  return out;
}
