/**
 * This device: its identity, the prekeys it publishes, and the private halves it keeps.
 *
 * Prekeys are generated, stored, and only then uploaded (a key the relay hands out is
 * always one we can use). Key ids only grow, per kind, and the next ids are kept in the
 * store with the keys, so they keep growing across restarts: the relay (KEY_ID_REUSED)
 * and every initiator (Directory.bundle) refuse an old key presented again. One-time
 * keys are refilled to PREKEY_HIGH_WATER when the relay holds fewer than
 * PREKEY_LOW_WATER; the signed prekey and the last-resort
 * ML-KEM key are replaced every SIGNED_PREKEY_ROTATION_MS, the replaced ones kept for
 * REPLACED_PREKEY_RETENTION_MS so that sessions started from them still begin.
 */
import type { KemPreKeyRecord, OneTimePreKeyRecord, PreKeyStore, SignedPreKeyRecord } from '../crypto/handshake/index.js';
import { generateKemPreKey, generateOneTimePreKey, generateSignedPreKey } from '../crypto/handshake/index.js';
import { IdentityKeyPair } from '../crypto/identity/identity-key.js';
import { MlKem768PrivateKey, X25519PrivateKey } from '../crypto/keys.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { MAX_KEYS_PER_UPLOAD } from '../protocol/limits.js';
import { SdkError } from './errors.js';
import { MAX_KEY_ID_CATCH_UP, PREKEY_HIGH_WATER, PREKEY_LOW_WATER, REPLACED_PREKEY_RETENTION_MS, SIGNED_PREKEY_ROTATION_MS } from './limits.js';
import { NS, type StoreTx, type Transactor, decodeRecord, encodeRecord } from './stores/store.js';
import type { KeyUpload, RelayHttp, WireKey } from './transport/http.js';

export type DeviceStatus = 'unlinked' | 'linked' | 'revoked';

/** What the store keeps about this device (NS.meta / "device"). */
export interface DeviceRecord {
  readonly v: 1;
  readonly userId: string;
  readonly deviceId: string;
  readonly seed: Uint8Array;
  status: DeviceStatus;
  /** The next id of each kind: one-time X25519, signed X25519, ML-KEM (one-time and last resort). */
  nextId: { otk: number; spk: number; kem: number };
  /** The current signed prekey and last-resort key, and when they were made. */
  signed: { id: number; createdAt: number } | undefined;
  lastResort: { id: number; createdAt: number } | undefined;
}

interface StoredKey {
  readonly secret: Uint8Array;
  readonly signature: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly lastResort?: boolean;
  retiredAt?: number;
}

const DEVICE_KEY = 'device';

export async function loadDevice(tx: StoreTx): Promise<DeviceRecord | undefined> {
  const raw = await tx.get(NS.meta, DEVICE_KEY);
  if (raw === undefined) return undefined;
  const d = decodeRecord<DeviceRecord>(raw);
  if (d.v !== 1) throw new SdkError('STORE_CORRUPT', `unknown device record version ${String(d.v)}`);
  return d;
}

export function saveDevice(tx: StoreTx, d: DeviceRecord): void {
  tx.put(NS.meta, DEVICE_KEY, encodeRecord(d));
}

export function newDevice(userId: string, deviceId: string, random: RandomSource): DeviceRecord {
  return { v: 1, userId, deviceId, seed: random(32), status: 'unlinked', nextId: { otk: 1, spk: 1, kem: 1 }, signed: undefined, lastResort: undefined };
}

function wire(id: number, k: StoredKey): WireKey {
  return { keyId: id, publicKey: k.publicKey, signature: k.signature };
}

/** The responder's prekeys, read from and consumed in the caller's transaction. */
export class TxPreKeyStore implements PreKeyStore {
  constructor(
    private readonly tx: StoreTx,
    private readonly backend: CryptoBackend,
  ) {}

