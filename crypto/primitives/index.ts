/**
 * Primitive backends and how to pick one.
 *
 * Higher layers take a `backend: CryptoBackend` parameter defaulting to `defaultBackend`
 * (native where the runtime has it, noble otherwise); tests pass one explicitly to run
 * the same suite against both. `getBackend('native')` throws where there is no native
 * backend rather than silently running something else.
 */
import { CryptoError } from '../errors.js';
import type { BackendName, CryptoBackend } from './backend.js';
import { nativeBackend } from './native.js';
import { nobleBackend } from './noble.js';

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

/** Native where present (same results, faster), else the portable noble backend. */
export const defaultBackend: CryptoBackend = nativeBackend ?? nobleBackend;

/** Every backend this runtime can run, noble first. */
export const availableBackends: readonly CryptoBackend[] =
  nativeBackend === undefined ? [nobleBackend] : [nobleBackend, nativeBackend];

/**
 * A backend by name; `undefined` gives `defaultBackend`. Throws
 * CryptoError('INVALID_ARGUMENT') for an unknown name or a backend this runtime lacks.
 */
export function getBackend(name?: BackendName | string): CryptoBackend {
  if (name === undefined) return defaultBackend;
  if (name === 'noble') return nobleBackend;
  if (name === 'native') {
    if (nativeBackend === undefined) {
      throw new CryptoError('INVALID_ARGUMENT', 'native crypto backend is not available in this runtime');
    }
    return nativeBackend;
  }
  throw new CryptoError('INVALID_ARGUMENT', 'unknown crypto backend name (expected "noble" or "native")');
}
