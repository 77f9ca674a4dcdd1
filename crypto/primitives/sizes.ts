/**
 * Fixed sizes of the primitives' inputs and outputs, named once so asserts, codecs and
 * tests agree. These are facts of the algorithms (RFC 7748, RFC 8032, RFC 8439,
 * FIPS 203), not tunable limits; tunable limits live in crypto/limits.ts.
 */
export const X25519_PRIVATE_KEY_BYTES = 32;
export const X25519_PUBLIC_KEY_BYTES = 32;
export const X25519_SHARED_SECRET_BYTES = 32;

export const ED25519_SEED_BYTES = 32;
export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;

export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;

export const SHA256_BYTES = 32;
export const SHA512_BYTES = 64;
/** RFC 5869 §2.3: L <= 255 * HashLen. */
export const HKDF_SHA256_MAX_OUTPUT_BYTES = 255 * SHA256_BYTES;

export const MLKEM768_PUBLIC_KEY_BYTES = 1184;
export const MLKEM768_SECRET_KEY_BYTES = 2400;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const MLKEM768_SHARED_SECRET_BYTES = 32;
/** FIPS 203 ML-KEM.KeyGen_internal(d, z): two 32-byte seeds. */
export const MLKEM768_KEYGEN_SEED_BYTES = 64;
/** FIPS 203 ML-KEM.Encaps_internal(ek, m): 32-byte message. */
export const MLKEM768_ENCAPS_RANDOMNESS_BYTES = 32;
