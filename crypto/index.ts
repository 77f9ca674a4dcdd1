/**
 * Public surface of hermetic/crypto. Internals (backend helpers, DER prefixes, KATs)
 * stay unexported; add a line here when a module becomes public.
 */

// Errors
export { CRYPTO_ERROR_CODES, CryptoError } from './errors.js';
export type { CryptoErrorCode } from './errors.js';

// Primitives and backends
export {
  availableBackends,
  defaultBackend,
  getBackend,
  nativeBackend,
  nobleBackend,
  systemRandom,
} from './primitives/index.js';
export type {
  BackendName,
  CryptoBackend,
  MlKemEncapsulation,
  MlKemKeyPair,
  RandomSource,
} from './primitives/index.js';
export {
  concatBytes,
  equalBytes,
  fromBase64Url,
  fromHex,
  readU32be,
  readU64be,
  toBase64Url,
  toHex,
  u32be,
  u64be,
  utf8Decode,
  utf8Encode,
} from './primitives/bytes.js';
export * as sizes from './primitives/sizes.js';
export * as limits from './limits.js';
