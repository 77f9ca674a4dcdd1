/**
 * What SENDs accepted and not yet answered may hold in this relay's memory: per device
 * (MAX_PENDING_SENDS frames, MAX_PENDING_SEND_BYTES bytes) and over the whole process
 * (the configured total of bytes).
 *
 * Counted per device, not per connection: a SEND stays pending until its batch commits,
 * whether or not the connection that sent it is still open, so a device that reconnects
 * finds the budget its queued SENDs still use. Otherwise each reconnect would bring a
 * fresh budget while the old SENDs stay queued, and a device could pin any amount of
 * memory while the database is slow.
 */
import { MAX_PENDING_SEND_BYTES, MAX_PENDING_SENDS } from '../../protocol/limits.js';

export interface PendingSendLimits {
  /** SEND frames per device awaiting their answer. */
  readonly maxSendsPerDevice: number;
  /** Bytes of SEND frames per device awaiting their answer. */
  readonly maxBytesPerDevice: number;
  /** Bytes of SEND frames awaiting their answer, over every device. */
  readonly maxBytesTotal: number;
}

/** Why a SEND was not taken: its device's budget is spent, or the relay's. */
export type PendingRefusal = 'device' | 'relay';

/** The key a device's SENDs are counted under: made once per connection, so that the
 * per-SEND map lookups hash a string whose hash is already known. */
export function pendingKey(userId: string, deviceId: string): string {
  return `${userId}\u0000${deviceId}`;
}

export class PendingSends {
  private readonly devices = new Map<string, { sends: number; bytes: number }>();
  private total = 0;

  constructor(private readonly limits: PendingSendLimits) {}

  static defaults(maxBytesTotal: number): PendingSends {
    return new PendingSends({ maxSendsPerDevice: MAX_PENDING_SENDS, maxBytesPerDevice: MAX_PENDING_SEND_BYTES, maxBytesTotal });
  }

  /** Bytes pending over the whole process (read by the metrics gauge when scraped). */
  get totalBytes(): number {
    return this.total;
  }

  /**
   * Counts a SEND of `bytes` for the device (its pendingKey), or says which budget it would exceed. Each
   * SEND taken must be released exactly once, when its answer is known.
   */
  take(k: string, bytes: number): PendingRefusal | undefined {
    const d = this.devices.get(k);
    if ((d?.sends ?? 0) >= this.limits.maxSendsPerDevice || (d?.bytes ?? 0) + bytes > this.limits.maxBytesPerDevice) return 'device';
    if (this.total + bytes > this.limits.maxBytesTotal) return 'relay';
    if (d) {
      d.sends++;
      d.bytes += bytes;
    } else {
      this.devices.set(k, { sends: 1, bytes });
    }
    this.total += bytes;
    return undefined;
  }

  release(k: string, bytes: number): void {
    const d = this.devices.get(k);
    if (!d) throw new Error('released a SEND that was not taken');
    this.total -= bytes;
    if (--d.sends === 0) this.devices.delete(k);
    else d.bytes -= bytes;
  }
}
