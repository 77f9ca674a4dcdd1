/**
 * The accelerated backend: Node's built-in crypto (OpenSSL) for X25519, Ed25519,
 * ChaCha20-Poly1305, HMAC, HKDF and SHA-2; ML-KEM through a pluggable provider that is
 * noble until the runtime offers one.
 *
 * crypto/ must load in browsers, so `node:crypto` is never imported statically: it is
 * fetched with `process.getBuiltinModule` (Node >= 20.16), and `nativeBackend` is
 * undefined wherever that is missing or the load-time self-test below fails.
 *
 * Per-call cost matters more than throughput here: a ratchet step on a 1 KiB message is
 * a handful of tiny HMAC/HKDF/AEAD calls plus at most one X25519, so the call shapes are
 * the cheapest measured ones (one-shot `hash`, `createHmac`, `hkdfSync`, one cipher
 * object per message). Nothing derived from a secret is cached between calls: a key used
 * repeatedly is imported once only when its owner asks for that explicitly, through the
 * prepared keys of backend.ts, and the KeyObject then belongs to that owner alone.
 *
 * Raw keys become KeyObjects one of two ways:
 *  - JWK (fast path, ~10x cheaper than DER under OpenSSL 3.0, whose DER decoder tries
 *    every registered decoder). For a private OKP key Node imports only `d` and lets
 *    OpenSSL derive the public half; `x` is type-checked but unused, so it is left empty
 *    rather than computed. That is an implementation detail, so it is verified once at
 *    load (known-answer test below): if a runtime ever used or validated `x`, the test
 *    fails and the DER path is used instead. A wrong public half would be dangerous for
 *    Ed25519 (it enters the signature hash), which is why the test signs.
 *  - DER (fallback): fixed PKCS#8 / SPKI prefixes (RFC 8410) followed by the raw key.
 */
import type * as NodeCrypto from 'node:crypto';
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
import { assertAnyBytes, assertBytes, equalBytes, fromBase64Url, fromHex, toBase64Url } from './bytes.js';
import { isRejectedEd25519PublicKey } from './ed25519-policy.js';
import {
  assertHkdfLength,
  assertNonZeroSharedSecret,
  decryptFailed,
  lowOrderPoint,
  nobleMlKem,
} from './noble.js';
import { PreparedSecret } from './prepared.js';
import {
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  SHA256_BYTES,
  X25519_PRIVATE_KEY_BYTES,
  X25519_PUBLIC_KEY_BYTES,
} from './sizes.js';

type NodeCryptoModule = typeof NodeCrypto;

/** Node's hkdfSync refuses longer `info` (documented limit of its OpenSSL binding). */
const NODE_HKDF_MAX_INFO_BYTES = 1024;
/** Up to two output blocks the HMAC form beats hkdfSync; at three they are even. */
const HKDF_BY_HMAC_MAX_BYTES = 2 * SHA256_BYTES;
type KeyObject = NodeCrypto.KeyObject;
type OkpCurve = 'Ed25519' | 'X25519';

/**
 * A source of ML-KEM-768. The native backend takes the runtime's implementation when one
 * exists (and passes the same vectors), noble otherwise.
 */
export interface MlKemProvider {
  keygen(seed?: Uint8Array): MlKemKeyPair;
  encapsulate(publicKey: Uint8Array, randomness?: Uint8Array): MlKemEncapsulation;
  decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array;
}

function loadNodeCrypto(): NodeCryptoModule | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    const mod = proc?.getBuiltinModule?.('node:crypto');
    return mod === undefined || mod === null ? undefined : (mod as NodeCryptoModule);
  } catch {
    return undefined;
  }
}

/** RFC 8410 §7 / §10.3: DER headers in front of a raw 32-byte OKP key. */
const PKCS8_PREFIX: Record<OkpCurve, Uint8Array> = {
  Ed25519: fromHex('302e020100300506032b657004220420'),
  X25519: fromHex('302e020100300506032b656e04220420'),
};
const SPKI_PREFIX: Record<OkpCurve, Uint8Array> = {
  Ed25519: fromHex('302a300506032b6570032100'),
  X25519: fromHex('302a300506032b656e032100'),
};

