/**
 * Encryption at rest for any store: every value is sealed with XChaCha20-Poly1305 under a
 * key the application supplies, or derives from a passphrase with scrypt (salt and cost
 * kept in the store). The value's namespace and key are the associated data, so a value
 * moved to another slot does not open. A wrong key or passphrase is refused when the
 * store is opened (STORE_KEY_INVALID), never read as garbage; a value that fails to open
 * later is STORE_CORRUPT.
 *
 * What stays readable at rest: namespaces and record keys (user ids, device ids,
 * envelope ids), the number and sizes of records.
 */
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { systemRandom } from '../../crypto/primitives/random.js';
import { SdkError } from '../errors.js';
import { STORE_KDF_N, STORE_KDF_P, STORE_KDF_R } from '../limits.js';
import { type Store, type StoreWrite, decodeRecord, encodeRecord } from './store.js';

const KEY_BYTES = 32;
const NONCE_BYTES = 24;
const SALT_BYTES = 16;
/** Where the KDF parameters and the key check live (not encrypted: they must be read first). */
const HEADER_NS = 'encrypted-store';
const HEADER_KEY = 'header';
const CHECK = new TextEncoder().encode('hermetic store key check');

export type StoreKey = { readonly passphrase: string } | { readonly key: Uint8Array };

interface Header {
  v: 1;
  kdf: { N: number; r: number; p: number; salt: Uint8Array } | null;
  check: Uint8Array;
}

function aad(ns: string, key: string): Uint8Array {
  return new TextEncoder().encode(`${ns}\u0000${key}`);
}

function seal(key: Uint8Array, ns: string, k: string, value: Uint8Array): Uint8Array {
  const nonce = systemRandom(NONCE_BYTES);
  const sealed = xchacha20poly1305(key, nonce, aad(ns, k)).encrypt(value);
  const out = new Uint8Array(NONCE_BYTES + sealed.length);
  out.set(nonce, 0);
  out.set(sealed, NONCE_BYTES);
  return out;
}

function open(key: Uint8Array, ns: string, k: string, box: Uint8Array): Uint8Array | undefined {
  if (box.length < NONCE_BYTES + 16) return undefined;
  try {
    return xchacha20poly1305(key, box.subarray(0, NONCE_BYTES), aad(ns, k)).decrypt(box.subarray(NONCE_BYTES));
  } catch {
    return undefined;
  }
}

export class EncryptedStore implements Store {
  readonly #inner: Store;
  readonly #key: Uint8Array;

  private constructor(inner: Store, key: Uint8Array) {
    this.#inner = inner;
    this.#key = key;
  }

  /**
   * Opens `inner` with a key or passphrase, setting one up on first use. Throws
   * STORE_KEY_INVALID when the store was set up with another key.
   */
  static async open(inner: Store, storeKey: StoreKey): Promise<EncryptedStore> {
    const raw = await inner.get(HEADER_NS, HEADER_KEY);
    if (raw === undefined) {
      const kdf = 'passphrase' in storeKey ? { N: STORE_KDF_N, r: STORE_KDF_R, p: STORE_KDF_P, salt: systemRandom(SALT_BYTES) } : null;
      const key = await deriveKey(storeKey, kdf);
      const header: Header = { v: 1, kdf, check: seal(key, HEADER_NS, 'check', CHECK) };
      await inner.commit([{ ns: HEADER_NS, key: HEADER_KEY, value: encodeRecord(header) }]);
      return new EncryptedStore(inner, key);
    }
    let header: Header;
    try {
      header = decodeRecord<Header>(raw);
    } catch (cause) {
      throw new SdkError('STORE_CORRUPT', 'the store\'s encryption header cannot be read', { cause });
    }
    if (header.v !== 1) throw new SdkError('STORE_CORRUPT', `unknown store encryption version ${String(header.v)}`);
    if (header.kdf !== null && 'key' in storeKey) {
      throw new SdkError('STORE_KEY_INVALID', 'this store is protected by a passphrase, not a key');
    }
    const key = await deriveKey(storeKey, header.kdf);
    const check = open(key, HEADER_NS, 'check', header.check);
    if (check === undefined || new TextDecoder().decode(check) !== new TextDecoder().decode(CHECK)) {
      throw new SdkError('STORE_KEY_INVALID');
    }
    return new EncryptedStore(inner, key);
  }

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    const box = await this.#inner.get(ns, key);
    return box === undefined ? undefined : this.#open(ns, key, box);
  }

  async list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    return (await this.#inner.list(ns, prefix)).map(([k, box]) => [k, this.#open(ns, k, box)]);
  }

  commit(writes: readonly StoreWrite[]): Promise<void> {
    return this.#inner.commit(writes.map((w) => ('value' in w ? { ns: w.ns, key: w.key, value: seal(this.#key, w.ns, w.key, w.value) } : w)));
  }

  close(): Promise<void> {
    this.#key.fill(0);
    return this.#inner.close();
  }

  #open(ns: string, key: string, box: Uint8Array): Uint8Array {
    const v = open(this.#key, ns, key, box);
    if (v === undefined) throw new SdkError('STORE_CORRUPT', `the stored value ${ns}/${key} does not open with the store key`);
    return v;
  }

  toString(): string {
    return 'EncryptedStore';
  }

  toJSON(): string {
    return 'EncryptedStore';
  }
}

async function deriveKey(storeKey: StoreKey, kdf: Header['kdf']): Promise<Uint8Array> {
  if ('key' in storeKey) {
    if (!(storeKey.key instanceof Uint8Array) || storeKey.key.length !== KEY_BYTES) {
      throw new SdkError('INVALID_ARGUMENT', `a store key is ${KEY_BYTES} bytes`);
    }
    return storeKey.key.slice();
  }
  if (typeof storeKey.passphrase !== 'string' || storeKey.passphrase.length === 0) {
    throw new SdkError('INVALID_ARGUMENT', 'a store passphrase must be a non-empty string');
  }
  if (kdf === null) throw new SdkError('STORE_KEY_INVALID', 'this store is protected by a key, not a passphrase');
  return scryptAsync(storeKey.passphrase, kdf.salt, { N: kdf.N, r: kdf.r, p: kdf.p, dkLen: KEY_BYTES });
}
