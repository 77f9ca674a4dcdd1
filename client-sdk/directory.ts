/**
 * Other users' (and our own) devices, as verified lists, and the trust the client places
 * in them. The relay is not trusted: every list is verified from the root the client
 * pinned, or from the head it verified before, and only devices in a verified list are
 * ever encrypted to. A list served shorter than the pinned one from the same root, or with
 * another history, is DEVICE_LIST_INVALID; a list from a new root (an account reset) is
 * IDENTITY_CHANGED, and the trust policy decides
 * whether sending to that user goes on ('warn') or waits until the app accepts it
 * ('block'; a user marked verified always blocks).
 */
import { DeviceChain, type DeviceChainSnapshot, type ListedDevice } from '../crypto/devices/chain.js';
import type { PreKeyBundle } from '../crypto/handshake/index.js';
import { keyFingerprint } from '../crypto/keys.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { equalBytes } from '../crypto/primitives/bytes.js';
import { SdkError } from './errors.js';
import { type Flag, FlagQueue } from './flags.js';
import { DEVICE_LIST_REFRESH_MS } from './limits.js';
import { NS, type StoreTx, type Transactor, decodeRecord, encodeRecord } from './stores/store.js';
import type { RelayHttp } from './transport/http.js';

export type TrustPolicy = 'block' | 'warn';

interface ListRecord {
  v: 1;
  chain: DeviceChainSnapshot;
  fetchedAt: number;
}

export interface TrustRecord {
  v: 1;
  /** The account root pinned for the user. */
  root: Uint8Array;
  /** Compared out of band (safety number) and marked verified by the app. */
  verified: boolean;
  /** The root changed and sending waits until the app accepts the new one. */
  blocked: boolean;
  /** The root before the change, while blocked. */
  previousRoot?: Uint8Array | undefined;
}

/** Highest prekey ids seen in bundles from one device: older ones are replays. */
interface FreshnessRecord {
  v: 1;
  signed: number;
  oneTime: number;
  kemOneTime: number;
  lastResort: number;
}

export class Directory {
  constructor(
    private readonly db: Transactor,
    private readonly http: RelayHttp,
    private readonly backend: CryptoBackend,
    private readonly now: () => number,
    private readonly policy: TrustPolicy,
    private readonly flags: FlagQueue,
    /** This device's own user: its list never restarts from another root for us. */
    private readonly ownUserId: string,
  ) {}

  static async loadList(tx: StoreTx, userId: string): Promise<DeviceChain | undefined> {
    const raw = await tx.get(NS.devices, `list:${userId}`);
    return raw === undefined ? undefined : DeviceChain.fromSnapshot(decodeRecord<ListRecord>(raw).chain);
  }

  static async loadTrust(tx: StoreTx, userId: string): Promise<TrustRecord | undefined> {
    const raw = await tx.get(NS.trust, userId);
    return raw === undefined ? undefined : decodeRecord<TrustRecord>(raw);
  }

