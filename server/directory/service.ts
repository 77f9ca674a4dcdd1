/**
 * The key directory's rules on top of its store: every signature is verified before
 * anything is stored (a rejected request changes nothing), the caller must own the
 * device it changes, device lists change only by entries signed by the user's own
 * devices, and bundle fetches, key uploads and list changes are rate limited per user.
 * One-time prekey hand-outs are also limited per target device, in the database, so the
 * limit holds across relays (store.ts, fetchBundle).
 */
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { type PublishedKeyKind, verifyPublishedKey } from '../../crypto/published-key.js';
import type { DeviceEntryRequest, KeyUploadRequest, WireSignedKey } from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import {
  BUNDLE_FETCH_BURST,
  BUNDLE_FETCH_PER_SECOND,
  DEVICE_LIST_WRITE_BURST,
  DEVICE_LIST_WRITES_PER_SECOND,
  KEY_UPLOAD_BURST,
  KEY_UPLOADS_PER_SECOND,
} from '../../protocol/limits.js';
import { DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST, DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR } from '../limits.js';
import { RateLimiter } from '../ratelimit.js';
import type { AppendedEntry, DeviceListRecord, DeviceRecord, DirectoryStore, HandoutBudget, KeyCounts, KeyKind, PrekeyBundle, WithheldReason } from './store.js';

export interface DirectoryServiceOptions {
  readonly now?: () => number;
  /** One-time prekey hand-outs per target device, shared by all relays. */
  readonly handout?: { readonly burst: number; readonly perHour: number };
  /** Told of each one-time key a bundle goes without, and why (metrics). */
  readonly onWithheld?: (kind: KeyKind, reason: WithheldReason) => void;
}

export class DirectoryService {
  private readonly bundleLimiter: RateLimiter;
  private readonly deviceListLimiter: RateLimiter;
  private readonly uploadLimiter: RateLimiter;
  private readonly handout: HandoutBudget;
  private readonly now: () => number;

  constructor(
    private readonly store: DirectoryStore,
    private readonly backend: CryptoBackend,
    private readonly opts: DirectoryServiceOptions = {},
  ) {
    const now = opts.now ?? Date.now;
    this.now = now;
    this.bundleLimiter = new RateLimiter(BUNDLE_FETCH_BURST, BUNDLE_FETCH_PER_SECOND, now);
    this.deviceListLimiter = new RateLimiter(DEVICE_LIST_WRITE_BURST, DEVICE_LIST_WRITES_PER_SECOND, now);
    this.uploadLimiter = new RateLimiter(KEY_UPLOAD_BURST, KEY_UPLOADS_PER_SECOND, now);
    const h = opts.handout ?? { burst: DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST, perHour: DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR };
    this.handout = { burst: h.burst, perSecond: h.perHour / 3600 };
  }

  /**
   * Appends a signed entry (root, link or revoke) to the caller's own device list. The
   * token names the user; the entry's signature, checked against the stored list, says
   * which of the user's devices agreed. Rate limited per user.
   */
  async appendDeviceEntry(userId: string, req: DeviceEntryRequest): Promise<AppendedEntry> {
    const waitMs = this.deviceListLimiter.take(userId);
    if (waitMs > 0) {
      throw new ProtocolError('RATE_LIMITED', 'too many device list changes; retry later', { retryAfterMs: waitMs });
    }
    return this.store.appendDeviceEntry(userId, req.entry, this.backend);
  }

  deviceList(userId: string, after: number): Promise<DeviceListRecord> {
    return this.store.deviceList(userId, after);
  }

  getDevice(userId: string, deviceId: string): Promise<DeviceRecord | undefined> {
    return this.store.getDevice(userId, deviceId);
  }

  /** Rate limited per user before any signature is checked: an upload costs up to
   * MAX_KEYS_PER_UPLOAD + 2 of them. */
  async uploadKeys(userId: string, deviceId: string, upload: KeyUploadRequest): Promise<KeyCounts> {
    const waitMs = this.uploadLimiter.take(userId);
    if (waitMs > 0) {
      throw new ProtocolError('RATE_LIMITED', 'too many key uploads; retry later', { retryAfterMs: waitMs });
    }
    const device = await this.store.getDevice(userId, deviceId);
    if (!device) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device for this user');
    const check = (kind: PublishedKeyKind, k: WireSignedKey, field: string): void => {
      if (!verifyPublishedKey(this.backend, device.identityKey, kind, k.keyId, k.publicKey, k.signature)) {
        throw new ProtocolError('INVALID_SIGNATURE', `${field} (key id ${k.keyId}) is not signed by the device identity key`);
      }
    };
    if (upload.signedPrekey) check('signed-prekey', upload.signedPrekey, 'signedPrekey');
    if (upload.lastResortKemPrekey) check('last-resort-kem-prekey', upload.lastResortKemPrekey, 'lastResortKemPrekey');
    upload.oneTimePrekeys.forEach((k, i) => check('one-time-prekey', k, `oneTimePrekeys[${i}]`));
    upload.oneTimeKemPrekeys.forEach((k, i) => check('one-time-kem-prekey', k, `oneTimeKemPrekeys[${i}]`));
    return this.store.uploadKeys(userId, deviceId, upload);
  }

  countKeys(userId: string, deviceId: string): Promise<KeyCounts> {
    return this.store.countKeys(userId, deviceId);
  }

  async fetchBundle(requesterUserId: string, userId: string, deviceId: string): Promise<PrekeyBundle> {
    const waitMs = this.bundleLimiter.take(requesterUserId);
    if (waitMs > 0) {
      throw new ProtocolError('RATE_LIMITED', 'too many bundle fetches; retry later', { retryAfterMs: waitMs });
    }
    const bundle = await this.store.fetchBundle(userId, deviceId, this.handout, this.now());
    for (const w of bundle.withheld) this.opts.onWithheld?.(w.kind, w.reason);
    return bundle;
  }
}
