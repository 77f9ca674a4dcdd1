/**
 * Pairwise sessions with other devices: one current session per remote device, plus up to
 * MAX_ARCHIVED_SESSIONS older ones so that messages sent on a session just replaced (both
 * sides started one at once, or a session was healed) still decrypt. The session a
 * message decrypts with becomes current.
 *
 * Every operation reads the session from the caller's transaction and writes the state
 * after it back there: a session advances only when what it produced (an outbox entry, an
 * inbox message) is committed with it. Sending uses Session.seal, which hands back the
 * state to persist before the message leaves (docs/CRYPTO.md, "the rule this rests on").
 *
 * An initial message is routed by its base key: a repeat of one that already started a
 * session goes to that session, never starts a second one (docs/CRYPTO.md).
 *
 * A cache keeps, per remote device, the record last written and its current session
 * decoded, so that a message does not decode them again. It is used only while the
 * transaction reads exactly the bytes the cache holds: a write that failed to commit (the
 * store still holds the older bytes), or any other change, makes it miss. A transaction
 * that uses a cached session takes it out of the cache (the session advances in place);
 * it goes back only with the record that transaction writes.
 */
import { CryptoError } from '../crypto/errors.js';
import { acceptSession, decodeInitialMessage, initiateSession, type PreKeyBundle, type PreKeyStore } from '../crypto/handshake/index.js';
import type { IdentityKeyPair } from '../crypto/identity/identity-key.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { equalBytes } from '../crypto/primitives/bytes.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { Session, sessionMessageType } from '../crypto/ratchet/index.js';
import { MAX_ARCHIVED_SESSIONS, MAX_CACHED_SESSIONS } from './limits.js';
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

interface SessionEntry {
  state: Uint8Array;
  baseKey: Uint8Array;
}

interface SessionRecord {
  v: 1;
  current: SessionEntry | undefined;
  archived: SessionEntry[];
}

/** A record as last written, decoded, with its current session (if one was decoded). */
interface Cached {
  raw: Uint8Array;
  record: SessionRecord;
  current: Session | undefined;
}

/** A loaded record, with the decoded session of its current entry when the cache had it. */
interface Loaded {
  record: SessionRecord;
  current: Session | undefined;
}

function slot(userId: string, deviceId: string): string {
  return `${userId} ${deviceId}`;
}

/** Of several failures, the most telling: a replay over a tampered or foreign message. */
const FAILURE_RANK: Readonly<Record<string, number>> = { REPLAYED_MESSAGE: 3, TOO_MANY_SKIPPED: 2, DECRYPT_FAILED: 1 };

export class Sessions {
  constructor(
    private readonly identity: IdentityKeyPair,
    private readonly backend: CryptoBackend,
    private readonly random: RandomSource,
  ) {}

  readonly #cache = new Map<string, Cached>();

