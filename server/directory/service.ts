/**
 * The key directory's rules on top of its store: every signature is verified before
 * anything is stored (a rejected request changes nothing), the caller must own the
 * device it changes, device lists change only by entries signed by the user's own
 * devices, and bundle fetches and list changes are rate limited per user.
 */
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { type PublishedKeyKind, verifyPublishedKey } from '../../crypto/published-key.js';
import type { DeviceEntryRequest, KeyUploadRequest, WireSignedKey } from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import { BUNDLE_FETCH_BURST, BUNDLE_FETCH_PER_SECOND, DEVICE_LIST_WRITE_BURST, DEVICE_LIST_WRITES_PER_SECOND } from '../../protocol/limits.js';
import { RateLimiter } from '../ratelimit.js';
import type { AppendedEntry, DeviceListRecord, DeviceRecord, DirectoryStore, KeyCounts, PrekeyBundle } from './store.js';

export class DirectoryService {
  private readonly bundleLimiter: RateLimiter;
  private readonly deviceListLimiter: RateLimiter;

  constructor(
    private readonly store: DirectoryStore,
    private readonly backend: CryptoBackend,
    now: () => number = Date.now,
  ) {
    this.bundleLimiter = new RateLimiter(BUNDLE_FETCH_BURST, BUNDLE_FETCH_PER_SECOND, now);
    this.deviceListLimiter = new RateLimiter(DEVICE_LIST_WRITE_BURST, DEVICE_LIST_WRITES_PER_SECOND, now);
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

  async uploadKeys(userId: string, deviceId: string, upload: KeyUploadRequest): Promise<KeyCounts> {
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
    return this.store.fetchBundle(userId, deviceId);
  }
}
