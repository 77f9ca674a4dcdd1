/**
 * Where the responder keeps its prekeys' private halves. The app implements it (memory,
 * IndexedDB, a database); methods may be synchronous or return promises.
 *
 * acceptSession only reads until the initial message has been authenticated, and only
 * then removes the one-time keys it used, so a forged or tampered initial message never
 * burns a one-time prekey. Last-resort and signed prekeys are never removed by it: they
 * are rotated by the app.
 */
import type { KemPreKeyRecord, OneTimePreKeyRecord, SignedPreKeyRecord } from './prekeys.js';

type MaybePromise<T> = T | Promise<T>;

export interface PreKeyStore {
  loadSignedPreKey(id: number): MaybePromise<SignedPreKeyRecord | undefined>;
  loadOneTimePreKey(id: number): MaybePromise<OneTimePreKeyRecord | undefined>;
  /** Both one-time and last-resort ML-KEM prekeys; ids are unique across the two. */
  loadKemPreKey(id: number): MaybePromise<KemPreKeyRecord | undefined>;
  removeOneTimePreKey(id: number): MaybePromise<void>;
  /** Called for one-time ML-KEM prekeys only. */
  removeKemPreKey(id: number): MaybePromise<void>;
}
