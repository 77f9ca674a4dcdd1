/**
 * Shared test helpers: the backends to parametrize over, vector loading, hex.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { CryptoError, type CryptoErrorCode } from '../../crypto/errors.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { fromHex, toHex } from '../../crypto/primitives/bytes.js';
import { createNativeBackend, nativeBackend } from '../../crypto/primitives/native.js';
import { nobleBackend, nobleMlKem } from '../../crypto/primitives/noble.js';
import { cryptoReady, selectedBackend } from '../../crypto/primitives/select.js';
import { loadSodiumBackend } from '../../crypto/primitives/sodium.js';

if (nativeBackend === undefined) {
  // Node >= 20.16 always has it; a missing native backend on Node is a bug, not a skip.
  throw new Error('native backend unavailable on this Node runtime');
}

/**
 * The native backend with its DER key-import fallback forced, so that path is tested
 * too even though this runtime passes the faster JWK path's known-answer test.
 */
const nodeCrypto = process.getBuiltinModule('node:crypto');
const nativeDer = createNativeBackend(nodeCrypto, nobleMlKem, 'der')?.backend;
if (nativeDer === undefined) throw new Error('native backend with DER key import failed its self-test');

/** libsodium (WebAssembly): a load failure fails the tests rather than skipping them. */
const sodiumBackend: CryptoBackend = await loadSodiumBackend();
// The default backend with libsodium loaded: native primitives, libsodium's ML-KEM.
await cryptoReady();

/**
 * Every backend (native twice: default key import and DER fallback) and the per-primitive
 * default, for describe.each.
 */
export const BACKENDS: readonly [string, CryptoBackend][] = [
  ['noble', nobleBackend],
  ['native', nativeBackend],
  ['native-der', nativeDer],
  ['sodium', sodiumBackend],
  ['default', selectedBackend],
];
export const native: CryptoBackend = nativeBackend;
export const noble: CryptoBackend = nobleBackend;
export const sodium: CryptoBackend = sodiumBackend;

export const hex = fromHex;
export const toH = toHex;

/** Reads a JSON vector file from test/vectors/ (path relative to that folder). */
export function loadVectors<T>(relative: string): T {
  const url = new URL(`../vectors/${relative}`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')) as T;
}

/** Asserts `fn` throws a CryptoError with `code` (and, if given, exactly `message`). */
export function expectCryptoError(fn: () => unknown, code: CryptoErrorCode, message?: string | RegExp): CryptoError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a CryptoError to be thrown').toBeInstanceOf(CryptoError);
  const err = caught as CryptoError;
  expect(err.code).toBe(code);
  if (typeof message === 'string') expect(err.message).toBe(message);
  else if (message !== undefined) expect(err.message).toMatch(message);
  return err;
}

/** Wycheproof file layout shared by every schema we read. */
export interface WycheproofFile<G> {
  algorithm: string;
  numberOfTests: number;
  testGroups: G[];
}
export interface WycheproofCase {
  tcId: number;
  comment?: string;
  flags: string[];
  result: 'valid' | 'invalid' | 'acceptable';
}
export function loadWycheproof<G extends { tests: WycheproofCase[] }>(file: string): {
  file: WycheproofFile<G>;
  cases: { group: G; test: G['tests'][number] }[];
} {
  const data = loadVectors<WycheproofFile<G>>(`wycheproof/${file}`);
  const cases = data.testGroups.flatMap((group) => group.tests.map((test) => ({ group, test })));
  return { file: data, cases };
}
