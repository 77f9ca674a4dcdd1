/**
 * The portable backend: every primitive from the audited pure-TypeScript @noble/*
 * libraries. Runs in browsers and any JS runtime; it is also the reference the native
 * backend is tested against byte for byte.
 *
 * Every input is length-checked here with a labelled assert before it reaches noble, so
 * errors carry our stable codes rather than a library's message.
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { CryptoError } from '../errors.js';
import type {
  CryptoBackend,
  MlKemEncapsulation,
  MlKemKeyPair,
  PreparedEd25519PrivateKey,
  PreparedEd25519PublicKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
} from './backend.js';
import { assertAnyBytes, assertBytes, concatBytes, copyBytes, equalBytes } from './bytes.js';
import { PreparedSecret } from './prepared.js';
import { systemRandom } from './random.js';
import {
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  HKDF_SHA256_MAX_OUTPUT_BYTES,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_ENCAPS_RANDOMNESS_BYTES,
  MLKEM768_KEYGEN_SEED_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
  X25519_PRIVATE_KEY_BYTES,
  X25519_PUBLIC_KEY_BYTES,
} from './sizes.js';

/** One message for every AEAD failure, so callers cannot tell which check failed. */
export const DECRYPT_FAILED_MESSAGE = 'decryption failed';

/** Never carries a `cause`: it could say which check failed. */
export function decryptFailed(): CryptoError {
  return new CryptoError('DECRYPT_FAILED', DECRYPT_FAILED_MESSAGE);
}

export function assertHkdfLength(length: number): void {
  // RFC 5869 §2.3 caps L at 255 * HashLen; 0 is refused because an empty key is always a bug.
  if (!Number.isInteger(length) || length < 1 || length > HKDF_SHA256_MAX_OUTPUT_BYTES) {
    throw new CryptoError('INVALID_ARGUMENT', `hkdf length must be an integer in [1, ${HKDF_SHA256_MAX_OUTPUT_BYTES}]`);
  }
}

/** Shared by both backends: RFC 7748 §6.1 all-zero check, in constant time. */
export function assertNonZeroSharedSecret(shared: Uint8Array): void {
  let acc = 0;
  for (let i = 0; i < shared.length; i++) acc |= shared[i] as number;
  if (acc === 0) throw lowOrderPoint();
}

export function lowOrderPoint(cause?: unknown): CryptoError {
  // A low-order (or twist low-order) public key forces the shared secret to zero whatever
  // our private key is: a peer sending one would make the "secret" public (RFC 7748 §6.1).
  return new CryptoError(
    'INVALID_KEY',
    'x25519 public key is of low order (all-zero shared secret)',
    cause === undefined ? undefined : { cause },
  );
}

const ED_POINT = ed25519.Point;
const ED_ORDER = ED_POINT.Fn.ORDER;

/**
 * The cofactorless equation [S]B - [k]A == R, compared as encodings (ed25519-policy.ts,
 * rule 3). Called only after noble's strict verify accepted, so A and R decode and
 * S < L. All values are public, so the variable-time multiplications are fine.
 */
function cofactorlessEquationHolds(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  const r = signature.subarray(0, 32);
  const s = bytesToNumberLE(signature.subarray(32, 64));
  const k = bytesToNumberLE(sha512(concatBytes(r, publicKey, message))) % ED_ORDER;
  const a = ED_POINT.fromBytes(publicKey, false);
  const check = ED_POINT.BASE.multiplyUnsafe(s).subtract(a.multiplyUnsafe(k));
  return equalBytes(check.toBytes(), r);
}

