/** Device identity: key pair and its X25519 form, domain-separated signing, safety numbers. */
export { identityDhPrivateKey, identityDhPublicKey } from './identity-dh.js';
export { IdentityKey, IdentityKeyPair } from './identity-key.js';
export {
  computeSafetyNumber,
  SAFETY_NUMBER_DIGITS,
  SAFETY_NUMBER_GROUP_DIGITS,
  SAFETY_NUMBER_ITERATIONS,
  SAFETY_NUMBER_SCANNABLE_BYTES,
  SAFETY_NUMBER_VERSION,
  SafetyNumber,
} from './safety-number.js';
export type { SafetyNumberParty } from './safety-number.js';
export { SIGNATURE_CONTEXT_PREFIX, signatureTranscript } from './signature-context.js';