  /**
   * The verified list of `userId`, fetched again when older than DEVICE_LIST_REFRESH_MS
   * or when `refresh` is set. Throws DEVICE_LIST_INVALID when the relay's answer does not
   * verify (the flag is stored too).
   */
  async devices(userId: string, opts: { refresh?: boolean } = {}): Promise<DeviceChain> {
    const cached = await this.db.run(async (tx) => {
      const raw = await tx.get(NS.devices, `list:${userId}`);
      return raw === undefined ? undefined : decodeRecord<ListRecord>(raw);
    });
    if (cached && !opts.refresh && this.now() - cached.fetchedAt < DEVICE_LIST_REFRESH_MS) return DeviceChain.fromSnapshot(cached.chain);
    const pinned = cached ? DeviceChain.fromSnapshot(cached.chain) : undefined;
    // Only the entries after the pinned head, unless nothing is pinned.
    const answer = await this.http.deviceList(userId, pinned && pinned.length > 0 ? pinned.length - 1 : undefined);
    let next: DeviceChain | undefined;
    let problem: string | undefined;
    if (pinned && pinned.length > 0) {
      if (answer.length < pinned.length) {
        // Shorter than what was verified: a rollback of the same list (refused below), or
        // a list restarted from a new root after an account reset (IDENTITY_CHANGED).
        next = undefined;
      } else {
        const r = pinned.extend(answer.entries, this.backend);
        // Same length and head: the list we pinned, perhaps extended. Another head at the
        // same length is another history (or a new root): read it whole, below.
        if (r.ok && r.chain.length === answer.length && answer.head !== undefined && equalBytes(answer.head, r.chain.head)) next = r.chain;
        else if (r.ok && r.chain.length === answer.length) next = undefined;
        else if (!r.ok && r.reason === 'root-exists') next = undefined; // a new list altogether: checked below
        else problem = r.ok ? 'the relay\'s list is longer than the entries it served' : `entry ${pinned.length + r.index}: ${r.reason}: ${r.message}`;
      }
      if (next === undefined && problem === undefined) {
        // The list may have restarted from a new root: read it whole.
        const whole = await this.http.deviceList(userId);
        const r = DeviceChain.verify(userId, whole.entries, this.backend);
        if (!r.ok) problem = `entry ${r.index}: ${r.reason}: ${r.message}`;
        else if (r.chain.length !== whole.length) problem = 'the relay\'s list is longer than the entries it served';
        else if (r.chain.rootIdentityKey === undefined) problem = `the relay served an empty list; ${pinned.length} entries were verified before`;
        else if (pinned.rootIdentityKey && equalBytes(r.chain.rootIdentityKey, pinned.rootIdentityKey)) {
          problem = r.chain.length < pinned.length ? `the relay served ${r.chain.length} entries; ${pinned.length} were verified before` : 'the relay served another history of the same list';
        } else if (userId === this.ownUserId) {
          // Our own account restarting from a root none of our devices signed is the
          // relay's doing (an operator reset ends this device anyway): adopting it would
          // copy every message we send to the relay's devices.
          problem = 'the relay served this user\'s own list from another root';
        } else next = r.chain;
      }
    } else {
      const r = DeviceChain.verify(userId, answer.entries, this.backend);
      if (!r.ok) problem = `entry ${r.index}: ${r.reason}: ${r.message}`;
      else if (r.chain.length !== answer.length) problem = 'the relay\'s list is longer than the entries it served';
      else next = r.chain;
    }
    if (problem !== undefined || next === undefined) {
      const why = problem ?? 'invalid';
      await this.db.run((tx) => this.flags.add(tx, this.#flag('DEVICE_LIST_INVALID', userId, why, { pinnedLength: pinned?.length ?? 0, servedLength: answer.length })));
      throw new SdkError('DEVICE_LIST_INVALID', `the device list of ${userId} does not verify: ${why}`);
    }
    const verified = next;
    return this.db.run(async (tx) => {
      await this.#adopt(tx, userId, pinned, verified);
      return verified;
    });
  }

  /** Stores a newly verified list, raising flags for what changed since the pinned one. */
  async #adopt(tx: StoreTx, userId: string, pinned: DeviceChain | undefined, next: DeviceChain): Promise<void> {
    tx.put(NS.devices, `list:${userId}`, encodeRecord({ v: 1, chain: next.snapshot(), fetchedAt: this.now() } satisfies ListRecord));
    const root = next.rootIdentityKey;
    if (root === undefined) return;
    const trust = await Directory.loadTrust(tx, userId);
    if (trust === undefined) {
      tx.put(NS.trust, userId, encodeRecord({ v: 1, root, verified: false, blocked: false } satisfies TrustRecord));
    } else if (!equalBytes(trust.root, root)) {
      const blocked = this.policy === 'block' || trust.verified;
      tx.put(NS.trust, userId, encodeRecord({ v: 1, root, verified: false, blocked, previousRoot: trust.root } satisfies TrustRecord));
      this.flags.add(
        tx,
        this.#flag('IDENTITY_CHANGED', userId, blocked ? 'the account root changed; sending is blocked until the change is accepted' : 'the account root changed', {
          previousRoot: keyFingerprint(trust.root, this.backend),
          newRoot: keyFingerprint(root, this.backend),
          wasVerified: trust.verified,
          blocked,
        }),
      );
    }
    if (pinned === undefined || pinned.length === 0) return;
    const before = new Map(pinned.devices.map((d) => [d.deviceId, d]));
    const after = new Map(next.devices.map((d) => [d.deviceId, d]));
    for (const d of next.devices) {
      if (!before.has(d.deviceId)) this.flags.add(tx, this.#flag('DEVICE_ADDED', userId, `device ${d.deviceId} was added`, { deviceId: d.deviceId, identityKey: keyFingerprint(d.identityKey, this.backend), seq: d.addedAt }, d.deviceId));
    }
    for (const d of pinned.devices) {
      if (!after.has(d.deviceId)) this.flags.add(tx, this.#flag('DEVICE_REMOVED', userId, `device ${d.deviceId} was revoked`, { deviceId: d.deviceId, identityKey: keyFingerprint(d.identityKey, this.backend) }, d.deviceId));
    }
  }

  #flag(code: Flag['code'], userId: string, detail: string, evidence: Record<string, unknown>, deviceId?: string): Flag {
    return { code, userId, deviceId, at: this.now(), detail, evidence };
  }

