/**
 * The WebAssembly backend: libsodium through its official JavaScript build
 * (libsodium-wrappers-sumo), for every primitive of the interface including ML-KEM-768.
 * It is the fastest implementation in browsers for everything, and in Node for ML-KEM
 * (which Node 20 lacks), HMAC, HKDF and the AEAD; select.ts picks it per primitive.
 *
 * Its WebAssembly instantiates asynchronously, so this backend exists only after
 * `loadSodiumBackend()` resolves; until then select.ts serves each primitive from the
 * next-best backend. Loading imports the package dynamically (bundlers put it in its own
 * chunk or behind a promise), runs known-answer tests, and refuses the backend if any of
 * them fails.
 *
 * Results, errors and verdicts are those of the other backends, byte for byte:
 *  - inputs are length-checked here with the same labelled asserts before libsodium sees
 *    them, so errors carry our stable codes and messages, never libsodium's;
 *  - Ed25519 verification follows ed25519-policy.ts. libsodium checks canonical A and S,
 *    refuses small-order A and evaluates the cofactorless equation like the policy, but
 *    also refuses a small-order R, which the policy accepts when the equation holds (only
 *    a deliberately crafted signature has one). Signatures whose R is small-order are
 *    therefore verified by noble, which implements the policy exactly.
 *  - ML-KEM-768: libsodium's seed keygen, deterministic encapsulation and decapsulation
 *    are FIPS 203's KeyGen_internal(d, z), Encaps_internal(ek, m) and Decaps; the input
 *    checks of FIPS 203 §7.2 (modulus check of ek) and §7.3 (hash check of dk) are done
 *    here, as noble does them, so a malformed key is refused the same way.
 *  - randomness comes from random.ts (the one source of crypto/), not from libsodium.
 *  - HKDF-SHA256 is RFC 5869 over libsodium's HMAC-SHA256 (the wrapper does not expose
 *    libsodium's own HKDF).
 */
import type * as SodiumModule from 'libsodium-wrappers-sumo';
import { CryptoError } from '../errors.js';
import type {
  CryptoBackend,
  PreparedEd25519PrivateKey,
  PreparedEd25519PublicKey,
  PreparedX25519PrivateKey,
  PreparedX25519PublicKey,
} from './backend.js';
import { assertAnyBytes, assertBytes, copyBytes, equalBytes, fromHex } from './bytes.js';
import { SMALL_ORDER_ED25519_ENCODINGS, isNonCanonicalEd25519Y, isRejectedEd25519PublicKey } from './ed25519-policy.js';
import { hkdfFromHmac } from './hkdf.js';
import { assertHkdfLength, assertNonZeroSharedSecret, decryptFailed, lowOrderPoint, nobleBackend } from './noble.js';
import { PreparedSecret } from './prepared.js';
import { systemRandom } from './random.js';
import {
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_ENCAPS_RANDOMNESS_BYTES,
  MLKEM768_KEYGEN_SEED_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
  MLKEM768_SHARED_SECRET_BYTES,
  X25519_PRIVATE_KEY_BYTES,
  X25519_PUBLIC_KEY_BYTES,
} from './sizes.js';

type Sodium = typeof SodiumModule;

/** FIPS 203 ML-KEM-768: q, and where ek's 12-bit coefficients end (k * 384 bytes). */
const MLKEM_Q = 3329;
const MLKEM768_EK_POLY_BYTES = 1152;
/** dk = dk_PKE (1152) || ek (1184) || H(ek) (32) || z (32). */
const MLKEM768_DK_EK_OFFSET = 1152;
const MLKEM768_DK_HASH_OFFSET = MLKEM768_DK_EK_OFFSET + MLKEM768_PUBLIC_KEY_BYTES;

/** FIPS 203 §7.2: every 12-bit coefficient of ek's polynomial part is < q. Public data. */
function mlkemModulusCheck(ek: Uint8Array): boolean {
  for (let i = 0; i < MLKEM768_EK_POLY_BYTES; i += 3) {
    const b0 = ek[i] as number;
    const b1 = ek[i + 1] as number;
    const b2 = ek[i + 2] as number;
    if ((b0 | ((b1 & 0x0f) << 8)) >= MLKEM_Q || ((b1 >> 4) | (b2 << 4)) >= MLKEM_Q) return false;
  }
  return true;
}

