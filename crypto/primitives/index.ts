/**
 * Primitive backends and how to pick one.
 *
 * Higher layers take a `backend: CryptoBackend` parameter defaulting to `defaultBackend`,
 * which takes each primitive from the fastest implementation on the platform (select.ts:
 * in Node node:crypto for SHA-2, X25519 and Ed25519 and libsodium for the rest,
 * libsodium in browsers, noble as the portable fallback); tests pass one explicitly to run the same suite against each.
 * `getBackend('native')` throws where there is no native backend, and
 * `getBackend('sodium')` before libsodium has loaded, rather than silently running
 * something else.
 */
import { CryptoError } from '../errors.js';
import type { BackendName, CryptoBackend } from './backend.js';
import { nativeBackend } from './native.js';
import { nobleBackend } from './noble.js';
import { loadedSodiumBackend, selectedBackend } from './select.js';

export type {
  BackendName,
  CryptoBackend,
  MlKemEncapsulation,
  MlKemKeyPair,
  PreparedEd25519PrivateKey,
  PreparedEd25519PublicKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
} from './backend.js';
export { nativeBackend, nativeKeyImport } from './native.js';
export type { KeyImportPath, MlKemProvider } from './native.js';
export { nobleBackend } from './noble.js';
export { systemRandom } from './random.js';
export type { RandomSource } from './random.js';
export {
  PRIMITIVES,
  cryptoReady,
  describeBackend,
  loadedSodiumBackend,
  onSodiumUnavailable,
  selectImplementations,
} from './select.js';
export type { BackendDescription, Implementation, Primitive, SodiumState } from './select.js';
export { loadSodiumBackend } from './sodium.js';

/** Each primitive from the fastest implementation here (select.ts); switches to libsodium once loaded. */
export const defaultBackend: CryptoBackend = selectedBackend;

/** Every synchronously available backend of this runtime, noble first (libsodium: `loadedSodiumBackend()`). */
export const availableBackends: readonly CryptoBackend[] =
  nativeBackend === undefined ? [nobleBackend] : [nobleBackend, nativeBackend];

/**
 * A backend by name; `undefined` gives `defaultBackend`. Throws
 * CryptoError('INVALID_ARGUMENT') for an unknown name, a backend this runtime lacks, or
 * libsodium before it has loaded (await `cryptoReady()` first).
 */
export function getBackend(name?: BackendName | string): CryptoBackend {
  if (name === undefined || name === 'default') return defaultBackend;
  if (name === 'noble') return nobleBackend;
  if (name === 'native') {
    if (nativeBackend === undefined) {
      throw new CryptoError('INVALID_ARGUMENT', 'native crypto backend is not available in this runtime');
    }
    return nativeBackend;
  }
  if (name === 'sodium') {
    const sodium = loadedSodiumBackend();
    if (sodium === undefined) {
      throw new CryptoError('INVALID_ARGUMENT', 'sodium crypto backend is not loaded (await cryptoReady() first)');
    }
    return sodium;
  }
  throw new CryptoError('INVALID_ARGUMENT', 'unknown crypto backend name (expected "noble", "native", "sodium" or "default")');
}