  /** Throws IDENTITY_BLOCKED while a changed identity waits for the app to accept it. */
  assertSendable(userId: string): Promise<void> {
    return this.db.run((tx) => Directory.assertSendableIn(tx, userId));
  }

  /** assertSendable inside a transaction (the one that seals for `userId`). */
  static async assertSendableIn(tx: StoreTx, userId: string): Promise<void> {
    const trust = await Directory.loadTrust(tx, userId);
    if (trust?.blocked) throw new SdkError('IDENTITY_BLOCKED', `the identity of ${userId} changed; accept it before sending`);
  }

  /** Accepts a changed identity: sending resumes (the user is no longer marked verified). */
  accept(userId: string): Promise<void> {
    return this.db.run(async (tx) => {
      const t = await Directory.loadTrust(tx, userId);
      if (!t) throw new SdkError('UNKNOWN_USER', `no identity pinned for ${userId}`);
      tx.put(NS.trust, userId, encodeRecord({ v: 1, root: t.root, verified: false, blocked: false } satisfies TrustRecord));
    });
  }

  /** Marks a user's current identity verified (after comparing safety numbers). */
  markVerified(userId: string, verified = true): Promise<void> {
    return this.db.run(async (tx) => {
      const t = await Directory.loadTrust(tx, userId);
      if (!t) throw new SdkError('UNKNOWN_USER', `no identity pinned for ${userId}`);
      tx.put(NS.trust, userId, encodeRecord({ ...t, verified }));
    });
  }

  /**
   * A prekey bundle of `device`, checked before any use: its identity key must be the one
   * the verified list names, and its key ids must not go back to ones seen before (a
   * replayed old key). Signatures are checked by initiateSession.
   */
  async bundle(userId: string, device: ListedDevice): Promise<PreKeyBundle> {
    const b = await this.http.bundle(userId, device.deviceId);
    const slot = `fresh:${userId} ${device.deviceId}`;
    const refusal = await this.db.run(async (tx) => {
      if (b.userId !== userId || b.deviceId !== device.deviceId) return 'the relay served a bundle for another device';
      if (!equalBytes(b.identityKey, device.identityKey)) return `the bundle of ${userId}/${device.deviceId} has another identity key than its verified list`;
      const raw = await tx.get(NS.devices, slot);
      const seen: FreshnessRecord = raw === undefined ? { v: 1, signed: 0, oneTime: 0, kemOneTime: 0, lastResort: 0 } : decodeRecord<FreshnessRecord>(raw);
      if (b.signedPrekey.keyId < seen.signed) return `signed prekey ${b.signedPrekey.keyId} is older than ${seen.signed}, seen before`;
      if (b.oneTimePrekey && b.oneTimePrekey.keyId <= seen.oneTime) return `one-time prekey ${b.oneTimePrekey.keyId} was seen before`;
      if (b.kemLastResort ? b.kemPrekey.keyId < seen.lastResort : b.kemPrekey.keyId <= seen.kemOneTime) return `ML-KEM prekey ${b.kemPrekey.keyId} was seen before`;
      tx.put(
        NS.devices,
        slot,
        encodeRecord({
          v: 1,
          signed: b.signedPrekey.keyId,
          oneTime: b.oneTimePrekey ? b.oneTimePrekey.keyId : seen.oneTime,
          kemOneTime: b.kemLastResort ? seen.kemOneTime : b.kemPrekey.keyId,
          lastResort: b.kemLastResort ? b.kemPrekey.keyId : seen.lastResort,
        } satisfies FreshnessRecord),
      );
      return undefined;
    });
    if (refusal !== undefined) {
      await this.db.run((tx) => this.flags.add(tx, this.#flag('DEVICE_LIST_INVALID', userId, refusal, { deviceId: device.deviceId }, device.deviceId)));
      throw new SdkError('DEVICE_LIST_INVALID', refusal);
    }
    return {
      identityKey: b.identityKey,
      signedPreKey: { id: b.signedPrekey.keyId, publicKey: b.signedPrekey.publicKey, signature: b.signedPrekey.signature },
      oneTimePreKey: b.oneTimePrekey && { id: b.oneTimePrekey.keyId, publicKey: b.oneTimePrekey.publicKey, signature: b.oneTimePrekey.signature },
      kemPreKey: { id: b.kemPrekey.keyId, publicKey: b.kemPrekey.publicKey, signature: b.kemPrekey.signature, lastResort: b.kemLastResort },
    };
  }
}