/** FIPS 203 §7.3: H(ek) (SHA3-256) stored in dk matches the ek stored in dk. */
function mlkemHashCheck(s: Sodium, dk: Uint8Array): boolean {
  const ek = dk.subarray(MLKEM768_DK_EK_OFFSET, MLKEM768_DK_HASH_OFFSET);
  return equalBytes(s.crypto_hash_sha3256(ek), dk.subarray(MLKEM768_DK_HASH_OFFSET, MLKEM768_DK_HASH_OFFSET + 32));
}

/** R (the first half of a signature) is small-order or a non-canonical encoding: libsodium refuses it early. */
function hasSmallOrderR(signature: Uint8Array): boolean {
  const r = signature.subarray(0, 32);
  if (isNonCanonicalEd25519Y(r)) return true;
  return SMALL_ORDER_ED25519_ENCODINGS.some((e) => equalBytes(e, r));
}

/** Builds the backend on an initialised libsodium. Internal: use `loadSodiumBackend`. */
export function createSodiumBackend(s: Sodium): CryptoBackend {
  const hmac = (key: Uint8Array, data: Uint8Array): Uint8Array => {
    // The one-shot form takes exactly 32-byte keys; the streaming form any length.
    if (key.length === s.crypto_auth_hmacsha256_KEYBYTES) return s.crypto_auth_hmacsha256(data, key);
    const state = s.crypto_auth_hmacsha256_init(key);
    s.crypto_auth_hmacsha256_update(state, data);
    return s.crypto_auth_hmacsha256_final(state);
  };

  function agree(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
    let shared: Uint8Array;
    try {
      // libsodium refuses the low-order points and an all-zero result ("weak public key").
      shared = s.crypto_scalarmult(privateKey, publicKey);
    } catch (cause) {
      throw lowOrderPoint(cause);
    }
    assertNonZeroSharedSecret(shared);
    return shared;
  }

  /** The 64-byte libsodium signing key (seed || public key) of a seed. */
  const signingKey = (seed: Uint8Array): Uint8Array => s.crypto_sign_seed_keypair(seed).privateKey;

  function isSignatureInput(signature: unknown, message: unknown): signature is Uint8Array {
    return signature instanceof Uint8Array && signature.length === ED25519_SIGNATURE_BYTES && message instanceof Uint8Array;
  }

  /** The policy's verdict for a public key already checked against isRejectedEd25519PublicKey. */
  function verifyAccepted(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
    // See the header: noble decides where libsodium's extra rule on R would apply.
    if (hasSmallOrderR(signature)) return nobleBackend.ed25519Verify(signature, message, publicKey);
    try {
      return s.crypto_sign_verify_detached(signature, message, publicKey);
    } catch {
      return false;
    }
  }

  class SodiumX25519PrivateKey extends PreparedSecret implements PreparedX25519PrivateKey {
    readonly #secret: Uint8Array;
    #publicKey: Uint8Array | undefined;

    constructor(secret: Uint8Array) {
      super('X25519 private key');
      this.#secret = copyBytes(secret);
    }

    publicKey(): Uint8Array {
      this.#publicKey ??= s.crypto_scalarmult_base(this.#secret);
      return this.#publicKey.slice();
    }

    agree(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array {
      const raw = theirPublicKey instanceof Uint8Array ? theirPublicKey : theirPublicKey.bytes;
      assertBytes(raw, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
      return agree(this.#secret, raw);
    }
  }

  class SodiumX25519PublicKey implements PreparedX25519PublicKey {
    readonly #bytes: Uint8Array;

    constructor(bytes: Uint8Array) {
      this.#bytes = copyBytes(bytes);
    }

    get bytes(): Uint8Array {
      return this.#bytes.slice();
    }
  }

  class SodiumEd25519PrivateKey extends PreparedSecret implements PreparedEd25519PrivateKey {
    /** libsodium's signing key: the seed and the public key, derived once. */
    readonly #key: Uint8Array;

    constructor(seed: Uint8Array) {
      super('Ed25519 private key');
      this.#key = signingKey(seed);
    }

    publicKey(): Uint8Array {
      return this.#key.slice(ED25519_SEED_BYTES);
    }

    sign(message: Uint8Array): Uint8Array {
      assertAnyBytes(message, 'ed25519 message');
      return s.crypto_sign_detached(message, this.#key);
    }
  }

  class SodiumEd25519PublicKey implements PreparedEd25519PublicKey {
    readonly #bytes: Uint8Array;
    readonly #rejected: boolean;

    constructor(bytes: Uint8Array) {
      this.#bytes = copyBytes(bytes);
      this.#rejected = isRejectedEd25519PublicKey(this.#bytes);
    }

    get bytes(): Uint8Array {
      return this.#bytes.slice();
    }

    verify(signature: Uint8Array, message: Uint8Array): boolean {
      if (this.#rejected || !isSignatureInput(signature, message)) return false;
      return verifyAccepted(signature, message, this.#bytes);
    }
  }

  return {
    name: 'sodium',

    sha256(data) {
      assertAnyBytes(data, 'sha256 input');
      return s.crypto_hash_sha256(data);
    },

    sha512(data) {
      assertAnyBytes(data, 'sha512 input');
      return s.crypto_hash_sha512(data);
    },

    hmacSha256(key, data) {
      assertAnyBytes(key, 'hmac key');
      assertAnyBytes(data, 'hmac input');
      return hmac(key, data);
    },

    hkdfSha256(ikm, salt, info, length) {
      assertAnyBytes(ikm, 'hkdf ikm');
      assertAnyBytes(salt, 'hkdf salt');
      assertAnyBytes(info, 'hkdf info');
      assertHkdfLength(length);
      return hkdfFromHmac(hmac, ikm, salt, info, length);
    },

    x25519PublicKey(privateKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      return s.crypto_scalarmult_base(privateKey);
    },

    x25519(privateKey, publicKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
      return agree(privateKey, publicKey);
    },

    ed25519PublicKey(seed) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      return s.crypto_sign_seed_keypair(seed).publicKey;
    },

    ed25519Sign(seed, message) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      assertAnyBytes(message, 'ed25519 message');
      return s.crypto_sign_detached(message, signingKey(seed));
    },

    ed25519Verify(signature, message, publicKey) {
      if (!isSignatureInput(signature, message)) return false;
      if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_BYTES) return false;
      if (isRejectedEd25519PublicKey(publicKey)) return false;
      return verifyAccepted(signature, message, publicKey);
    },

    x25519PrepareKey(privateKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      return new SodiumX25519PrivateKey(privateKey);
    },

    x25519PreparePublicKey(publicKey) {
      assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
      return new SodiumX25519PublicKey(publicKey);
    },

    ed25519PrepareKey(seed) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      return new SodiumEd25519PrivateKey(seed);
    },

    ed25519PreparePublicKey(publicKey) {
      assertBytes(publicKey, ED25519_PUBLIC_KEY_BYTES, 'ed25519 public key', 'INVALID_KEY');
      return new SodiumEd25519PublicKey(publicKey);
    },

    aeadSeal(key, nonce, plaintext, aad) {
      assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
      assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
      assertAnyBytes(plaintext, 'aead plaintext');
      assertAnyBytes(aad, 'aead associated data');
      return s.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, null, nonce, key);
    },

    aeadOpen(key, nonce, sealed, aad) {
      assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
      assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
      assertAnyBytes(sealed, 'aead ciphertext');
      assertAnyBytes(aad, 'aead associated data');
      if (sealed.length < AEAD_TAG_BYTES) throw decryptFailed();
      try {
        return s.crypto_aead_chacha20poly1305_ietf_decrypt(null, sealed, aad, nonce, key);
      } catch {
        // The cause is dropped on purpose: it could say which check failed.
        throw decryptFailed();
      }
    },

    mlkemKeygen(seed) {
      if (seed !== undefined) assertBytes(seed, MLKEM768_KEYGEN_SEED_BYTES, 'ml-kem keygen seed');
      const { publicKey, privateKey } = s.crypto_kem_mlkem768_seed_keypair(seed ?? systemRandom(MLKEM768_KEYGEN_SEED_BYTES));
      return { publicKey, secretKey: privateKey };
    },

    mlkemEncapsulate(publicKey, randomness) {
      assertBytes(publicKey, MLKEM768_PUBLIC_KEY_BYTES, 'ml-kem public key', 'INVALID_KEY');
      if (randomness !== undefined) {
        assertBytes(randomness, MLKEM768_ENCAPS_RANDOMNESS_BYTES, 'ml-kem encapsulation randomness');
      }
      if (!mlkemModulusCheck(publicKey)) {
        throw new CryptoError('INVALID_KEY', 'ml-kem public key failed the modulus check');
      }
      const m = randomness ?? systemRandom(MLKEM768_ENCAPS_RANDOMNESS_BYTES);
      const { ciphertext, sharedSecret } = s.crypto_kem_mlkem768_enc_deterministic(publicKey, m);
      return { cipherText: ciphertext, sharedSecret };
    },

    mlkemDecapsulate(cipherText, secretKey) {
      assertBytes(cipherText, MLKEM768_CIPHERTEXT_BYTES, 'ml-kem ciphertext');
      assertBytes(secretKey, MLKEM768_SECRET_KEY_BYTES, 'ml-kem secret key', 'INVALID_KEY');
      if (!mlkemHashCheck(s, secretKey)) throw new CryptoError('INVALID_KEY', 'ml-kem secret key failed the hash check');
      // A well-sized but forged ciphertext gives FIPS 203's implicit-rejection key.
      return s.crypto_kem_mlkem768_dec(cipherText, secretKey);
    },
  };
}

// Known answers checked once at load: RFC 8032 §7.1 TEST 2, RFC 7748 §6.1, RFC 8439
// §2.8.2, and an ML-KEM-768 round trip from a fixed seed against the SHA-256 of the
// public key FIPS 203 KeyGen gives (the same as noble's).
const KAT = {
  edSeed: fromHex('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'),
  edPublic: fromHex('3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c'),
  edMessage: fromHex('72'),
  edSignature: fromHex(
    '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  ),
  xAlicePrivate: fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
  xBobPublic: fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f'),
  xShared: fromHex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'),
  mlkemSeed: Uint8Array.from({ length: MLKEM768_KEYGEN_SEED_BYTES }, (_, i) => i),
  mlkemPublicKeySha256: fromHex('0b7934c83125c788995e2ba6bd761e33046b3e40571be53e023309a29f398cc9'),
};

/** Throws with the first known answer the backend gets wrong. */
function selfTest(b: CryptoBackend): void {
  const fail = (what: string): never => {
    throw new CryptoError('INVALID_STATE', `libsodium failed its known-answer test: ${what}`);
  };
  if (!equalBytes(b.ed25519PublicKey(KAT.edSeed), KAT.edPublic)) fail('Ed25519 public key');
  if (!equalBytes(b.ed25519Sign(KAT.edSeed, KAT.edMessage), KAT.edSignature)) fail('Ed25519 signature');
  if (!b.ed25519Verify(KAT.edSignature, KAT.edMessage, KAT.edPublic)) fail('Ed25519 verification');
  if (!equalBytes(b.x25519(KAT.xAlicePrivate, KAT.xBobPublic), KAT.xShared)) fail('X25519');
  const kp = b.mlkemKeygen(KAT.mlkemSeed);
  if (!equalBytes(b.sha256(kp.publicKey), KAT.mlkemPublicKeySha256)) fail('ML-KEM-768 key generation');
  const { cipherText, sharedSecret } = b.mlkemEncapsulate(kp.publicKey, KAT.mlkemSeed.subarray(0, 32));
  if (sharedSecret.length !== MLKEM768_SHARED_SECRET_BYTES || !equalBytes(b.mlkemDecapsulate(cipherText, kp.secretKey), sharedSecret)) {
    fail('ML-KEM-768 round trip');
  }
}

/**
 * Imports and initialises libsodium and returns the backend, or rejects with the reason
 * (package missing, WebAssembly refused by the page's policy, known-answer test failed).
 */
export async function loadSodiumBackend(): Promise<CryptoBackend> {
  const mod = (await import('libsodium-wrappers-sumo')) as Sodium & { default?: Sodium };
  const sodium = mod.default ?? mod;
  await sodium.ready;
  const backend = createSodiumBackend(sodium);
  selfTest(backend);
  return backend;
}
