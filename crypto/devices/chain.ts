/**
 * A user's device list as the state reached by replaying its signed entries (entry.ts)
 * from the root. Both the relay (before accepting an entry) and every client (on every
 * fetch, from the root or head it pinned) apply the same rules:
 *
 *   - the first entry is the root: it enrols the account's first device, self-signed;
 *   - every later entry extends the head: seq = number of entries so far, prev = hash of
 *     the previous entry (a fork or a rewritten history cannot verify);
 *   - it is signed by a device that is active at that point (added, not revoked);
 *   - an add carries the new device's consent, names a device id and identity key never
 *     seen in this list before (a revoked device can't come back under the same key or
 *     name), keeps at most MAX_DEVICES_PER_USER devices active, and comes before the
 *     list holds MAX_DEVICE_LIST_ENTRIES entries;
 *   - a revoke names an active device with its key, and leaves at least one device. It
 *     is accepted on a full list too: a device must stay revocable when a thief holding
 *     one of them filled the list with add/revoke pairs. The list stays bounded all the
 *     same (MAX_DEVICE_LIST_LENGTH): past the cap each entry removes an active device.
 *
 * So a token alone (a thief, or the relay itself) cannot add a device that senders would
 * encrypt to: that takes a signature from one of the user's own devices.
 */
import { MAX_DEVICE_LIST_ENTRIES, MAX_DEVICES_PER_USER } from '../../protocol/limits.js';
import { CryptoError } from '../errors.js';
import { signatureTranscript } from '../identity/signature-context.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { copyBytes, equalBytes, toHex } from '../primitives/bytes.js';
import { isRejectedEd25519PublicKey } from '../primitives/ed25519-policy.js';
import { defaultBackend } from '../primitives/index.js';
import {
  DEVICE_ENTRY_HASH_BYTES,
  DEVICE_ENTRY_SIGNATURE_LABEL,
  type DeviceEntry,
  type DeviceEntryKind,
  decodeDeviceEntry,
  deviceConsentTranscript,
  deviceEntryHash,
} from './entry.js';

export interface ListedDevice {
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  /** The seq of the entry that added it (0 for the root device). */
  readonly addedAt: number;
}

/** Why an entry does not extend a chain. */
export type DeviceChainRefusal =
  | 'malformed'
  | 'wrong-user'
  | 'chain-full'
  | 'root-exists'
  | 'no-root'
  | 'not-next'
  | 'signer-not-active'
  | 'bad-signature'
  | 'bad-consent'
  | 'device-exists'
  | 'too-many-devices'
  | 'not-active'
  | 'last-device';

export type DeviceChainStep =
  | { readonly ok: true; readonly chain: DeviceChain; readonly entry: DeviceEntry }
  | { readonly ok: false; readonly reason: DeviceChainRefusal; readonly message: string };

/** A plain, serializable form of a chain's state (for a client's store). */
export interface DeviceChainSnapshot {
  readonly userId: string;
  readonly length: number;
  readonly head: Uint8Array;
  readonly rootIdentityKey: Uint8Array | undefined;
  readonly devices: readonly ListedDevice[];
  /** Every device id and identity key (hex) the list has ever named. */
  readonly seenDeviceIds: readonly string[];
  readonly seenIdentityKeys: readonly string[];
}

/** A stored row the relay already verified: replayed without checking signatures. */
export interface TrustedDeviceEntry {
  readonly kind: DeviceEntryKind;
  readonly deviceId: string;
  readonly identityKey: Uint8Array;
  readonly hash: Uint8Array;
}

const ZERO_HASH = new Uint8Array(DEVICE_ENTRY_HASH_BYTES);

function refuse(reason: DeviceChainRefusal, message: string): DeviceChainStep {
  return { ok: false, reason, message };
}

