/**
 * The key directory's persistent state: devices, their signed prekeys and their one-time
 * prekeys. Written once against the Database contract, so it behaves the same on
 * PostgreSQL and PGlite (the storage contract tests run it on both). Signatures are
 * checked by the caller before anything reaches here; this layer enforces uniqueness,
 * counts and the at-most-once hand-out of one-time keys.
 */
import { DeviceChain, type DeviceChainRefusal } from '../../crypto/devices/chain.js';
import { DEVICE_ENTRY_KINDS, type DeviceEntryKind } from '../../crypto/devices/entry.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { type ErrorCode, ProtocolError } from '../../protocol/errors.js';
import { type MailboxNotice, revokedNotice } from '../fleet/notice.js';
import { type Notifier, PgNotifier } from '../fleet/notifier.js';
import { removeMailbox } from '../mailbox/store.js';
import { type Database, type SqlExecutor, UNIQUE_VIOLATION, sqlState } from '../storage/database.js';
import { MAX_STORED_ONE_TIME_KEYS } from '../limits.js';

export type KeyKind = 'x25519' | 'mlkem';
const KIND_CODE: Record<KeyKind, number> = { x25519: 1, mlkem: 2 };

/** The four kinds of published key whose ids only grow (prekey_id_high_water.kind). */
type IdKind = 'signed' | 'last-resort' | 'one-time' | 'one-time-kem';
const ID_KIND_CODE: Record<IdKind, number> = { signed: 1, 'last-resort': 2, 'one-time': 3, 'one-time-kem': 4 };

/** A per-target-device token bucket on one-time prekey hand-outs (shared by all relays). */
export interface HandoutBudget {
  /** Hand-outs allowed at once; at least 1. */
  readonly burst: number;
  /** Refill rate, hand-outs per second. */
  readonly perSecond: number;
}

/** Why a bundle carries no one-time key of a kind: none left, or the budget is spent. */
export type WithheldReason = 'exhausted' | 'target_budget';

export interface SignedKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

export interface DeviceRecord {
  readonly userId: string;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  readonly createdAt: Date;
}

export interface AppendedEntry {
  readonly outcome: 'created' | 'unchanged';
  readonly kind: DeviceEntryKind;
  readonly deviceId: string;
  readonly seq: number;
}

export interface DeviceListRecord {
  readonly userId: string;
  /** Number of entries in the list. */
  readonly length: number;
  /** Hash of the newest entry; undefined for an empty list. */
  readonly head: Uint8Array | undefined;
  /** The entries after the requested position, encoded as signed. */
  readonly entries: Uint8Array[];
  /** The active devices, as the relay holds them. */
  readonly devices: DeviceRecord[];
}

interface EntryRow {
  seq: number;
  kind: number;
  device_id: string;
  identity_key: Uint8Array;
  entry_hash: Uint8Array;
  entry: Uint8Array;
}

function kindOfCode(code: number): DeviceEntryKind {
  const kind = (Object.keys(DEVICE_ENTRY_KINDS) as DeviceEntryKind[]).find((k) => DEVICE_ENTRY_KINDS[k] === code);
  if (kind === undefined) throw new Error(`unknown device entry kind ${code} in storage`);
  return kind;
}

/** The relay's answer to an entry that does not extend the stored list. */
const REFUSAL_CODES: Record<DeviceChainRefusal, ErrorCode> = {
  malformed: 'BAD_REQUEST',
  'wrong-user': 'DEVICE_NOT_AUTHORIZED',
  'chain-full': 'DEVICE_LIST_FULL',
  'root-exists': 'DEVICE_NOT_AUTHORIZED',
  'no-root': 'DEVICE_NOT_AUTHORIZED',
  'not-next': 'DEVICE_LIST_CONFLICT',
  'signer-not-active': 'DEVICE_NOT_AUTHORIZED',
  'bad-signature': 'INVALID_SIGNATURE',
  'bad-consent': 'INVALID_SIGNATURE',
  'device-exists': 'DEVICE_EXISTS',
  'too-many-devices': 'TOO_MANY_DEVICES',
  'not-active': 'DEVICE_NOT_FOUND',
  'last-device': 'LAST_DEVICE',
};

