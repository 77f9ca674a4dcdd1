/**
 * The contract every primitive backend implements.
 *
 * Three implementations exist: `noble` (pure TypeScript from @noble/*, runs everywhere,
 * including browsers), `native` (Node's built-in crypto where it offers the primitive,
 * noble otherwise) and `sodium` (libsodium compiled to WebAssembly, loaded
 * asynchronously). `default` (select.ts) takes each primitive from the fastest of them
 * on the platform. They MUST produce byte-identical results; the test suite checks each
 * against RFC and Wycheproof vectors and against each other.
 *
 * All inputs are validated for length by the backend (labelled asserts); all outputs
 * are fresh Uint8Arrays the caller owns.
 *
 * Keys used more than once can be prepared: `x25519PrepareKey` and friends take the raw
 * key once and return an object that does the same operations without taking it again.
 * For the native backend that skips re-importing the key into OpenSSL on every call (an
 * X25519 private-key import costs about as much as the agreement itself); for noble a
 * prepared key just holds the bytes. Results, errors and error messages are exactly
 * those of the raw-bytes methods, which stay the primary interface.
 */
export type BackendName = 'native' | 'noble' | 'sodium' | 'default';

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

/**
 * An X25519 private key prepared for repeated use. It holds the secret: keep it only in
 * a private field of the one key object it belongs to (it lives and dies with that
 * object), never in a shared cache. Printing it shows no secret.
 */
export interface PreparedX25519PrivateKey {
  /** The X25519 public key (a fresh copy). */
  publicKey(): Uint8Array;
  /** Same result and errors as `x25519(privateKey, theirPublicKey)`. */
  agree(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array;
}

/**
 * An X25519 public key prepared for the several agreements it takes part in (public
 * data). A prepared key from another backend is accepted too, through its bytes.
 */
export interface PreparedX25519PublicKey {
  /** A copy of the 32 bytes. */
  readonly bytes: Uint8Array;
}

/** An Ed25519 signing key prepared for repeated use; same rules as PreparedX25519PrivateKey. */
export interface PreparedEd25519PrivateKey {
  /** The Ed25519 public key (a fresh copy). */
  publicKey(): Uint8Array;
  /** Same result and errors as `ed25519Sign(seed, message)`. */
  sign(message: Uint8Array): Uint8Array;
}

/** An Ed25519 public key prepared for repeated verification (public data). */
export interface PreparedEd25519PublicKey {
  /** A copy of the 32 bytes. */
  readonly bytes: Uint8Array;
  /** Same verdict as `ed25519Verify(signature, message, publicKey)`; never throws. */
  verify(signature: Uint8Array, message: Uint8Array): boolean;
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

  /** Validates like `x25519PublicKey` (INVALID_KEY for a wrong size). */
  x25519PrepareKey(privateKey: Uint8Array): PreparedX25519PrivateKey;
  /** INVALID_KEY for a wrong size; a low-order key is refused when it is used, as by `x25519`. */
  x25519PreparePublicKey(publicKey: Uint8Array): PreparedX25519PublicKey;
  /** Validates like `ed25519PublicKey` (INVALID_KEY for a wrong size). */
  ed25519PrepareKey(seed: Uint8Array): PreparedEd25519PrivateKey;
  /**
   * INVALID_KEY for a wrong size. A key of the right size that `ed25519Verify` would
   * refuse (small-order, non-canonical) gives a prepared key that verifies nothing.
   */
  ed25519PreparePublicKey(publicKey: Uint8Array): PreparedEd25519PublicKey;

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