/** Immutable: every step returns a new chain. */
export class DeviceChain {
  readonly userId: string;
  /** Number of entries (the next entry's seq). */
  readonly length: number;
  /** Hash of the newest entry; zeros when empty. */
  readonly head: Uint8Array;
  readonly rootIdentityKey: Uint8Array | undefined;
  readonly #active: ReadonlyMap<string, ListedDevice>;
  readonly #seenIds: ReadonlySet<string>;
  readonly #seenKeys: ReadonlySet<string>;

  private constructor(
    userId: string,
    length: number,
    head: Uint8Array,
    root: Uint8Array | undefined,
    active: ReadonlyMap<string, ListedDevice>,
    seenIds: ReadonlySet<string>,
    seenKeys: ReadonlySet<string>,
  ) {
    this.userId = userId;
    this.length = length;
    this.head = head;
    this.rootIdentityKey = root;
    this.#active = active;
    this.#seenIds = seenIds;
    this.#seenKeys = seenKeys;
  }

  static empty(userId: string): DeviceChain {
    return new DeviceChain(userId, 0, ZERO_HASH, undefined, new Map(), new Set(), new Set());
  }

  /**
   * Verifies a whole list from its root. Returns the chain, or the first entry that
   * fails (with its index).
   */
  static verify(
    userId: string,
    entries: readonly Uint8Array[],
    backend: CryptoBackend = defaultBackend,
  ): { ok: true; chain: DeviceChain } | { ok: false; index: number; reason: DeviceChainRefusal; message: string } {
    return DeviceChain.empty(userId).extend(entries, backend);
  }

  /** The relay's stored rows, verified when they were accepted, replayed in order. */
  static replay(userId: string, rows: readonly TrustedDeviceEntry[]): DeviceChain {
    let chain = DeviceChain.empty(userId);
    for (const row of rows) chain = chain.#next(row.kind, row.deviceId, row.identityKey, row.hash);
    return chain;
  }

  static fromSnapshot(s: DeviceChainSnapshot): DeviceChain {
    return new DeviceChain(
      s.userId,
      s.length,
      copyBytes(s.head),
      s.rootIdentityKey && copyBytes(s.rootIdentityKey),
      new Map(s.devices.map((d) => [d.deviceId, { deviceId: d.deviceId, identityKey: copyBytes(d.identityKey), addedAt: d.addedAt }])),
      new Set(s.seenDeviceIds),
      new Set(s.seenIdentityKeys),
    );
  }

