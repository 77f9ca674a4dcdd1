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
import { removeMailbox } from '../mailbox/store.js';
import { type Database, type SqlExecutor, UNIQUE_VIOLATION, sqlState } from '../storage/database.js';
import { MAX_STORED_ONE_TIME_KEYS } from '../limits.js';

export type KeyKind = 'x25519' | 'mlkem';
const KIND_CODE: Record<KeyKind, number> = { x25519: 1, mlkem: 2 };

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
  /** True when no one-time ML-KEM key was left and the last-resort key was used. */
  readonly kemLastResort: boolean;
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
  constructor(private readonly db: Database) {}

  /**
   * Appends one signed entry to a user's device list (crypto/devices), after checking it
   * against the stored list: root, link or revoke. The active-device set (`devices`, and
   * each device's mailbox) changes in the same transaction. Posting the entry already
   * stored at its position again is 'unchanged' (a retried request).
   */
  async appendDeviceEntry(userId: string, bytes: Uint8Array, backend: CryptoBackend): Promise<AppendedEntry> {
    return this.db.transaction(async (tx) => {
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
        await tx.query('DELETE FROM devices WHERE user_id = $1 AND device_id = $2', [userId, e.deviceId]);
        await removeMailbox(tx, userId, e.deviceId);
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
          await tx.query('DELETE FROM devices WHERE user_id = $1 AND device_id = $2', [userId, r.device_id]);
          await removeMailbox(tx, userId, r.device_id);
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
        await tx.query('INSERT INTO mailboxes (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [userId, e.deviceId]);
      } catch (err) {
        if (sqlState(err) === UNIQUE_VIOLATION) throw new ProtocolError('DEVICE_EXISTS', 'this device id is already registered');
        throw err;
      }
      return { outcome: 'created', kind: e.kind, deviceId: e.deviceId, seq: e.seq };
    });
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
   * Re-uploading a one-time key with the same id and bytes is a no-op (a retried
   * request); the same id with other bytes is KEY_ID_CONFLICT.
   */
  async uploadKeys(userId: string, deviceId: string, upload: KeyUpload): Promise<KeyCounts> {
    return this.db.transaction(async (tx) => {
      await this.requireDevice(tx, userId, deviceId);
      if (upload.signedPrekey) await this.putSigned(tx, userId, deviceId, 'x25519', upload.signedPrekey);
      if (upload.lastResortKemPrekey) await this.putSigned(tx, userId, deviceId, 'mlkem', upload.lastResortKemPrekey);
      await this.putOneTime(tx, userId, deviceId, 'x25519', upload.oneTimePrekeys);
      await this.putOneTime(tx, userId, deviceId, 'mlkem', upload.oneTimeKemPrekeys);
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
   * prekey when any are left (the ML-KEM falls back to the last-resort key). Rows are
   * claimed with FOR UPDATE SKIP LOCKED and deleted in the same transaction, so two
   * concurrent fetches never receive the same one-time key.
   */
  async fetchBundle(userId: string, deviceId: string): Promise<PrekeyBundle> {
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
      const otk = await this.takeOneTime(tx, userId, deviceId, 'x25519');
      const kem = await this.takeOneTime(tx, userId, deviceId, 'mlkem');
      return {
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

  private async requireDevice(q: SqlExecutor, userId: string, deviceId: string): Promise<{ identityKey: Uint8Array }> {
    const rows = await q.query<{ identity_key: Uint8Array }>(
      'SELECT identity_key FROM devices WHERE user_id = $1 AND device_id = $2',
      [userId, deviceId],
    );
    const r = rows[0];
    if (!r) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device');
    return { identityKey: new Uint8Array(r.identity_key) };
  }

  private async putSigned(tx: SqlExecutor, userId: string, deviceId: string, kind: KeyKind, key: SignedKey): Promise<void> {
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
  ): Promise<void> {
    if (keys.length === 0) return;
    const ids = keys.map((k) => k.keyId);
    if (new Set(ids).size !== ids.length) throw new ProtocolError('KEY_ID_CONFLICT', 'the upload repeats a key id');
    // One multi-row statement for the whole batch.
    const inserted = await tx.query<{ key_id: string | number }>(
      `INSERT INTO one_time_prekeys (user_id, device_id, kind, key_id, public_key, signature)
       SELECT $1, $2, $3, k.key_id, k.public_key, k.signature
         FROM unnest($4::bigint[], $5::bytea[], $6::bytea[]) AS k(key_id, public_key, signature)
       ON CONFLICT (user_id, device_id, kind, key_id) DO NOTHING
       RETURNING key_id`,
      [userId, deviceId, KIND_CODE[kind], ids, keys.map((k) => k.publicKey), keys.map((k) => k.signature)],
    );
    if (inserted.length === keys.length) return;
    const fresh = new Set(inserted.map((r) => Number(r.key_id)));
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
        throw new ProtocolError('KEY_ID_CONFLICT', `one-time ${kind} key id ${k.keyId} is already stored with other bytes`);
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