function refusalError(reason: DeviceChainRefusal, message: string): ProtocolError {
  return new ProtocolError(REFUSAL_CODES[reason], message, { reason });
}

export interface KeyUpload {
  /** Replaces the current signed X25519 prekey (rotation). */
  readonly signedPrekey?: SignedKey | undefined;
  /** Replaces the current signed ML-KEM-768 last-resort prekey. */
  readonly lastResortKemPrekey?: SignedKey | undefined;
  readonly oneTimePrekeys: readonly SignedKey[];
  readonly oneTimeKemPrekeys: readonly SignedKey[];
}

export interface PrekeyBundle {
  readonly userId: string;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  readonly signedPrekey: SignedKey;
  readonly oneTimePrekey: SignedKey | undefined;
  readonly kemPrekey: SignedKey;
  /** True when no one-time ML-KEM key was handed out and the last-resort key was used. */
  readonly kemLastResort: boolean;
  /** The one-time keys not handed out, and why (metrics; not sent). */
  readonly withheld: ReadonlyArray<{ readonly kind: KeyKind; readonly reason: WithheldReason }>;
}

export interface KeyCounts {
  readonly oneTimePrekeys: number;
  readonly oneTimeKemPrekeys: number;
  readonly hasSignedPrekey: boolean;
  readonly hasLastResortKemPrekey: boolean;
}

interface KeyRow {
  key_id: string | number;
  public_key: Uint8Array;
  signature: Uint8Array;
}