  /**
   * The record of a device. `take`: the caller may change what it gets (the record, the
   * session), so a cached entry leaves the cache; otherwise it only reads it.
   */
  async #load(tx: StoreTx, userId: string, deviceId: string, take = true): Promise<Loaded> {
    const key = slot(userId, deviceId);
    const raw = await tx.get(NS.sessions, key);
    if (raw === undefined) return { record: { v: 1, current: undefined, archived: [] }, current: undefined };
    const cached = this.#cache.get(key);
    if (cached !== undefined && equalBytes(cached.raw, raw)) {
      if (take) this.#cache.delete(key);
      return { record: cached.record, current: cached.current };
    }
    if (cached !== undefined) this.#cache.delete(key);
    return { record: decodeRecord<SessionRecord>(raw), current: undefined };
  }

  /** Writes a record; it is cached with `current`, the decoded session of its current entry. */
  #save(tx: StoreTx, userId: string, deviceId: string, r: SessionRecord, current?: Session): void {
    const key = slot(userId, deviceId);
    const raw = encodeRecord(r);
    tx.put(NS.sessions, key, raw);
    this.#cache.delete(key);
    this.#cache.set(key, { raw, record: r, current });
    if (this.#cache.size > MAX_CACHED_SESSIONS) this.#cache.delete(this.#cache.keys().next().value as string);
  }

  /** `entry` becomes current; the previous current is archived (the oldest dropped). */
  #promote(r: SessionRecord, entry: SessionEntry): SessionRecord {
    const archived = [r.current, ...r.archived].filter((e): e is SessionEntry => e !== undefined && e !== entry && !equalBytes(e.baseKey, entry.baseKey));
    return { v: 1, current: entry, archived: archived.slice(0, MAX_ARCHIVED_SESSIONS) };
  }

  #open(state: Uint8Array): Session {
    return Session.deserialize(state, { backend: this.backend, random: this.random });
  }

  async has(tx: StoreTx, userId: string, deviceId: string): Promise<boolean> {
    return (await this.#load(tx, userId, deviceId, false)).record.current !== undefined;
  }

  /** Starts a session from a bundle the directory verified; it becomes current. */
  async start(tx: StoreTx, userId: string, deviceId: string, bundle: PreKeyBundle): Promise<void> {
    const session = initiateSession({ identity: this.identity, bundle, backend: this.backend, random: this.random });
    const { record: r } = await this.#load(tx, userId, deviceId);
    this.#save(tx, userId, deviceId, this.#promote(r, { state: session.serialize(), baseKey: session.baseKey }), session);
  }

  /** Encrypts a padded payload on the current session. */
  async seal(tx: StoreTx, userId: string, deviceId: string, padded: Uint8Array): Promise<Uint8Array> {
    const { record: r, current } = await this.#load(tx, userId, deviceId);
    if (r.current === undefined) throw new CryptoError('INVALID_STATE', `no session with ${userId}/${deviceId}`);
    const session = current ?? this.#open(r.current.state);
    const { message, state } = session.seal(padded);
    this.#save(tx, userId, deviceId, { v: 1, current: { state, baseKey: r.current.baseKey }, archived: r.archived }, session);
    return message;
  }

  /**
   * Decrypts a pairwise message from `userId`/`deviceId`, whose identity key its verified
   * list gives. Throws CryptoError: DECRYPT_FAILED, REPLAYED_MESSAGE, INVALID_MESSAGE, ...
   * Nothing is written unless it decrypts.
   */
  async open(tx: StoreTx, userId: string, deviceId: string, identityKey: Uint8Array, message: Uint8Array, preKeys: PreKeyStore): Promise<Uint8Array> {
    const type = sessionMessageType(message);
    const { record: r, current } = await this.#load(tx, userId, deviceId);
    const entries = [r.current, ...r.archived].filter((e): e is SessionEntry => e !== undefined);
    if (type === 'initial') {
      const initial = decodeInitialMessage(message);
      // The device's key from its verified list, not the one the message claims.
      if (!equalBytes(initial.identityKey, identityKey)) throw new CryptoError('DECRYPT_FAILED', 'initial message from another identity than the sending device\'s');
      const known = entries.find((e) => equalBytes(e.baseKey, initial.baseKey));
      if (known) return this.#decryptWith(tx, userId, deviceId, r, known, known === r.current ? current : undefined, message);
      const accepted = await acceptSession({ identity: this.identity, store: preKeys, message, backend: this.backend, random: this.random });
      this.#save(tx, userId, deviceId, this.#promote(r, { state: accepted.session.serialize(), baseKey: accepted.session.baseKey }), accepted.session);
      return accepted.plaintext;
    }
    if (type !== 'ratchet') throw new CryptoError('INVALID_MESSAGE', `a ${type} message is not a pairwise message`);
    let failure: CryptoError | undefined;
    for (const e of entries) {
      try {
        return this.#decryptWith(tx, userId, deviceId, r, e, e === r.current ? current : undefined, message);
      } catch (err) {
        if (!(err instanceof CryptoError)) throw err;
        if (failure === undefined || (FAILURE_RANK[err.code] ?? 0) > (FAILURE_RANK[failure.code] ?? 0)) failure = err;
      }
    }
    throw failure ?? new CryptoError('DECRYPT_FAILED', 'no session with the sending device');
  }

  /** Decrypts with entry `e` (`decoded`: its session, if the cache had it); on success
   * `e` advanced becomes current. A session is unchanged when decrypt throws. */
  #decryptWith(tx: StoreTx, userId: string, deviceId: string, r: SessionRecord, e: SessionEntry, decoded: Session | undefined, message: Uint8Array): Uint8Array {
    const session = decoded ?? this.#open(e.state);
    const plaintext = session.decrypt(message);
    const updated = { state: session.serialize(), baseKey: e.baseKey };
    this.#save(tx, userId, deviceId, this.#promote(r, updated), session);
    return plaintext;
  }

  /** Forgets every session with a device (revoked, or being replaced by healing). */
  drop(tx: StoreTx, userId: string, deviceId: string): void {
    this.#cache.delete(slot(userId, deviceId));
    tx.delete(NS.sessions, slot(userId, deviceId));
  }
}