  async #get(kind: string, id: number): Promise<StoredKey | undefined> {
    const raw = await this.tx.get(NS.prekeys, `${kind}:${id}`);
    return raw === undefined ? undefined : decodeRecord<StoredKey>(raw);
  }

  async loadSignedPreKey(id: number): Promise<SignedPreKeyRecord | undefined> {
    const k = await this.#get('spk', id);
    return k && { id, publicKey: k.publicKey, signature: k.signature, privateKey: X25519PrivateKey.fromBytes(k.secret, this.backend) };
  }

  async loadOneTimePreKey(id: number): Promise<OneTimePreKeyRecord | undefined> {
    const k = await this.#get('otk', id);
    return k && { id, publicKey: k.publicKey, signature: k.signature, privateKey: X25519PrivateKey.fromBytes(k.secret, this.backend) };
  }

  async loadKemPreKey(id: number): Promise<KemPreKeyRecord | undefined> {
    const k = await this.#get('kem', id);
    return (
      k && { id, publicKey: k.publicKey, signature: k.signature, lastResort: k.lastResort === true, privateKey: MlKem768PrivateKey.fromBytes(k.secret, this.backend) }
    );
  }

  removeOneTimePreKey(id: number): void {
    this.tx.delete(NS.prekeys, `otk:${id}`);
  }

  removeKemPreKey(id: number): void {
    this.tx.delete(NS.prekeys, `kem:${id}`);
  }
}

export class DeviceKeys {
  readonly identity: IdentityKeyPair;

  constructor(
    readonly record: Readonly<DeviceRecord>,
    private readonly db: Transactor,
    private readonly http: RelayHttp,
    private readonly backend: CryptoBackend,
    private readonly random: RandomSource,
    private readonly now: () => number,
  ) {
    this.identity = IdentityKeyPair.fromSeed(record.seed, backend);
  }

  get userId(): string {
    return this.record.userId;
  }

  get deviceId(): string {
    return this.record.deviceId;
  }

  /**
   * Brings the relay's prekeys up to date: a signed prekey and a last-resort key that are
   * current (made or replaced), and at least PREKEY_LOW_WATER one-time keys of each kind
   * (refilled to PREKEY_HIGH_WATER). Returns what was uploaded.
   */
  maintain(): Promise<{ uploaded: number }> {
    // One at a time: the relay refuses a key id at or below one it already has
    // (KEY_ID_REUSED), so two runs whose uploads crossed would lose the older one's keys.
    const run = this.#maintaining.then(() => this.#maintainCatchingUp());
    this.#maintaining = run.catch(() => undefined);
    return run;
  }

  #maintaining: Promise<unknown> = Promise.resolve();

  async #maintainCatchingUp(): Promise<{ uploaded: number }> {
    try {
      return await this.#maintainOnce();
    } catch (err) {
      if (!(await this.#skipUsedIds(err))) throw err;
      return this.#maintainOnce();
    }
  }

  /**
   * On KEY_ID_REUSED the relay has seen higher key ids than this store holds (it was
   * restored from a backup, say): every counter moves past the highest id the relay
   * names (within MAX_KEY_ID_CATCH_UP), and the signed prekey and last-resort key are
   * made again, since the relay's current ones may be keys this store never had. Returns
   * whether it did, so that the caller tries once more.
   */
  async #skipUsedIds(err: unknown): Promise<boolean> {
    if (!(err instanceof SdkError) || err.relayCode !== 'KEY_ID_REUSED') return false;
    const highest = err.details?.highestKeyId;
    if (typeof highest !== 'number' || !Number.isSafeInteger(highest) || highest < 0) return false;
    return this.db.run(async (tx) => {
      const d = (await loadDevice(tx)) as DeviceRecord;
      const next = highest + 1;
      if (next - Math.min(d.nextId.otk, d.nextId.spk, d.nextId.kem) > MAX_KEY_ID_CATCH_UP) return false;
      d.nextId = { otk: Math.max(d.nextId.otk, next), spk: Math.max(d.nextId.spk, next), kem: Math.max(d.nextId.kem, next) };
      const now = this.now();
      if (d.signed) await this.#retire(tx, 'spk', d.signed.id, now);
      if (d.lastResort) await this.#retire(tx, 'kem', d.lastResort.id, now);
      d.signed = undefined;
      d.lastResort = undefined;
      saveDevice(tx, d);
      return true;
    });
  }

