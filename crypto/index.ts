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
  cryptoReady,
  defaultBackend,
  describeBackend,
  getBackend,
  loadedSodiumBackend,
  loadSodiumBackend,
  nativeBackend,
  nobleBackend,
  onSodiumUnavailable,
  PRIMITIVES,
  selectImplementations,
  systemRandom,
} from './primitives/index.js';
export type {
  BackendDescription,
  BackendName,
  Implementation,
  Primitive,
  SodiumState,
  CryptoBackend,
  MlKemEncapsulation,
  MlKemKeyPair,
  PreparedEd25519PrivateKey,
  PreparedEd25519PublicKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
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

// Key wrappers (secrets never printed)
export { Ed25519PrivateKey, keyFingerprint, MlKem768PrivateKey, X25519PrivateKey } from './keys.js';
export type { RedactedKey } from './keys.js';

// Identity, signing contexts, safety numbers
export {
  computeSafetyNumber,
  IdentityKey,
  IdentityKeyPair,
  SAFETY_NUMBER_VERSION,
  SafetyNumber,
  SIGNATURE_CONTEXT_PREFIX,
  signatureTranscript,
} from './identity/index.js';
export type { SafetyNumberParty } from './identity/index.js';

// Padding
export { MAX_UNPADDED_PLAINTEXT_BYTES, pad, paddedLength, unpad } from './padding.js';

// Handshake (PQXDH-style)
export {
  acceptSession,
  decodeInitialMessage,
  generateKemPreKey,
  generateOneTimePreKey,
  generateSignedPreKey,
  initiateSession,
  kemPreKeyPublic,
  oneTimePreKeyPublic,
  signedPreKeyPublic,
  verifyPreKeyBundle,
} from './handshake/index.js';
export type {
  AcceptedSession,
  AcceptSessionParams,
  InitialMessage,
  InitiateSessionParams,
  KemPreKeyPublic,
  KemPreKeyRecord,
  KeyGenOptions,
  OneTimePreKeyPublic,
  OneTimePreKeyRecord,
  PreKeyBundle,
  PreKeyStore,
  SignedPreKeyPublic,
  SignedPreKeyRecord,
} from './handshake/index.js';

// Double Ratchet sessions
export { Session, SESSION_MESSAGE_VERSION, SESSION_STATE_VERSION, sessionMessageType } from './ratchet/index.js';
export type { SessionMessageType, SessionOptions, SessionRole } from './ratchet/index.js';

// Group sender keys
export { InboundSenderKeys, OutboundSenderKey } from './group/index.js';
export type { SenderKeyOptions } from './group/index.js';

// The signed device list (linking and revocation)
export {
  createLinkRequest,
  decodeDeviceEntry,
  decodeLinkRequest,
  DeviceChain,
  deviceEntryHash,
  encodeLinkRequest,
  LINK_CODE_PREFIX,
  linkEntry,
  linkRequestFingerprint,
  revokeEntry,
  rootEntry,
} from './devices/index.js';
export type { DeviceChainRefusal, DeviceChainSnapshot, DeviceEntry, DeviceEntryKind, LinkRequest, ListedDevice } from './devices/index.js';

// Signatures on published prekeys (checked by the relay on upload and by initiators)
export { PUBLISHED_KEY_KINDS, publishedKeyTranscript, signPublishedKey, verifyPublishedKey } from './published-key.js';
export type { PublishedKeyKind } from './published-key.js';

// Transparency log: RFC 6962 Merkle tree, C2SP signed notes, checkpoints, tiles, proofs
export * as tlog from './tlog/index.js';