function toKey(r: KeyRow): SignedKey {
  return { keyId: Number(r.key_id), publicKey: new Uint8Array(r.public_key), signature: new Uint8Array(r.signature) };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  // Public data: a plain comparison is fine here.
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export class DirectoryStore {
  private readonly notifier: Notifier;

  /**
   * `notifier` carries the 'revoked' notice of a device leaving its list to every relay
   * (PostgreSQL NOTIFY on `db` when omitted); `onNoticeFailed` is told when one sent
   * after the commit could not be (the relays' catch-up scans close the connection
   * then).
   */
  constructor(
    private readonly db: Database,
    notifier?: Notifier,
    private readonly onNoticeFailed: (err: unknown) => void = () => undefined,
  ) {
    this.notifier = notifier ?? new PgNotifier(db);
  }

  /**
   * Removes a device that left its user's list (its `devices` row and its mailbox) and
   * announces it: in the transaction when the notifier can (the
   * notice is delivered on commit), else into `after`, sent once it has committed.
   */
  private async removeDevice(tx: SqlExecutor, userId: string, deviceId: string, after: MailboxNotice[]): Promise<void> {
    await tx.query('DELETE FROM devices WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
    await removeMailbox(tx, userId, deviceId);
    const notice = revokedNotice(userId, deviceId);
    if (this.notifier.transactional) await this.notifier.publish(notice, tx);
    else after.push(notice);
  }

  /**
   * Appends one signed entry to a user's device list (crypto/devices), after checking it
   * against the stored list: root, link or revoke. The active-device set (`devices`, and
   * each device's mailbox) changes in the same transaction. Posting the entry already
   * stored at its position again is 'unchanged' (a retried request).
   */
  async appendDeviceEntry(userId: string, bytes: Uint8Array, backend: CryptoBackend): Promise<AppendedEntry> {
    const revoked: MailboxNotice[] = [];
    const appended = await this.db.transaction(async (tx): Promise<AppendedEntry> => {
      revoked.length = 0;
      // Serialize list changes per user: each entry must extend the head it was signed on.
      await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 7))', [userId]);
      const rows = await tx.query<EntryRow>(
        'SELECT seq, kind, device_id, identity_key, entry_hash, entry FROM device_list_entries WHERE user_id = $1 ORDER BY seq',
        [userId],
      );
      const stored = rows.find((r) => sameBytes(new Uint8Array(r.entry), bytes));
      if (stored) return { outcome: 'unchanged', kind: kindOfCode(stored.kind), deviceId: stored.device_id, seq: Number(stored.seq) };
      const chain = DeviceChain.replay(
        userId,
        rows.map((r) => ({ kind: kindOfCode(r.kind), deviceId: r.device_id, identityKey: new Uint8Array(r.identity_key), hash: new Uint8Array(r.entry_hash) })),
      );
      const step = chain.append(bytes, backend);
      if (!step.ok) throw refusalError(step.reason, step.message);
      const e = step.entry;
      await tx.query(
        `INSERT INTO device_list_entries (user_id, seq, kind, device_id, identity_key, entry, entry_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [userId, e.seq, DEVICE_ENTRY_KINDS[e.kind], e.deviceId, e.identityKey, e.bytes, step.chain.head],
      );
      if (e.kind === 'revoke') {
        await this.removeDevice(tx, userId, e.deviceId, revoked);
        return { outcome: 'created', kind: e.kind, deviceId: e.deviceId, seq: e.seq };
      }
      if (e.kind === 'root') {
        // Devices registered before the signed list: the root may be one of them (same
        // key); the others leave the active set and are linked again from the root.
        const legacy = await tx.query<{ device_id: string; identity_key: Uint8Array }>(
          'SELECT device_id, identity_key FROM devices WHERE user_id = $1 AND linked_seq IS NULL',
          [userId],
        );
        const same = legacy.find((r) => r.device_id === e.deviceId);
        if (same && !sameBytes(new Uint8Array(same.identity_key), e.identityKey)) {
          throw new ProtocolError('DEVICE_EXISTS', 'this device id is registered with another identity key');
        }
        for (const r of legacy) {
          if (r.device_id === e.deviceId) continue;
          await this.removeDevice(tx, userId, r.device_id, revoked);
        }
      }
      try {
        await tx.query(
          `INSERT INTO devices (user_id, device_id, identity_key, linked_seq) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, device_id) DO UPDATE SET linked_seq = EXCLUDED.linked_seq
            WHERE devices.identity_key = EXCLUDED.identity_key AND devices.linked_seq IS NULL`,
          [userId, e.deviceId, e.identityKey, e.seq],
        );
        // Every device has a mailbox from the moment it exists.
        const made = await tx.query('INSERT INTO mailboxes (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1 AS made', [userId, e.deviceId]);
        // A new mailbox starts at sequence 1: a cursor row left behind by an ACK applied
        // just after an earlier device of this id was removed would hide its envelopes.
        if (made.length > 0) await tx.query('DELETE FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', [userId, e.deviceId]);
      } catch (err) {
        if (sqlState(err) === UNIQUE_VIOLATION) throw new ProtocolError('DEVICE_EXISTS', 'this device id is already registered');
        throw err;
      }
      return { outcome: 'created', kind: e.kind, deviceId: e.deviceId, seq: e.seq };
    });
    for (const n of revoked) await this.notifier.publish(n).catch(this.onNoticeFailed);
    return appended;
  }

  /**
   * The entries of a user's list after position `after` (-1: all), its length and head,
   * and the active devices, all as of one moment. The entries and the head come from one
   * statement (one snapshot) and length and head are read off the rows it returns, so
   * `length` always equals `after + 1 + entries.length` even while entries are appended;
   * REPEATABLE READ makes the devices statement see that same snapshot.
   */
  async deviceList(userId: string, after = -1): Promise<DeviceListRecord> {
    return this.db.transaction(async (tx) => {
      await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      // The rows after `after`, plus the newest row when it is not among them (its hash is
      // the head; its bytes are not sent).
      const rows = await tx.query<{ seq: number; entry: Uint8Array | null; entry_hash: Uint8Array }>(
        `SELECT seq, CASE WHEN seq > $2 THEN entry END AS entry, entry_hash FROM device_list_entries
          WHERE user_id = $1
            AND (seq > $2 OR seq = (SELECT max(seq) FROM device_list_entries WHERE user_id = $1))
          ORDER BY seq`,
        [userId, after],
      );
      const devices = await this.listDevicesOn(tx, userId);
      const last = rows[rows.length - 1];
      return {
        userId,
        length: last ? Number(last.seq) + 1 : 0,
        head: last ? new Uint8Array(last.entry_hash) : undefined,
        entries: rows.flatMap((r) => (r.entry === null ? [] : [new Uint8Array(r.entry)])),
        devices,
      };
    });
  }

  async getDevice(userId: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const rows = await this.db.query<{ identity_key: Uint8Array; created_at: Date | string }>(
      'SELECT identity_key, created_at FROM devices WHERE user_id = $1 AND device_id = $2',
      [userId, deviceId],
    );
    const r = rows[0];
    return r && { userId, deviceId, identityKey: new Uint8Array(r.identity_key), createdAt: new Date(r.created_at) };
  }

  async listDevices(userId: string): Promise<DeviceRecord[]> {
    return this.listDevicesOn(this.db, userId);
  }

  private async listDevicesOn(q: SqlExecutor, userId: string): Promise<DeviceRecord[]> {
    const rows = await q.query<{ device_id: string; identity_key: Uint8Array; created_at: Date | string }>(
      'SELECT device_id, identity_key, created_at FROM devices WHERE user_id = $1 ORDER BY device_id',
      [userId],
    );
    return rows.map((r) => ({
      userId,
      deviceId: r.device_id,
      identityKey: new Uint8Array(r.identity_key),
      createdAt: new Date(r.created_at),
    }));
  }

  /**
   * Stores an upload atomically: either every key is stored or, on any conflict, none.
   * Re-uploading a key still stored with the same id and bytes is a no-op (a retried
   * request); the same id with other bytes is KEY_ID_CONFLICT. Any other id at or below
   * the highest the device ever used of that kind is KEY_ID_REUSED: an old key, perhaps
   * with a valid old signature, never comes back.
   */
  async uploadKeys(userId: string, deviceId: string, upload: KeyUpload): Promise<KeyCounts> {
    return this.db.transaction(async (tx) => {
      // The device row lock serializes uploads per device, so the high-water marks read
      // below stay true until this transaction commits.
      await this.requireDevice(tx, userId, deviceId, 'FOR NO KEY UPDATE');
      const highWater = await this.highWater(tx, userId, deviceId);
      if (upload.signedPrekey) await this.putSigned(tx, userId, deviceId, 'x25519', upload.signedPrekey, highWater.signed);
      if (upload.lastResortKemPrekey) await this.putSigned(tx, userId, deviceId, 'mlkem', upload.lastResortKemPrekey, highWater['last-resort']);
      await this.putOneTime(tx, userId, deviceId, 'x25519', upload.oneTimePrekeys, highWater['one-time']);
      await this.putOneTime(tx, userId, deviceId, 'mlkem', upload.oneTimeKemPrekeys, highWater['one-time-kem']);
      await this.raiseHighWater(tx, userId, deviceId, {
        signed: upload.signedPrekey ? [upload.signedPrekey] : [],
        'last-resort': upload.lastResortKemPrekey ? [upload.lastResortKemPrekey] : [],
        'one-time': upload.oneTimePrekeys,
        'one-time-kem': upload.oneTimeKemPrekeys,
      });
      const counts = await this.counts(tx, userId, deviceId);
      if (counts.oneTimePrekeys > MAX_STORED_ONE_TIME_KEYS || counts.oneTimeKemPrekeys > MAX_STORED_ONE_TIME_KEYS) {
        throw new ProtocolError('TOO_MANY_KEYS', `at most ${MAX_STORED_ONE_TIME_KEYS} one-time keys of each kind may be stored`);
      }
      return counts;
    });
  }

  async countKeys(userId: string, deviceId: string): Promise<KeyCounts> {
    await this.requireDevice(this.db, userId, deviceId);
    return this.counts(this.db, userId, deviceId);
  }

  /**
   * Hands out a bundle, consuming one one-time X25519 prekey and one one-time ML-KEM
   * prekey when any are left and the target device's hand-out budget has a token (else
   * the bundle has no one-time X25519 key and the ML-KEM falls back to the last-resort
   * key: the handshake works without them). Rows are claimed with FOR UPDATE SKIP LOCKED
   * and deleted in the same transaction that takes the token, so two concurrent fetches
   * never receive the same one-time key and the budget holds across relays.
   */
  async fetchBundle(userId: string, deviceId: string, budget: HandoutBudget, nowMs: number): Promise<PrekeyBundle> {
    return this.db.transaction(async (tx) => {
      const device = await this.requireDevice(tx, userId, deviceId);
      const signed = await tx.query<KeyRow & { kind: number }>(
        'SELECT kind, key_id, public_key, signature FROM signed_prekeys WHERE user_id = $1 AND device_id = $2',
        [userId, deviceId],
      );
      const spk = signed.find((r) => r.kind === KIND_CODE.x25519);
      const lastResort = signed.find((r) => r.kind === KIND_CODE.mlkem);
      if (!spk || !lastResort) {
        throw new ProtocolError('NO_SIGNED_PREKEY', 'the device has not published its signed prekeys yet');
      }
      const allowed = await this.takeHandoutToken(tx, userId, deviceId, budget, nowMs);
      const otk = allowed ? await this.takeOneTime(tx, userId, deviceId, 'x25519') : undefined;
      const kem = allowed ? await this.takeOneTime(tx, userId, deviceId, 'mlkem') : undefined;
      const reason: WithheldReason = allowed ? 'exhausted' : 'target_budget';
      const withheld = [
        ...(otk === undefined ? [{ kind: 'x25519' as const, reason }] : []),
        ...(kem === undefined ? [{ kind: 'mlkem' as const, reason }] : []),
      ];
      return {
        withheld,
        userId,
        deviceId,
        identityKey: device.identityKey,
        signedPrekey: toKey(spk),
        oneTimePrekey: otk,
        kemPrekey: kem ?? toKey(lastResort),
        kemLastResort: kem === undefined,
      };
    });
  }

  private async requireDevice(q: SqlExecutor, userId: string, deviceId: string, lock: '' | 'FOR NO KEY UPDATE' = ''): Promise<{ identityKey: Uint8Array }> {
    const rows = await q.query<{ identity_key: Uint8Array }>(
      `SELECT identity_key FROM devices WHERE user_id = $1 AND device_id = $2 ${lock}`,
      [userId, deviceId],
    );
    const r = rows[0];
    if (!r) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device');
    return { identityKey: new Uint8Array(r.identity_key) };
  }

  /** The highest key id the device ever published, per kind (-1: none yet; ids start at 0). */
  private async highWater(tx: SqlExecutor, userId: string, deviceId: string): Promise<Record<IdKind, number>> {
    const rows = await tx.query<{ kind: number; max_key_id: string | number }>(
      'SELECT kind, max_key_id FROM prekey_id_high_water WHERE user_id = $1 AND device_id = $2',
      [userId, deviceId],
    );
    const out: Record<IdKind, number> = { signed: -1, 'last-resort': -1, 'one-time': -1, 'one-time-kem': -1 };
    for (const k of Object.keys(ID_KIND_CODE) as IdKind[]) {
      const r = rows.find((row) => Number(row.kind) === ID_KIND_CODE[k]);
      if (r) out[k] = Number(r.max_key_id);
    }
    return out;
  }

  private async raiseHighWater(tx: SqlExecutor, userId: string, deviceId: string, keys: Record<IdKind, readonly SignedKey[]>): Promise<void> {
    const kinds: number[] = [];
    const maxima: number[] = [];
    for (const k of Object.keys(ID_KIND_CODE) as IdKind[]) {
      if (keys[k].length === 0) continue;
      kinds.push(ID_KIND_CODE[k]);
      maxima.push(Math.max(...keys[k].map((x) => x.keyId)));
    }
    if (kinds.length === 0) return;
    await tx.query(
      `INSERT INTO prekey_id_high_water AS h (user_id, device_id, kind, max_key_id)
       SELECT $1, $2, x.kind, x.max_key_id FROM unnest($3::smallint[], $4::bigint[]) AS x(kind, max_key_id)
       ON CONFLICT (user_id, device_id, kind) DO UPDATE SET max_key_id = GREATEST(h.max_key_id, EXCLUDED.max_key_id)`,
      [userId, deviceId, kinds, maxima],
    );
  }

  /**
   * Takes one token from the target device's hand-out bucket, in one statement (the row
   * lock orders concurrent fetches on every relay). False when the bucket is empty; the
   * row is then left as it was, so the refill keeps counting from its last take.
   */
  private async takeHandoutToken(tx: SqlExecutor, userId: string, deviceId: string, budget: HandoutBudget, nowMs: number): Promise<boolean> {
    const rows = await tx.query<{ tokens: number }>(
      `INSERT INTO one_time_prekey_budget AS b (user_id, device_id, tokens, at_ms)
       VALUES ($1, $2, $3::double precision - 1, $5::bigint)
       ON CONFLICT (user_id, device_id) DO UPDATE
          SET tokens = LEAST($3::double precision, b.tokens + GREATEST(0, $5::bigint - b.at_ms) * $4::double precision / 1000) - 1,
              at_ms = GREATEST(b.at_ms, $5::bigint)
        WHERE LEAST($3::double precision, b.tokens + GREATEST(0, $5::bigint - b.at_ms) * $4::double precision / 1000) >= 1
       RETURNING tokens`,
      [userId, deviceId, budget.burst, budget.perSecond, Math.floor(nowMs)],
    );
    return rows.length === 1;
  }

  private async putSigned(tx: SqlExecutor, userId: string, deviceId: string, kind: KeyKind, key: SignedKey, highWater: number): Promise<void> {
    if (key.keyId <= highWater) {
      // Only the key stored now may come again (a retried upload); nothing older.
      const current = await tx.query<KeyRow>(
        'SELECT key_id, public_key, signature FROM signed_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = $3',
        [userId, deviceId, KIND_CODE[kind]],
      );
      const c = current[0] && toKey(current[0]);
      if (c && c.keyId === key.keyId && sameBytes(c.publicKey, key.publicKey) && sameBytes(c.signature, key.signature)) return;
      throw new ProtocolError('KEY_ID_REUSED', `${kind === 'x25519' ? 'signed prekey' : 'last-resort ML-KEM prekey'} id ${key.keyId} is not above ${highWater}, the highest used`, {
        highestKeyId: highWater,
      });
    }
    await tx.query(
      `INSERT INTO signed_prekeys (user_id, device_id, kind, key_id, public_key, signature)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (user_id, device_id, kind) DO UPDATE
         SET key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key,
             signature = EXCLUDED.signature, updated_at = now()`,
      [userId, deviceId, KIND_CODE[kind], key.keyId, key.publicKey, key.signature],
    );
  }

  private async putOneTime(
    tx: SqlExecutor,
    userId: string,
    deviceId: string,
    kind: KeyKind,
    keys: readonly SignedKey[],
    highWater: number,
  ): Promise<void> {
    if (keys.length === 0) return;
    const ids = keys.map((k) => k.keyId);
    if (new Set(ids).size !== ids.length) throw new ProtocolError('KEY_ID_CONFLICT', 'the upload repeats a key id');
    const what = kind === 'x25519' ? 'one-time prekey' : 'one-time ML-KEM prekey';
    // One multi-row statement for the whole batch.
    const inserted = await tx.query<{ key_id: string | number }>(
      `INSERT INTO one_time_prekeys (user_id, device_id, kind, key_id, public_key, signature)
       SELECT $1, $2, $3, k.key_id, k.public_key, k.signature
         FROM unnest($4::bigint[], $5::bytea[], $6::bytea[]) AS k(key_id, public_key, signature)
       ON CONFLICT (user_id, device_id, kind, key_id) DO NOTHING
       RETURNING key_id`,
      [userId, deviceId, KIND_CODE[kind], ids, keys.map((k) => k.publicKey), keys.map((k) => k.signature)],
    );
    const fresh = new Set(inserted.map((r) => Number(r.key_id)));
    // A new row at or below the high-water mark: that key was handed out (or replaced)
    // before, and comes back now. The transaction rolls back.
    const reused = [...fresh].find((id) => id <= highWater);
    if (reused !== undefined) {
      throw new ProtocolError('KEY_ID_REUSED', `${what} id ${reused} is not above ${highWater}, the highest used`, { highestKeyId: highWater });
    }
    if (inserted.length === keys.length) return;
    const retried = keys.filter((k) => !fresh.has(k.keyId));
    const existing = await tx.query<KeyRow>(
      `SELECT key_id, public_key, signature FROM one_time_prekeys
        WHERE user_id = $1 AND device_id = $2 AND kind = $3 AND key_id = ANY($4::bigint[])`,
      [userId, deviceId, KIND_CODE[kind], retried.map((k) => k.keyId)],
    );
    const byId = new Map(existing.map((r) => [Number(r.key_id), toKey(r)]));
    for (const k of retried) {
      const have = byId.get(k.keyId);
      if (!have || !sameBytes(have.publicKey, k.publicKey)) {
        throw new ProtocolError('KEY_ID_CONFLICT', `${what} id ${k.keyId} is already stored with other bytes`);
      }
    }
  }

  private async takeOneTime(tx: SqlExecutor, userId: string, deviceId: string, kind: KeyKind): Promise<SignedKey | undefined> {
    const rows = await tx.query<KeyRow>(
      `DELETE FROM one_time_prekeys
        WHERE (user_id, device_id, kind, key_id) = (
          SELECT user_id, device_id, kind, key_id FROM one_time_prekeys
           WHERE user_id = $1 AND device_id = $2 AND kind = $3
           ORDER BY key_id
           LIMIT 1
           FOR UPDATE SKIP LOCKED)
        RETURNING key_id, public_key, signature`,
      [userId, deviceId, KIND_CODE[kind]],
    );
    const r = rows[0];
    return r ? toKey(r) : undefined;
  }

  private async counts(q: SqlExecutor, userId: string, deviceId: string): Promise<KeyCounts> {
    const rows = await q.query<{ otk: number; kem: number; spk: number; lr: number }>(
      `SELECT
         (SELECT count(*)::int FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 1) AS otk,
         (SELECT count(*)::int FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 2) AS kem,
         (SELECT count(*)::int FROM signed_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 1) AS spk,
         (SELECT count(*)::int FROM signed_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 2) AS lr`,
      [userId, deviceId],
    );
    const r = rows[0];
    return {
      oneTimePrekeys: Number(r?.otk ?? 0),
      oneTimeKemPrekeys: Number(r?.kem ?? 0),
      hasSignedPrekey: Number(r?.spk ?? 0) > 0,
      hasLastResortKemPrekey: Number(r?.lr ?? 0) > 0,
    };
  }
}
