/**
 * Private-key wrappers that never reveal their secret bytes by accident.
 *
 * The secret lives in an ES private field, which JSON.stringify, util.inspect and
 * object spreading never walk; toString(), toJSON() and the Node inspect hook print only
 * the type and a fingerprint of the public key. Getting the secret out takes an explicit
 * call whose name says so (`exportSecret`, `exportSeed`), for the app's key store.
 *
 * Each wrapper copies its input, so later changes to the caller's buffer cannot change
 * the key, and carries the backend it was created with. The X25519 and Ed25519 wrappers
 * also hold their key prepared for that backend (primitives/backend.ts), made once in
 * the constructor, which needs the public key anyway: later agreements and signatures
 * skip the per-call import. It is private to the wrapper and goes with it.
 */
import type {
  CryptoBackend,
  PreparedEd25519PrivateKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
} from './primitives/backend.js';
import { assertBytes, copyBytes, toHex } from './primitives/bytes.js';
import { defaultBackend } from './primitives/index.js';
import { systemRandom, type RandomSource } from './primitives/random.js';
import {
  ED25519_SEED_BYTES,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_KEYGEN_SEED_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
  X25519_PRIVATE_KEY_BYTES,
} from './primitives/sizes.js';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** Bytes of SHA-256(public key) shown in printed forms: enough to tell keys apart in logs. */
const FINGERPRINT_BYTES = 8;

/** Hex of the first 8 bytes of SHA-256(publicKey). Public data only. */
export function keyFingerprint(publicKey: Uint8Array, backend: CryptoBackend = defaultBackend): string {
  return toHex(backend.sha256(publicKey).subarray(0, FINGERPRINT_BYTES));
}

/** The printed form shared by every secret-holding type. */
export interface RedactedKey {
  readonly type: string;
  readonly fingerprint: string;
}

abstract class SecretKeyBase {
  readonly publicKey: Uint8Array;
  protected readonly backend: CryptoBackend;
  #fingerprint: string | undefined;

  protected constructor(publicKey: Uint8Array, backend: CryptoBackend) {
    this.publicKey = publicKey;
    this.backend = backend;
  }

  protected abstract get typeName(): string;

  /** Hex of the first 8 bytes of SHA-256(public key). */
  get fingerprint(): string {
    this.#fingerprint ??= keyFingerprint(this.publicKey, this.backend);
    return this.#fingerprint;
  }

  toString(): string {
    return `${this.typeName}(fingerprint=${this.fingerprint})`;
  }

