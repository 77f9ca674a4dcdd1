/** Public surface of the PQXDH-style handshake. */
export { PQXDH_INFO } from './agreement.js';
export { decodeInitialMessage, INITIAL_HANDSHAKE_BYTES } from './initial-message.js';
export type { InitialHandshake, InitialMessage } from './initial-message.js';
export { initiateSession } from './initiator.js';
export type { InitiateSessionParams } from './initiator.js';
export { verifyPreKeyBundle } from './prekey-bundle.js';
export type { KemPreKeyPublic, OneTimePreKeyPublic, PreKeyBundle, SignedPreKeyPublic } from './prekey-bundle.js';
export type { PreKeyStore } from './prekey-store.js';
export {
  generateKemPreKey,
  generateOneTimePreKey,
  generateSignedPreKey,
  kemPreKeyPublic,
  oneTimePreKeyPublic,
  signedPreKeyPublic,
} from './prekeys.js';
export type {
  KemPreKeyRecord,
  KeyGenOptions,
  OneTimePreKeyRecord,
  SignedPreKeyRecord,
} from './prekeys.js';
export { acceptSession } from './responder.js';
export type { AcceptedSession, AcceptSessionParams } from './responder.js';
