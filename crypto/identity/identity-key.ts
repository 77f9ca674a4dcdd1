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
import type {
  CryptoBackend,
  PreparedEd25519PublicKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
} from '../primitives/backend.js';
import { assertBytes, copyBytes, equalBytes, toHex } from '../primitives/bytes.js';
import { isRejectedEd25519PublicKey } from '../primitives/ed25519-policy.js';
import { defaultBackend } from '../primitives/index.js';
import { systemRandom, type RandomSource } from '../primitives/random.js';
import { ED25519_PUBLIC_KEY_BYTES } from '../primitives/sizes.js';
import { identityDhPrivateKey } from './identity-dh.js';
import { signatureTranscript } from './signature-context.js';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** A device's public identity key (32-byte Ed25519 public key). */
export class IdentityKey {
  readonly #bytes: Uint8Array;
  readonly #backend: CryptoBackend;
  /** Prepared on first verification; a key verifies many signatures. */
  #prepared: PreparedEd25519PublicKey | undefined;

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
    return new IdentityKey(copyBytes(bytes), backend);
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
    this.#prepared ??= this.#backend.ed25519PreparePublicKey(this.#bytes);
    return this.#prepared.verify(signature, message);
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
  readonly #backend: CryptoBackend;
  /** The X25519 form of the key (identity-dh.ts), prepared on first use. */
  #dh: PreparedX25519PrivateKey | undefined;
  readonly publicKey: IdentityKey;

  private constructor(key: Ed25519PrivateKey, backend: CryptoBackend) {
    this.#key = key;
    this.#backend = backend;
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

  /**
   * X25519 of this identity's X25519 form (identity-dh.ts) with a peer's X25519 key: the
   * handshake's DH1 for an initiator, DH2 for a responder. Throws INVALID_KEY for a
   * low-order key.
   */
  agreeX25519(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array {
    if (this.#dh === undefined) {
      const seed = this.#key.exportSeed();
      const scalar = identityDhPrivateKey(this.#backend, seed);
      seed.fill(0);
      this.#dh = this.#backend.x25519PrepareKey(scalar);
      scalar.fill(0);
    }
    return this.#dh.agree(theirPublicKey);
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