  toJSON(): RedactedKey {
    return { type: this.typeName, fingerprint: this.fingerprint };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** An X25519 private key (RFC 7748) with its public key. */
export class X25519PrivateKey extends SecretKeyBase {
  readonly #secret: Uint8Array;
  readonly #prepared: PreparedX25519PrivateKey;

  private constructor(secret: Uint8Array, backend: CryptoBackend) {
    const prepared = backend.x25519PrepareKey(secret);
    super(prepared.publicKey(), backend);
    this.#secret = secret;
    this.#prepared = prepared;
  }

  protected get typeName(): string {
    return 'X25519PrivateKey';
  }

  static generate(random: RandomSource = systemRandom, backend: CryptoBackend = defaultBackend): X25519PrivateKey {
    return new X25519PrivateKey(random(X25519_PRIVATE_KEY_BYTES), backend);
  }

  /** From 32 stored bytes (copied). */
  static fromBytes(secret: Uint8Array, backend: CryptoBackend = defaultBackend): X25519PrivateKey {
    assertBytes(secret, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
    return new X25519PrivateKey(copyBytes(secret), backend);
  }

  /**
   * X25519 with a peer's public key, raw or prepared (when it takes part in several
   * agreements). Throws INVALID_KEY for a low-order key.
   */
  agree(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array {
    return this.#prepared.agree(theirPublicKey);
  }

  /** A copy of the 32 secret bytes, for the key store only. */
  exportSecret(): Uint8Array {
    return this.#secret.slice();
  }
}

/** An Ed25519 signing key, held as its 32-byte RFC 8032 seed. */
export class Ed25519PrivateKey extends SecretKeyBase {
  readonly #seed: Uint8Array;
  readonly #prepared: PreparedEd25519PrivateKey;

  private constructor(seed: Uint8Array, backend: CryptoBackend) {
    const prepared = backend.ed25519PrepareKey(seed);
    super(prepared.publicKey(), backend);
    this.#seed = seed;
    this.#prepared = prepared;
  }

  protected get typeName(): string {
    return 'Ed25519PrivateKey';
  }

  static generate(random: RandomSource = systemRandom, backend: CryptoBackend = defaultBackend): Ed25519PrivateKey {
    return new Ed25519PrivateKey(random(ED25519_SEED_BYTES), backend);
  }

  /** From a stored 32-byte seed (copied). */
  static fromSeed(seed: Uint8Array, backend: CryptoBackend = defaultBackend): Ed25519PrivateKey {
    assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
    return new Ed25519PrivateKey(copyBytes(seed), backend);
  }

  /** Raw Ed25519 signature over `message` (64 bytes). */
  sign(message: Uint8Array): Uint8Array {
    return this.#prepared.sign(message);
  }

  /** A copy of the 32-byte seed, for the key store only. */
  exportSeed(): Uint8Array {
    return this.#seed.slice();
  }
}

/** An ML-KEM-768 decapsulation key (FIPS 203) with its encapsulation key. */
export class MlKem768PrivateKey extends SecretKeyBase {
  readonly #secret: Uint8Array;

  private constructor(publicKey: Uint8Array, secret: Uint8Array, backend: CryptoBackend) {
    super(publicKey, backend);
    this.#secret = secret;
  }

  protected get typeName(): string {
    return 'MlKem768PrivateKey';
  }

  static generate(random: RandomSource = systemRandom, backend: CryptoBackend = defaultBackend): MlKem768PrivateKey {
    return MlKem768PrivateKey.fromSeed(random(MLKEM768_KEYGEN_SEED_BYTES), backend);
  }

  /** Deterministic keygen from the 64-byte FIPS 203 seed (d || z). */
  static fromSeed(seed: Uint8Array, backend: CryptoBackend = defaultBackend): MlKem768PrivateKey {
    const { publicKey, secretKey } = backend.mlkemKeygen(seed);
    return new MlKem768PrivateKey(publicKey, secretKey, backend);
  }

  /**
   * From a stored 2400-byte decapsulation key (copied). The encapsulation key is the
   * slice FIPS 203 embeds in it; one trial decapsulation runs the §7.3 hash check, so a
   * corrupted key is refused here (INVALID_KEY) rather than at first use.
   */
  static fromBytes(secretKey: Uint8Array, backend: CryptoBackend = defaultBackend): MlKem768PrivateKey {
    assertBytes(secretKey, MLKEM768_SECRET_KEY_BYTES, 'ml-kem secret key', 'INVALID_KEY');
    const copy = copyBytes(secretKey);
    backend.mlkemDecapsulate(new Uint8Array(MLKEM768_CIPHERTEXT_BYTES), copy);
    // dk = dk_PKE (384*k bytes) || ek || H(ek) || z, with k = 3 for ML-KEM-768.
    const ekStart = MLKEM768_SECRET_KEY_BYTES - MLKEM768_PUBLIC_KEY_BYTES - 64;
    const publicKey = copy.slice(ekStart, ekStart + MLKEM768_PUBLIC_KEY_BYTES);
    return new MlKem768PrivateKey(publicKey, copy, backend);
  }

  /** The 32-byte shared secret. A forged ciphertext yields a pseudorandom key (FIPS 203). */
  decapsulate(cipherText: Uint8Array): Uint8Array {
    return this.backend.mlkemDecapsulate(cipherText, this.#secret);
  }

  /** A copy of the 2400-byte decapsulation key, for the key store only. */
  exportSecret(): Uint8Array {
    return this.#secret.slice();
  }
}
