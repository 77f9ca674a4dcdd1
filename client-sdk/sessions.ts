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
 */
import { CryptoError } from '../crypto/errors.js';
import { acceptSession, decodeInitialMessage, initiateSession, type PreKeyBundle, type PreKeyStore } from '../crypto/handshake/index.js';
import type { IdentityKeyPair } from '../crypto/identity/identity-key.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { equalBytes } from '../crypto/primitives/bytes.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { Session, sessionMessageType } from '../crypto/ratchet/index.js';
import { MAX_ARCHIVED_SESSIONS } from './limits.js';
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

  async #load(tx: StoreTx, userId: string, deviceId: string): Promise<SessionRecord> {
    const raw = await tx.get(NS.sessions, slot(userId, deviceId));
    return raw === undefined ? { v: 1, current: undefined, archived: [] } : decodeRecord<SessionRecord>(raw);
  }

  #save(tx: StoreTx, userId: string, deviceId: string, r: SessionRecord): void {
    tx.put(NS.sessions, slot(userId, deviceId), encodeRecord(r));
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
    return (await this.#load(tx, userId, deviceId)).current !== undefined;
  }

  /** Starts a session from a bundle the directory verified; it becomes current. */
  async start(tx: StoreTx, userId: string, deviceId: string, bundle: PreKeyBundle): Promise<void> {
    const session = initiateSession({ identity: this.identity, bundle, backend: this.backend, random: this.random });
    const r = await this.#load(tx, userId, deviceId);
    this.#save(tx, userId, deviceId, this.#promote(r, { state: session.serialize(), baseKey: session.baseKey }));
  }

  /** Encrypts a padded payload on the current session. */
  async seal(tx: StoreTx, userId: string, deviceId: string, padded: Uint8Array): Promise<Uint8Array> {
    const r = await this.#load(tx, userId, deviceId);
    if (r.current === undefined) throw new CryptoError('INVALID_STATE', `no session with ${userId}/${deviceId}`);
    const { message, state } = this.#open(r.current.state).seal(padded);
    r.current.state = state;
    this.#save(tx, userId, deviceId, r);
    return message;
  }

  /**
   * Decrypts a pairwise message from `userId`/`deviceId`, whose identity key its verified
   * list gives. Throws CryptoError: DECRYPT_FAILED, REPLAYED_MESSAGE, INVALID_MESSAGE, ...
   * Nothing is written unless it decrypts.
   */
  async open(tx: StoreTx, userId: string, deviceId: string, identityKey: Uint8Array, message: Uint8Array, preKeys: PreKeyStore): Promise<Uint8Array> {
    const type = sessionMessageType(message);
    const r = await this.#load(tx, userId, deviceId);
    const entries = [r.current, ...r.archived].filter((e): e is SessionEntry => e !== undefined);
    if (type === 'initial') {
      const initial = decodeInitialMessage(message);
      // The device's key from its verified list, not the one the message claims.
      if (!equalBytes(initial.identityKey, identityKey)) throw new CryptoError('DECRYPT_FAILED', 'initial message from another identity than the sending device\'s');
      const known = entries.find((e) => equalBytes(e.baseKey, initial.baseKey));
      if (known) return this.#decryptWith(tx, userId, deviceId, r, known, message);
      const accepted = await acceptSession({ identity: this.identity, store: preKeys, message, backend: this.backend, random: this.random });
      this.#save(tx, userId, deviceId, this.#promote(r, { state: accepted.session.serialize(), baseKey: accepted.session.baseKey }));
      return accepted.plaintext;
    }
    if (type !== 'ratchet') throw new CryptoError('INVALID_MESSAGE', `a ${type} message is not a pairwise message`);
    let failure: CryptoError | undefined;
    for (const e of entries) {
      try {
        return this.#decryptWith(tx, userId, deviceId, r, e, message);
      } catch (err) {
        if (!(err instanceof CryptoError)) throw err;
        if (failure === undefined || (FAILURE_RANK[err.code] ?? 0) > (FAILURE_RANK[failure.code] ?? 0)) failure = err;
      }
    }
    throw failure ?? new CryptoError('DECRYPT_FAILED', 'no session with the sending device');
  }

  #decryptWith(tx: StoreTx, userId: string, deviceId: string, r: SessionRecord, e: SessionEntry, message: Uint8Array): Uint8Array {
    const session = this.#open(e.state);
    const plaintext = session.decrypt(message);
    const updated = { state: session.serialize(), baseKey: e.baseKey };
    this.#save(tx, userId, deviceId, this.#promote(r, updated));
    return plaintext;
  }

  /** Forgets every session with a device (revoked, or being replaced by healing). */
  drop(tx: StoreTx, userId: string, deviceId: string): void {
    tx.delete(NS.sessions, slot(userId, deviceId));
  }
}
