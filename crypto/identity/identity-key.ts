/**
 * Device identity: one Ed25519 key pair per device. The private half signs everything
 * the device publishes (prekeys, registration, connection challenges, receipts); the
 * public half is what peers pin on first use and compare through safety numbers.
 *
 * `IdentityKeyPair` (ours) and `IdentityKey` (anyone's public key) are different types,
 * so a remote key can never be used where signing is needed.
 */
import { CryptoError } from '../errors.js';
import { Ed25519PrivateKey, keyFingerprint } from '../keys.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { assertBytes, equalBytes, toHex } from '../primitives/bytes.js';
import { isRejectedEd25519PublicKey } from '../primitives/ed25519-policy.js';
import { defaultBackend } from '../primitives/index.js';
import { systemRandom, type RandomSource } from '../primitives/random.js';
import { ED25519_PUBLIC_KEY_BYTES } from '../primitives/sizes.js';
import { signatureTranscript } from './signature-context.js';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** A device's public identity key (32-byte Ed25519 public key). */
export class IdentityKey {
  readonly #bytes: Uint8Array;
  readonly #backend: CryptoBackend;

  private constructor(bytes: Uint8Array, backend: CryptoBackend) {
    this.#bytes = bytes;
    this.#backend = backend;
  }

  /**
   * From 32 bytes (copied). Throws INVALID_KEY on a wrong length, and for a small-order
   * or non-canonical key: no signature by it would ever verify (ed25519-policy.ts), so a
   * directory serving one is refused when the key is first seen, not at first use.
   */
  static fromBytes(bytes: Uint8Array, backend: CryptoBackend = defaultBackend): IdentityKey {
    assertBytes(bytes, ED25519_PUBLIC_KEY_BYTES, 'identity key', 'INVALID_KEY');
    if (isRejectedEd25519PublicKey(bytes)) {
      throw new CryptoError('INVALID_KEY', 'identity key is a small-order or non-canonical point');
    }
    return new IdentityKey(bytes.slice(), backend);
  }

  /** A copy of the 32 public bytes. */
  get bytes(): Uint8Array {
    return this.#bytes.slice();
  }

  /** Hex of the first 8 bytes of SHA-256(key), for logs. */
  get fingerprint(): string {
    return keyFingerprint(this.#bytes, this.#backend);
  }

  equals(other: IdentityKey | Uint8Array): boolean {
    return equalBytes(this.#bytes, other instanceof IdentityKey ? other.#bytes : other);
  }

  /** Raw Ed25519 verification (RFC 8032, strict). Never throws. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    return this.#backend.ed25519Verify(signature, message, this.#bytes);
  }

  /** Verifies a signature made by `IdentityKeyPair.signWithContext(label, body)`. */
  verifyWithContext(label: string, body: Uint8Array, signature: Uint8Array): boolean {
    return this.verify(signatureTranscript(label, body), signature);
  }

  toString(): string {
    return `IdentityKey(${toHex(this.#bytes)})`;
  }

  toJSON(): { type: 'IdentityKey'; key: string } {
    return { type: 'IdentityKey', key: toHex(this.#bytes) };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** This device's identity key pair. Prints as its public fingerprint only. */
export class IdentityKeyPair {
  readonly #key: Ed25519PrivateKey;
  readonly publicKey: IdentityKey;

  private constructor(key: Ed25519PrivateKey, backend: CryptoBackend) {
    this.#key = key;
    this.publicKey = IdentityKey.fromBytes(key.publicKey, backend);
  }

  static generate(random: RandomSource = systemRandom, backend: CryptoBackend = defaultBackend): IdentityKeyPair {
    return new IdentityKeyPair(Ed25519PrivateKey.generate(random, backend), backend);
  }

  /** From the stored 32-byte seed (copied). */
  static fromSeed(seed: Uint8Array, backend: CryptoBackend = defaultBackend): IdentityKeyPair {
    return new IdentityKeyPair(Ed25519PrivateKey.fromSeed(seed, backend), backend);
  }

  /**
   * Raw Ed25519 signature. Only for messages that are already domain-separated: a
   * `hermetic/v1/<label>\0` transcript built elsewhere, or an external format such as a
   * JWS signing input. For anything else use `signWithContext`.
   */
  sign(message: Uint8Array): Uint8Array {
    return this.#key.sign(message);
  }

  /** Signs `"hermetic/v1/" || label || 0x00 || body` (see signature-context.ts). */
  signWithContext(label: string, body: Uint8Array): Uint8Array {
    return this.#key.sign(signatureTranscript(label, body));
  }

  /** A copy of the 32-byte seed, for the device's key store only. */
  exportSeed(): Uint8Array {
    return this.#key.exportSeed();
  }

  toString(): string {
    return `IdentityKeyPair(fingerprint=${this.publicKey.fingerprint})`;
  }

  toJSON(): { type: 'IdentityKeyPair'; fingerprint: string } {
    return { type: 'IdentityKeyPair', fingerprint: this.publicKey.fingerprint };
  }

  [INSPECT](): string {
    return this.toString();
  }
}