function withPrefix(prefix: Uint8Array, raw: Uint8Array): Uint8Array {
  const der = new Uint8Array(prefix.length + raw.length);
  der.set(prefix);
  der.set(raw, prefix.length);
  return der;
}

interface KeyImporter {
  privateKey(curve: OkpCurve, raw: Uint8Array): KeyObject;
  publicKey(curve: OkpCurve, raw: Uint8Array): KeyObject;
}

function jwkImporter(c: NodeCryptoModule): KeyImporter {
  return {
    privateKey: (crv, raw) => c.createPrivateKey({ key: { kty: 'OKP', crv, d: toBase64Url(raw), x: '' }, format: 'jwk' }),
    publicKey: (crv, raw) => c.createPublicKey({ key: { kty: 'OKP', crv, x: toBase64Url(raw) }, format: 'jwk' }),
  };
}

function derImporter(c: NodeCryptoModule): KeyImporter {
  // Node reads any ArrayBufferView here; its typings only name Buffer.
  return {
    privateKey: (crv, raw) =>
      c.createPrivateKey({ key: withPrefix(PKCS8_PREFIX[crv], raw) as Buffer, format: 'der', type: 'pkcs8' }),
    publicKey: (crv, raw) =>
      c.createPublicKey({ key: withPrefix(SPKI_PREFIX[crv], raw) as Buffer, format: 'der', type: 'spki' }),
  };
}

/** The raw 32-byte public key of an OKP KeyObject (private or public). */
function rawPublicKey(c: NodeCryptoModule, key: KeyObject): Uint8Array {
  const jwk = (key.type === 'private' ? c.createPublicKey(key) : key).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new CryptoError('INVALID_STATE', 'runtime exported a key without x');
  return fromBase64Url(jwk.x);
}

/** A plain Uint8Array view of a Node Buffer (Buffers have different slice semantics). */
function plain(buf: Uint8Array): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// Known answers checked once at load. RFC 8032 §7.1 TEST 1 and RFC 7748 §6.1 (Alice).
const KAT = {
  edSeed: fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'),
  edPublic: fromHex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'),
  edSigEmpty: fromHex(
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  ),
  xPrivate: fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
  xPublic: fromHex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'),
};

function importerPassesKat(c: NodeCryptoModule, imp: KeyImporter): boolean {
  try {
    const ed = imp.privateKey('Ed25519', KAT.edSeed);
    if (!equalBytes(rawPublicKey(c, ed), KAT.edPublic)) return false;
    if (!equalBytes(plain(c.sign(null, new Uint8Array(0), ed)), KAT.edSigEmpty)) return false;
    const edPub = imp.publicKey('Ed25519', KAT.edPublic);
    if (!c.verify(null, new Uint8Array(0), edPub, KAT.edSigEmpty)) return false;
    const x = imp.privateKey('X25519', KAT.xPrivate);
    if (!equalBytes(rawPublicKey(c, x), KAT.xPublic)) return false;
    return equalBytes(rawPublicKey(c, imp.publicKey('X25519', KAT.xPublic)), KAT.xPublic);
  } catch {
    return false;
  }
}

/** Which key-import path this runtime uses; exported for the benchmark and tests. */
export type KeyImportPath = 'jwk' | 'der';

/**
 * Builds a native backend on a given `node:crypto` module, or undefined if the runtime
 * lacks a primitive or fails the known-answer test. `keyImport` forces one import path
 * (tests use it to exercise the DER fallback). Internal: not re-exported by index.ts.
 */