/** ML-KEM-768 through noble; shared by the native backend until a runtime offers it. */
export const nobleMlKem = {
  keygen(seed?: Uint8Array): MlKemKeyPair {
    if (seed !== undefined) assertBytes(seed, MLKEM768_KEYGEN_SEED_BYTES, 'ml-kem keygen seed');
    const s = seed ?? systemRandom(MLKEM768_KEYGEN_SEED_BYTES);
    const { publicKey, secretKey } = ml_kem768.keygen(s);
    return { publicKey, secretKey };
  },

  encapsulate(publicKey: Uint8Array, randomness?: Uint8Array): MlKemEncapsulation {
    assertBytes(publicKey, MLKEM768_PUBLIC_KEY_BYTES, 'ml-kem public key', 'INVALID_KEY');
    if (randomness !== undefined) {
      assertBytes(randomness, MLKEM768_ENCAPS_RANDOMNESS_BYTES, 'ml-kem encapsulation randomness');
    }
    const m = randomness ?? systemRandom(MLKEM768_ENCAPS_RANDOMNESS_BYTES);
    try {
      const { cipherText, sharedSecret } = ml_kem768.encapsulate(publicKey, m);
      return { cipherText, sharedSecret };
    } catch (cause) {
      // FIPS 203 §7.2 modulus check: coefficients >= q mean the key was not produced by
      // KeyGen (or was tampered with).
      throw new CryptoError('INVALID_KEY', 'ml-kem public key failed the modulus check', { cause });
    }
  },

  decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array {
    assertBytes(cipherText, MLKEM768_CIPHERTEXT_BYTES, 'ml-kem ciphertext');
    assertBytes(secretKey, MLKEM768_SECRET_KEY_BYTES, 'ml-kem secret key', 'INVALID_KEY');
    try {
      // A well-sized but forged ciphertext does not throw: FIPS 203 implicit rejection
      // returns a pseudorandom key, and the AEAD layer above fails instead.
      return ml_kem768.decapsulate(cipherText, secretKey);
    } catch (cause) {
      // FIPS 203 §7.3 hash check: H(ek) stored in dk does not match ek.
      throw new CryptoError('INVALID_KEY', 'ml-kem secret key failed the hash check', { cause });
    }
  },
};

/*
 * Prepared keys (backend.ts). noble has no import step to save, so these hold a copy of
 * the bytes and call the raw methods; only the derived public keys are kept.
 */

class NobleX25519PrivateKey extends PreparedSecret implements PreparedX25519PrivateKey {
  readonly #secret: Uint8Array;
  #publicKey: Uint8Array | undefined;

  constructor(secret: Uint8Array) {
    super('X25519 private key');
    this.#secret = copyBytes(secret);
  }

  publicKey(): Uint8Array {
    this.#publicKey ??= nobleBackend.x25519PublicKey(this.#secret);
    return this.#publicKey.slice();
  }

  agree(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array {
    return nobleBackend.x25519(this.#secret, theirPublicKey instanceof Uint8Array ? theirPublicKey : theirPublicKey.bytes);
  }
}

class NobleX25519PublicKey implements PreparedX25519PublicKey {
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = copyBytes(bytes);
  }

  get bytes(): Uint8Array {
    return this.#bytes.slice();
  }
}

class NobleEd25519PrivateKey extends PreparedSecret implements PreparedEd25519PrivateKey {
  readonly #seed: Uint8Array;
  #publicKey: Uint8Array | undefined;

  constructor(seed: Uint8Array) {
    super('Ed25519 private key');
    this.#seed = copyBytes(seed);
  }

  publicKey(): Uint8Array {
    this.#publicKey ??= nobleBackend.ed25519PublicKey(this.#seed);
    return this.#publicKey.slice();
  }

  sign(message: Uint8Array): Uint8Array {
    return nobleBackend.ed25519Sign(this.#seed, message);
  }
}

class NobleEd25519PublicKey implements PreparedEd25519PublicKey {
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = copyBytes(bytes);
  }

  get bytes(): Uint8Array {
    return this.#bytes.slice();
  }

