/**
 * Shared fixtures for the handshake, ratchet and sender-key tests: a deterministic
 * randomness source, an in-memory prekey store, and a ready-made pair of devices.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { cryptoReady, defaultBackend, loadSodiumBackend, nativeBackend, nobleBackend } from '../../crypto/primitives/index.js';
import type { RandomSource } from '../../crypto/primitives/random.js';
import { CryptoError, type CryptoErrorCode } from '../../crypto/errors.js';
import {
  acceptSession,
  generateKemPreKey,
  generateOneTimePreKey,
  generateSignedPreKey,
  initiateSession,
  type KemPreKeyRecord,
  kemPreKeyPublic,
  type OneTimePreKeyRecord,
  oneTimePreKeyPublic,
  type PreKeyBundle,
  type PreKeyStore,
  type SignedPreKeyRecord,
  signedPreKeyPublic,
} from '../../crypto/handshake/index.js';
import { IdentityKeyPair } from '../../crypto/identity/index.js';
import type { Session } from '../../crypto/ratchet/index.js';

if (nativeBackend === undefined) throw new Error('native backend unavailable on this Node runtime');

/** libsodium, and the default backend with it loaded (a load failure fails the suites). */
const sodium = await loadSodiumBackend();
await cryptoReady();

/** The backends the session-layer suites run against (the default one last). */
export const SESSION_BACKENDS: readonly CryptoBackend[] = [nobleBackend, nativeBackend, sodium, defaultBackend];

/** SHA-256 in counter mode over a seed: reproducible, never for production. */
export function seededRandom(seed: number | string): RandomSource {
  let counter = 0;
  const prefix = new TextEncoder().encode(`test-random/${seed}/`);
  let pool = new Uint8Array(0);
  return (length: number) => {
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      if (pool.length === 0) {
        const input = new Uint8Array(prefix.length + 4);
        input.set(prefix);
        new DataView(input.buffer).setUint32(prefix.length, counter++);
        pool = sha256(input);
      }
      const take = Math.min(pool.length, length - filled);
      out.set(pool.subarray(0, take), filled);
      pool = pool.subarray(take);
      filled += take;
    }
    return out;
  };
}

export function makeIdentity(backend: CryptoBackend, random: RandomSource): IdentityKeyPair {
  return IdentityKeyPair.generate(random, backend);
}

export class MemoryPreKeyStore implements PreKeyStore {
  readonly signed = new Map<number, SignedPreKeyRecord>();
  readonly oneTime = new Map<number, OneTimePreKeyRecord>();
  readonly kem = new Map<number, KemPreKeyRecord>();

  loadSignedPreKey(id: number) {
    return this.signed.get(id);
  }
  loadOneTimePreKey(id: number) {
    return this.oneTime.get(id);
  }
  loadKemPreKey(id: number) {
    return this.kem.get(id);
  }
  removeOneTimePreKey(id: number) {
    this.oneTime.delete(id);
  }
  removeKemPreKey(id: number) {
    this.kem.delete(id);
  }
  /** The set of stored key ids, to check that nothing was consumed. */
  snapshot(): string {
    return JSON.stringify([[...this.signed.keys()], [...this.oneTime.keys()], [...this.kem.keys()]]);
  }
}

export interface Responder {
  readonly identity: IdentityKeyPair;
  readonly store: MemoryPreKeyStore;
  readonly signedPreKey: SignedPreKeyRecord;
  readonly oneTimePreKey: OneTimePreKeyRecord;
  readonly oneTimeKemPreKey: KemPreKeyRecord;
  readonly lastResortKemPreKey: KemPreKeyRecord;
}

export function makeResponder(backend: CryptoBackend, random: RandomSource): Responder {
  const identity = makeIdentity(backend, random);
  const store = new MemoryPreKeyStore();
  const signedPreKey = generateSignedPreKey(identity, 7, { backend, random });
  const oneTimePreKey = generateOneTimePreKey(identity, 100, { backend, random });
  const oneTimeKemPreKey = generateKemPreKey(identity, 200, false, { backend, random });
  const lastResortKemPreKey = generateKemPreKey(identity, 1, true, { backend, random });
  store.signed.set(signedPreKey.id, signedPreKey);
  store.oneTime.set(oneTimePreKey.id, oneTimePreKey);
  store.kem.set(oneTimeKemPreKey.id, oneTimeKemPreKey);
  store.kem.set(lastResortKemPreKey.id, lastResortKemPreKey);
  return { identity, store, signedPreKey, oneTimePreKey, oneTimeKemPreKey, lastResortKemPreKey };
}

export function bundleOf(r: Responder, opts: { oneTime?: boolean; lastResort?: boolean } = {}): PreKeyBundle {
  return {
    identityKey: r.identity.publicKey.bytes,
    signedPreKey: signedPreKeyPublic(r.signedPreKey),
    oneTimePreKey: opts.oneTime === false ? undefined : oneTimePreKeyPublic(r.oneTimePreKey),
    kemPreKey: kemPreKeyPublic(opts.lastResort === true ? r.lastResortKemPreKey : r.oneTimeKemPreKey),
  };
}

export interface SessionPair {
  readonly alice: Session;
  readonly bob: Session;
}

/**
 * A session pair after a complete handshake: Alice initiated and Bob accepted; by default
 * Bob has replied once so both sides run plain ratchet messages.
 */
export async function makeSessionPair(
  backend: CryptoBackend,
  seed: number | string,
  opts: { reply?: boolean } = {},
): Promise<SessionPair> {
  const random = seededRandom(seed);
  const responder = makeResponder(backend, random);
  const alice = initiateSession({ identity: makeIdentity(backend, random), bundle: bundleOf(responder), backend, random });
  const first = alice.encrypt(new TextEncoder().encode('hello'));
  const { session: bob } = await acceptSession({
    identity: responder.identity,
    store: responder.store,
    message: first,
    backend,
    random,
  });
  if (opts.reply !== false) alice.decrypt(bob.encrypt(new TextEncoder().encode('hi')));
  return { alice, bob };
}

/** The CryptoError code `fn` throws, or 'no error'; anything else is rethrown. */
export function cryptoCodeOf(fn: () => unknown): CryptoErrorCode | 'no error' {
  try {
    fn();
  } catch (e) {
    if (e instanceof CryptoError) return e.code;
    throw e;
  }
  return 'no error';
}