export function createNativeBackend(
  c: NodeCryptoModule,
  mlkem: MlKemProvider,
  keyImport?: KeyImportPath,
): { backend: CryptoBackend; keyImport: KeyImportPath } | undefined {
  if (!c.getCiphers().includes('chacha20-poly1305')) return undefined;
  if (keyImport !== undefined) {
    const forced = keyImport === 'jwk' ? jwkImporter(c) : derImporter(c);
    return importerPassesKat(c, forced) ? { backend: buildBackend(c, mlkem, forced), keyImport } : undefined;
  }
  let importer = jwkImporter(c);
  let chosen: KeyImportPath = 'jwk';
  if (!importerPassesKat(c, importer)) {
    importer = derImporter(c);
    chosen = 'der';
    if (!importerPassesKat(c, importer)) return undefined;
  }
  return { backend: buildBackend(c, mlkem, importer), keyImport: chosen };
}

function buildBackend(c: NodeCryptoModule, mlkem: MlKemProvider, imp: KeyImporter): CryptoBackend {
  // `crypto.hash` (Node >= 20.12) skips the Hash object; createHash otherwise.
  const oneShot = typeof c.hash === 'function' ? c.hash : undefined;
  const digest = (alg: 'sha256' | 'sha512', data: Uint8Array): Uint8Array =>
    plain(oneShot !== undefined ? oneShot(alg, data, 'buffer') : c.createHash(alg).update(data).digest());

  /** X25519 of two imported keys. */
  function agreeKeys(privateKey: KeyObject, publicKey: KeyObject): Uint8Array {
    let shared: Uint8Array;
    try {
      // OpenSSL refuses to return an all-zero X25519 output (RFC 7748 §6.1).
      shared = plain(c.diffieHellman({ privateKey, publicKey }));
    } catch (cause) {
      throw lowOrderPoint(cause);
    }
    assertNonZeroSharedSecret(shared);
    return shared;
  }

  /**
   * The KeyObject of a peer's public key: the one already imported when it was prepared
   * by this backend, imported now otherwise (raw bytes, or another backend's key).
   */
  function x25519PublicKeyObject(theirs: Uint8Array | PreparedX25519PublicKey): KeyObject {
    if (theirs instanceof NativeX25519PublicKey) return NativeX25519PublicKey.keyObject(theirs);
    const raw = theirs instanceof Uint8Array ? theirs : theirs.bytes;
    assertBytes(raw, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
    return imp.publicKey('X25519', raw);
  }

  function isSignatureInput(signature: unknown, message: unknown): signature is Uint8Array {
    return signature instanceof Uint8Array && signature.length === ED25519_SIGNATURE_BYTES && message instanceof Uint8Array;
  }

  /** The key OpenSSL verifies with, or undefined when no signature by it may verify. */
  function verificationKey(publicKey: Uint8Array): KeyObject | undefined {
    // OpenSSL does not refuse small-order or non-canonical keys (ed25519-policy.ts).
    if (isRejectedEd25519PublicKey(publicKey)) return undefined;
    try {
      return imp.publicKey('Ed25519', publicKey);
    } catch {
      return undefined;
    }
  }

  function verifyWith(key: KeyObject, signature: Uint8Array, message: Uint8Array): boolean {
    try {
      return c.verify(null, message, key, signature);
    } catch {
      return false;
    }
  }

  class NativeX25519PrivateKey extends PreparedSecret implements PreparedX25519PrivateKey {
    readonly #key: KeyObject;
    #publicKey: Uint8Array | undefined;

    constructor(key: KeyObject) {
      super('X25519 private key');
      this.#key = key;
    }

    publicKey(): Uint8Array {
      this.#publicKey ??= rawPublicKey(c, this.#key);
      return this.#publicKey.slice();
    }

    agree(theirPublicKey: Uint8Array | PreparedX25519PublicKey): Uint8Array {
      return agreeKeys(this.#key, x25519PublicKeyObject(theirPublicKey));
    }
  }

  class NativeX25519PublicKey implements PreparedX25519PublicKey {
    readonly #bytes: Uint8Array;
    readonly #key: KeyObject;

    constructor(bytes: Uint8Array) {
      this.#bytes = bytes.slice();
      this.#key = imp.publicKey('X25519', this.#bytes);
    }

    static keyObject(key: NativeX25519PublicKey): KeyObject {
      return key.#key;
    }

    get bytes(): Uint8Array {
      return this.#bytes.slice();
    }
  }

  class NativeEd25519PrivateKey extends PreparedSecret implements PreparedEd25519PrivateKey {
    readonly #key: KeyObject;
    #publicKey: Uint8Array | undefined;

    constructor(key: KeyObject) {
      super('Ed25519 private key');
      this.#key = key;
    }

    publicKey(): Uint8Array {
      this.#publicKey ??= rawPublicKey(c, this.#key);
      return this.#publicKey.slice();
    }

    sign(message: Uint8Array): Uint8Array {
      assertAnyBytes(message, 'ed25519 message');
      return plain(c.sign(null, message, this.#key));
    }
  }

  class NativeEd25519PublicKey implements PreparedEd25519PublicKey {
    readonly #bytes: Uint8Array;
    readonly #key: KeyObject | undefined;

    constructor(bytes: Uint8Array) {
      this.#bytes = bytes.slice();
      this.#key = verificationKey(this.#bytes);
    }

    get bytes(): Uint8Array {
      return this.#bytes.slice();
    }

    verify(signature: Uint8Array, message: Uint8Array): boolean {
      if (this.#key === undefined || !isSignatureInput(signature, message)) return false;
      return verifyWith(this.#key, signature, message);
    }
  }

  return {
    name: 'native',

    sha256(data) {
      assertAnyBytes(data, 'sha256 input');
      return digest('sha256', data);
    },

    sha512(data) {
      assertAnyBytes(data, 'sha512 input');
      return digest('sha512', data);
    },

    hmacSha256(key, data) {
      assertAnyBytes(key, 'hmac key');
      assertAnyBytes(data, 'hmac input');
      return plain(c.createHmac('sha256', key).update(data).digest());
    },

    hkdfSha256(ikm, salt, info, length) {
      assertAnyBytes(ikm, 'hkdf ikm');
      assertAnyBytes(salt, 'hkdf salt');
      assertAnyBytes(info, 'hkdf info');
      assertHkdfLength(length);
      // Node caps `info` at 1024 bytes (an OpenSSL limit RFC 5869 does not have), so
      // longer info goes through the HMAC form, as do short outputs, where it is faster.
      if (length <= HKDF_BY_HMAC_MAX_BYTES || info.length > NODE_HKDF_MAX_INFO_BYTES) {
        return hkdfByHmac(c, ikm, salt, info, length);
      }
      return new Uint8Array(c.hkdfSync('sha256', ikm, salt, info, length));
    },

    x25519PublicKey(privateKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      return rawPublicKey(c, imp.privateKey('X25519', privateKey));
    },

    x25519(privateKey, publicKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
      return agreeKeys(imp.privateKey('X25519', privateKey), imp.publicKey('X25519', publicKey));
    },

    ed25519PublicKey(seed) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      return rawPublicKey(c, imp.privateKey('Ed25519', seed));
    },

    ed25519Sign(seed, message) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      assertAnyBytes(message, 'ed25519 message');
      return plain(c.sign(null, message, imp.privateKey('Ed25519', seed)));
    },

    ed25519Verify(signature, message, publicKey) {
      if (!isSignatureInput(signature, message)) return false;
      if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_BYTES) return false;
      const key = verificationKey(publicKey);
      return key !== undefined && verifyWith(key, signature, message);
    },

    x25519PrepareKey(privateKey) {
      assertBytes(privateKey, X25519_PRIVATE_KEY_BYTES, 'x25519 private key', 'INVALID_KEY');
      return new NativeX25519PrivateKey(imp.privateKey('X25519', privateKey));
    },

    x25519PreparePublicKey(publicKey) {
      assertBytes(publicKey, X25519_PUBLIC_KEY_BYTES, 'x25519 public key', 'INVALID_KEY');
      return new NativeX25519PublicKey(publicKey);
    },

    ed25519PrepareKey(seed) {
      assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed', 'INVALID_KEY');
      return new NativeEd25519PrivateKey(imp.privateKey('Ed25519', seed));
    },

    ed25519PreparePublicKey(publicKey) {
      assertBytes(publicKey, ED25519_PUBLIC_KEY_BYTES, 'ed25519 public key', 'INVALID_KEY');
      return new NativeEd25519PublicKey(publicKey);
    },

    aeadSeal(key, nonce, plaintext, aad) {
      assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
      assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
      assertAnyBytes(plaintext, 'aead plaintext');
      assertAnyBytes(aad, 'aead associated data');
      const cipher = c.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_BYTES });
      cipher.setAAD(aad, { plaintextLength: plaintext.length });
      const body = cipher.update(plaintext);
      const tail = cipher.final(); // empty for a stream cipher; kept for completeness
      const out = new Uint8Array(body.length + tail.length + AEAD_TAG_BYTES);
      out.set(body, 0);
      out.set(tail, body.length);
      out.set(cipher.getAuthTag(), body.length + tail.length);
      return out;
    },

    aeadOpen(key, nonce, sealed, aad) {
      assertBytes(key, AEAD_KEY_BYTES, 'aead key', 'INVALID_KEY');
      assertBytes(nonce, AEAD_NONCE_BYTES, 'aead nonce');
      assertAnyBytes(sealed, 'aead ciphertext');
      assertAnyBytes(aad, 'aead associated data');
      if (sealed.length < AEAD_TAG_BYTES) throw decryptFailed();
      const ctLen = sealed.length - AEAD_TAG_BYTES;
      try {
        const decipher = c.createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_BYTES });
        decipher.setAAD(aad, { plaintextLength: ctLen });
        decipher.setAuthTag(sealed.subarray(ctLen));
        const body = decipher.update(sealed.subarray(0, ctLen));
        const tail = decipher.final(); // throws here when the tag does not verify
        if (tail.length === 0) return plain(body);
        const out = new Uint8Array(body.length + tail.length);
        out.set(body, 0);
        out.set(tail, body.length);
        return out;
      } catch {
        // Unverified plaintext from update() is dropped with the exception.
        throw decryptFailed();
      }
    },

    mlkemKeygen: (seed) => mlkem.keygen(seed),
    mlkemEncapsulate: (publicKey, randomness) => mlkem.encapsulate(publicKey, randomness),
    mlkemDecapsulate: (cipherText, secretKey) => mlkem.decapsulate(cipherText, secretKey),
  };
}