  verify(signature: Uint8Array, message: Uint8Array): boolean {
    return nobleBackend.ed25519Verify(signature, message, this.#bytes);
  }
}

export const nobleBackend: CryptoBackend = {
  name: 'noble',

  sha256(data) {
    assertAnyBytes(data, 'sha256 input');
    return sha256(data);
  },

  sha512(data) {
    assertAnyBytes(data, 'sha512 input');
    return sha512(data);
  },

  hmacSha256(key, data) {
    assertAnyBytes(key, 'hmac key');
    assertAnyBytes(data, 'hmac input');
    return hmac(sha256, key, data);
  },

  hkdfSha256(ikm, salt, info, length) {
    assertAnyBytes(ikm, 'hkdf ikm');
    assertAnyBytes(salt, 'hkdf salt');
    assertAnyBytes(info, 'hkdf info');
    assertHkdfLength(length);
    return hkdf(sha256, ikm, salt, info, length);
  },

  x25519PublicKey(privateKey) {
    assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
    return x25519.getPublicKey(privateKey);
  },

  x25519(privateKey, publicKey) {
    assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
    assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
    let shared: Uint8Array;
    try {
      // noble rejects the low-order points before running the ladder (no timing oracle on
      // our secret); those are exactly the inputs that would give an all-zero output.
      shared = x25519.getSharedSecret(privateKey, publicKey);
    } catch (cause) {
      throw lowOrderPoint(cause);
    }
    assertNonZeroSharedSecret(shared);
    return shared;
  },

  ed25519PublicKey(seed) {
    assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
    return ed25519.getPublicKey(seed);
  },

  ed25519Sign(seed, message) {
    assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
    assertAnyBytes(message, 'ed25519 message');
    return ed25519.sign(message, seed);
  },

  ed25519Verify(signature, message, publicKey) {
    if (!(signature instanceof Uint8Array) || signature.length !== ED25519_SIGNATURE_BYTES) return false;
    if (!(message instanceof Uint8Array)) return false;
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_BYTES) return false;
    try {
      // zip215: false = RFC 8032 strict decoding and small-order A rejected; the extra
      // cofactorless check makes the verdict identical to the native backend's on every
      // input (see ed25519-policy.ts).
      return (
        ed25519.verify(signature, message, publicKey, { zip215: false }) &&
        cofactorlessEquationHolds(signature, message, publicKey)
      );
    } catch {
      return false;
    }
  },

  x25519PrepareKey(privateKey) {
    assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
    return new NobleX25519PrivateKey(privateKey);
  },

  x25519PreparePublicKey(publicKey) {
    assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
    return new NobleX25519PublicKey(publicKey);
  },

  ed25519PrepareKey(seed) {
    assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
    return new NobleEd25519PrivateKey(seed);
  },

  ed25519PreparePublicKey(publicKey) {
    assertBytes(publicKey, ED25519_PUBLIC_KEY_BYTES, 'ed25519 public key', 'INVALID_KEY');
    return new NobleEd25519PublicKey(publicKey);
  },

  aeadSeal(key, nonce, plaintext, aad) {
    assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
    assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
    assertAnyBytes(plaintext, 'aead plaintext');
    assertAnyBytes(aad, 'aead associated data');
    return chacha20poly1305(key, nonce, aad).encrypt(plaintext);
  },

  aeadOpen(key, nonce, sealed, aad) {
    assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
    assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
    assertAnyBytes(sealed, 'aead ciphertext');
    assertAnyBytes(aad, 'aead associated data');
    // Too short to hold a tag is an authentication failure like any other.
    if (sealed.length < AEAD_TAG_BYTES) throw decryptFailed();
    try {
      return chacha20poly1305(key, nonce, aad).decrypt(sealed);
    } catch {
      // The cause is dropped on purpose: it could say which check failed.
      throw decryptFailed();
    }
  },

  mlkemKeygen: (seed) => nobleMlKem.keygen(seed),
  mlkemEncapsulate: (publicKey, randomness) => nobleMlKem.encapsulate(publicKey, randomness),
  mlkemDecapsulate: (cipherText, secretKey) => nobleMlKem.decapsulate(cipherText, secretKey),
};