  snapshot(): DeviceChainSnapshot {
    return {
      userId: this.userId,
      length: this.length,
      head: this.head.slice(),
      rootIdentityKey: this.rootIdentityKey?.slice(),
      devices: this.devices,
      seenDeviceIds: [...this.#seenIds],
      seenIdentityKeys: [...this.#seenKeys],
    };
  }

  /** Active devices, by device id. */
  get devices(): ListedDevice[] {
    return [...this.#active.values()]
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
      .map((d) => ({ ...d, identityKey: d.identityKey.slice() }));
  }

  device(deviceId: string): ListedDevice | undefined {
    const d = this.#active.get(deviceId);
    return d && { ...d, identityKey: d.identityKey.slice() };
  }

  /** Applies entries in order; stops at the first that fails. */
  extend(
    entries: readonly Uint8Array[],
    backend: CryptoBackend = defaultBackend,
  ): { ok: true; chain: DeviceChain } | { ok: false; index: number; reason: DeviceChainRefusal; message: string } {
    let chain: DeviceChain = this;
    for (let i = 0; i < entries.length; i++) {
      const step = chain.append(entries[i] as Uint8Array, backend);
      if (!step.ok) return { ok: false, index: i, reason: step.reason, message: step.message };
      chain = step.chain;
    }
    return { ok: true, chain };
  }

  /** Checks one encoded entry against this state and returns the state after it. */
  append(bytes: Uint8Array, backend: CryptoBackend = defaultBackend): DeviceChainStep {
    let e: DeviceEntry;
    try {
      e = decodeDeviceEntry(bytes);
    } catch (err) {
      if (err instanceof CryptoError) return refuse('malformed', err.message);
      throw err;
    }
    if (e.userId !== this.userId) return refuse('wrong-user', `the entry is for another user`);
    if (e.kind === 'root' && this.length > 0) return refuse('root-exists', 'this user already has a device list; a device must be linked by an existing one');
    if (e.kind !== 'root' && this.length === 0) return refuse('no-root', 'this user has no device list yet; the first entry must be the root');
    if (e.seq !== this.length || !equalBytes(e.prev, this.head)) {
      return refuse('not-next', `the entry does not extend the list's head (entry ${e.seq}, list length ${this.length})`);
    }
    const signed = signatureTranscript(DEVICE_ENTRY_SIGNATURE_LABEL, e.bytes.subarray(0, e.signedLength));
    const consent = (): boolean =>
      e.consent !== undefined && backend.ed25519Verify(e.consent, deviceConsentTranscript(e.userId, e.deviceId, e.identityKey), e.identityKey);

    if (e.kind === 'root' || e.kind === 'add') {
      if (this.length >= MAX_DEVICE_LIST_ENTRIES) {
        return refuse('chain-full', `a device list takes devices for its first ${MAX_DEVICE_LIST_ENTRIES} entries only; revocations are still accepted`);
      }
      if (isRejectedEd25519PublicKey(e.identityKey)) return refuse('malformed', 'the identity key is a small-order or non-canonical point');
      if (this.#seenIds.has(e.deviceId) || this.#seenKeys.has(toHex(e.identityKey))) {
        return refuse('device-exists', `device ${e.deviceId} or its identity key is already in this list's history`);
      }
      if (this.#active.size >= MAX_DEVICES_PER_USER) return refuse('too-many-devices', `a user may have at most ${MAX_DEVICES_PER_USER} devices`);
    }
    let signerKey: Uint8Array;
    if (e.kind === 'root') {
      if (e.signerDeviceId !== e.deviceId) return refuse('malformed', 'a root entry is signed by its own device');
      signerKey = e.identityKey;
    } else {
      const signer = this.#active.get(e.signerDeviceId);
      if (signer === undefined) return refuse('signer-not-active', `device ${e.signerDeviceId} is not an active device of this user`);
      signerKey = signer.identityKey;
    }
    if (!backend.ed25519Verify(e.signature, signed, signerKey)) return refuse('bad-signature', 'the entry signature does not verify with the signer\'s identity key');
    if (e.kind !== 'revoke' && !consent()) return refuse('bad-consent', 'the new device\'s consent signature does not verify');
    if (e.kind === 'revoke') {
      const subject = this.#active.get(e.deviceId);
      if (subject === undefined || !equalBytes(subject.identityKey, e.identityKey)) {
        return refuse('not-active', `device ${e.deviceId} with this identity key is not active`);
      }
      if (this.#active.size <= 1) return refuse('last-device', 'the last device of an account cannot be revoked');
    }
    return { ok: true, chain: this.#next(e.kind, e.deviceId, e.identityKey, deviceEntryHash(backend, e)), entry: e };
  }

  #next(kind: DeviceEntryKind, deviceId: string, identityKey: Uint8Array, hash: Uint8Array): DeviceChain {
    const active = new Map(this.#active);
    const seenIds = new Set(this.#seenIds);
    const seenKeys = new Set(this.#seenKeys);
    if (kind === 'revoke') {
      active.delete(deviceId);
    } else {
      active.set(deviceId, { deviceId, identityKey: copyBytes(identityKey), addedAt: this.length });
      seenIds.add(deviceId);
      seenKeys.add(toHex(identityKey));
    }
    const root = kind === 'root' ? copyBytes(identityKey) : this.rootIdentityKey;
    return new DeviceChain(this.userId, this.length + 1, copyBytes(hash), root, active, seenIds, seenKeys);
  }
}