/**
 * RFC 5869 in terms of one-shot HMACs. Used where it is cheaper than `hkdfSync` (outputs
 * of one or two blocks: hkdfSync's fixed cost is ~2.5x one HMAC, measured in
 * bench/crypto.ts) and for inputs `hkdfSync` refuses (info over 1024 bytes).
 */
function hkdfByHmac(c: NodeCryptoModule, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  // §2.2: an empty salt means HashLen zero bytes, which HMAC key padding makes identical.
  const prk = c.createHmac('sha256', salt).update(ikm).digest();
  const out = new Uint8Array(length);
  const counter = new Uint8Array(1);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++, off += SHA256_BYTES) {
    counter[0] = i; // i <= 255 because length <= 255 * 32 was asserted
    t = c.createHmac('sha256', prk).update(t).update(info).update(counter).digest();
    out.set(length - off >= SHA256_BYTES ? t : t.subarray(0, length - off), off);
  }
  return out;
}

/**
 * The runtime's own ML-KEM-768, when it has one. Node 20 has none, so this returns
 * undefined and noble is used; a runtime implementation is slotted in here and must pass
 * the same FIPS 203 / Wycheproof vectors before it is trusted.
 */
function runtimeMlKem(_c: NodeCryptoModule): MlKemProvider | undefined {
  return undefined;
}

const nodeCrypto = loadNodeCrypto();
const created =
  nodeCrypto === undefined ? undefined : createNativeBackend(nodeCrypto, runtimeMlKem(nodeCrypto) ?? nobleMlKem);

/** Node's built-in crypto, or undefined where it is unavailable (browsers, old Node). */
export const nativeBackend: CryptoBackend | undefined = created?.backend;

/** How raw keys are imported into the runtime (undefined without a native backend). */
export const nativeKeyImport: KeyImportPath | undefined = created?.keyImport;
