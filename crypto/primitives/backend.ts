/**
 * The contract every primitive backend implements.
 *
 * Two implementations exist: `noble` (pure TypeScript from @noble/*, runs everywhere,
 * including browsers) and `native` (Node's built-in crypto where it offers the
 * primitive, noble otherwise). They MUST produce byte-identical results; the test
 * suite checks both against RFC and Wycheproof vectors and against each other.
 *
 * All inputs are validated for length by the backend (labelled asserts); all outputs
 * are fresh Uint8Arrays the caller owns.
 */
export type BackendName = 'native' | 'noble';

export interface MlKemKeyPair {
  /** Encapsulation (public) key, 1184 bytes for ML-KEM-768. */
  readonly publicKey: Uint8Array;
  /** Decapsulation (secret) key, 2400 bytes for ML-KEM-768. */
  readonly secretKey: Uint8Array;
}

export interface MlKemEncapsulation {
  /** Ciphertext, 1088 bytes for ML-KEM-768. */
  readonly cipherText: Uint8Array;
  /** Shared secret, 32 bytes. */
  readonly sharedSecret: Uint8Array;
}

export interface CryptoBackend {
  readonly name: BackendName;

  sha256(data: Uint8Array): Uint8Array;
  sha512(data: Uint8Array): Uint8Array;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** RFC 5869 HKDF-SHA256 (extract + expand). `length` <= 255 * 32. */
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;

  /** X25519 public key from a 32-byte private scalar (RFC 7748). */
  x25519PublicKey(privateKey: Uint8Array): Uint8Array;
  /** X25519 shared secret. Throws CryptoError('INVALID_KEY') on an all-zero output. */
  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;

  /** Ed25519 public key from a 32-byte seed (RFC 8032). */
  ed25519PublicKey(seed: Uint8Array): Uint8Array;
  ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
  /** Never throws on malformed input: returns false. */
  ed25519Verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;

  /** ChaCha20-Poly1305 (RFC 8439): 32-byte key, 12-byte nonce; output = ciphertext || 16-byte tag. */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** Throws CryptoError('DECRYPT_FAILED') on any authentication failure. */
  aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array;

  /** ML-KEM-768 (FIPS 203). `seed` is 64 bytes (d || z) when given, random otherwise. */
  mlkemKeygen(seed?: Uint8Array): MlKemKeyPair;
  /** `randomness` is the 32-byte message m when given (for vectors), random otherwise. */
  mlkemEncapsulate(publicKey: Uint8Array, randomness?: Uint8Array): MlKemEncapsulation;
  mlkemDecapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array;
}