  async #maintainOnce(): Promise<{ uploaded: number }> {
    const counts = await this.http.keyCounts(this.deviceId);
    let uploaded = 0;
    const opts = { backend: this.backend, random: this.random };
    // Signed prekey and last-resort key: new when missing or due.
    const rotation = await this.db.run(async (tx) => {
      const d = (await loadDevice(tx)) as DeviceRecord;
      const now = this.now();
      const upload: { signedPrekey?: WireKey; lastResortKemPrekey?: WireKey } = {};
      if (!counts.hasSignedPrekey || d.signed === undefined || now - d.signed.createdAt >= SIGNED_PREKEY_ROTATION_MS) {
        const id = d.nextId.spk++;
        const r = generateSignedPreKey(this.identity, id, opts);
        const k: StoredKey = { secret: r.privateKey.exportSecret(), signature: r.signature, publicKey: r.publicKey };
        tx.put(NS.prekeys, `spk:${id}`, encodeRecord(k));
        if (d.signed) await this.#retire(tx, 'spk', d.signed.id, now);
        d.signed = { id, createdAt: now };
        upload.signedPrekey = wire(id, k);
      }
      if (!counts.hasLastResortKemPrekey || d.lastResort === undefined || now - d.lastResort.createdAt >= SIGNED_PREKEY_ROTATION_MS) {
        const id = d.nextId.kem++;
        const r = generateKemPreKey(this.identity, id, true, opts);
        const k: StoredKey = { secret: r.privateKey.exportSecret(), signature: r.signature, publicKey: r.publicKey, lastResort: true };
        tx.put(NS.prekeys, `kem:${id}`, encodeRecord(k));
        if (d.lastResort) await this.#retire(tx, 'kem', d.lastResort.id, now);
        d.lastResort = { id, createdAt: now };
        upload.lastResortKemPrekey = wire(id, k);
      }
      await this.#pruneRetired(tx, now);
      saveDevice(tx, d);
      return upload;
    });
    if (rotation.signedPrekey || rotation.lastResortKemPrekey) {
      await this.http.uploadKeys(this.deviceId, rotation);
      uploaded += (rotation.signedPrekey ? 1 : 0) + (rotation.lastResortKemPrekey ? 1 : 0);
    }
    // One-time keys, refilled in uploads of at most MAX_KEYS_PER_UPLOAD together.
    let needOtk = counts.oneTimePrekeys < PREKEY_LOW_WATER ? PREKEY_HIGH_WATER - counts.oneTimePrekeys : 0;
    let needKem = counts.oneTimeKemPrekeys < PREKEY_LOW_WATER ? PREKEY_HIGH_WATER - counts.oneTimeKemPrekeys : 0;
    while (needOtk > 0 || needKem > 0) {
      const otk = Math.min(needOtk, Math.ceil(MAX_KEYS_PER_UPLOAD / 2), MAX_KEYS_PER_UPLOAD);
      const kem = Math.min(needKem, MAX_KEYS_PER_UPLOAD - otk);
      const upload = await this.db.run(async (tx) => {
        const d = (await loadDevice(tx)) as DeviceRecord;
        const out: Required<Pick<KeyUpload, 'oneTimePrekeys' | 'oneTimeKemPrekeys'>> = { oneTimePrekeys: [], oneTimeKemPrekeys: [] };
        for (let i = 0; i < otk; i++) {
          const id = d.nextId.otk++;
          const r = generateOneTimePreKey(this.identity, id, opts);
          const k: StoredKey = { secret: r.privateKey.exportSecret(), signature: r.signature, publicKey: r.publicKey };
          tx.put(NS.prekeys, `otk:${id}`, encodeRecord(k));
          (out.oneTimePrekeys as WireKey[]).push(wire(id, k));
        }
        for (let i = 0; i < kem; i++) {
          const id = d.nextId.kem++;
          const r = generateKemPreKey(this.identity, id, false, opts);
          const k: StoredKey = { secret: r.privateKey.exportSecret(), signature: r.signature, publicKey: r.publicKey, lastResort: false };
          tx.put(NS.prekeys, `kem:${id}`, encodeRecord(k));
          (out.oneTimeKemPrekeys as WireKey[]).push(wire(id, k));
        }
        saveDevice(tx, d);
        return out;
      });
      await this.http.uploadKeys(this.deviceId, upload);
      uploaded += otk + kem;
      needOtk -= otk;
      needKem -= kem;
    }
    return { uploaded };
  }

  async #retire(tx: StoreTx, kind: 'spk' | 'kem', id: number, now: number): Promise<void> {
    const raw = await tx.get(NS.prekeys, `${kind}:${id}`);
    if (raw === undefined) return;
    const k = decodeRecord<StoredKey>(raw);
    k.retiredAt = now;
    tx.put(NS.prekeys, `${kind}:${id}`, encodeRecord(k));
  }

  async #pruneRetired(tx: StoreTx, now: number): Promise<void> {
    for (const prefix of ['spk:', 'kem:']) {
      for (const [key, raw] of await tx.list(NS.prekeys, prefix)) {
        const k = decodeRecord<StoredKey>(raw);
        if (k.retiredAt !== undefined && now - k.retiredAt >= REPLACED_PREKEY_RETENTION_MS) tx.delete(NS.prekeys, key);
      }
    }
  }
}
