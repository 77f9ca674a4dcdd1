/**
 * Which WebSocket upgrades the relay accepts: at most `maxConnections` open sockets in
 * all (a file descriptor each: see server/fd-limit.ts), and at most
 * `maxUnauthenticatedPerAddress` not yet authenticated from one client address, so one
 * host cannot fill the relay with sockets that never authenticate. Both refusals are
 * retryable: the slots free up as sockets authenticate or close.
 */
import { ProtocolError } from '../../protocol/errors.js';

export interface AdmissionLimits {
  readonly maxConnections: number;
  readonly maxUnauthenticatedPerAddress: number;
}

/** What a socket's admission holds; kept in its user data. */
export interface AdmissionTicket {
  readonly address: string;
  /** Still counted against its address as unauthenticated. */
  unauthenticated: boolean;
}

export type RefusalReason = 'capacity' | 'unauthenticated_per_address';

export class Admission {
  private open = 0;
  private unauthenticated = 0;
  private readonly unauthenticatedByAddress = new Map<string, number>();

  /** `gauge` (a metric) is kept at the number of unauthenticated sockets. */
  constructor(
    private readonly limits: AdmissionLimits,
    private readonly gauge?: { set(n: number): void },
  ) {}

  get openConnections(): number {
    return this.open;
  }

  get unauthenticatedConnections(): number {
    return this.unauthenticated;
  }

  /** Why an upgrade from `address` is refused now, or undefined to accept it. */
  check(address: string): { reason: RefusalReason; error: ProtocolError } | undefined {
    if (this.open >= this.limits.maxConnections) {
      return { reason: 'capacity', error: new ProtocolError('TOO_MANY_CONNECTIONS', 'the relay is at its connection limit; retry later') };
    }
    if ((this.unauthenticatedByAddress.get(address) ?? 0) >= this.limits.maxUnauthenticatedPerAddress) {
      return {
        reason: 'unauthenticated_per_address',
        error: new ProtocolError('TOO_MANY_UNAUTHENTICATED', 'too many connections from this address have not authenticated yet; retry later'),
      };
    }
    return undefined;
  }

  /** Counts a socket that has opened; it starts unauthenticated. */
  opened(address: string): AdmissionTicket {
    this.open++;
    this.unauthenticatedByAddress.set(address, (this.unauthenticatedByAddress.get(address) ?? 0) + 1);
    this.gauge?.set(++this.unauthenticated);
    return { address, unauthenticated: true };
  }

  /** The socket authenticated: it no longer counts against its address. */
  authenticated(ticket: AdmissionTicket): void {
    if (!ticket.unauthenticated) return;
    ticket.unauthenticated = false;
    const n = (this.unauthenticatedByAddress.get(ticket.address) ?? 1) - 1;
    if (n > 0) this.unauthenticatedByAddress.set(ticket.address, n);
    else this.unauthenticatedByAddress.delete(ticket.address);
    this.gauge?.set(--this.unauthenticated);
  }

  closed(ticket: AdmissionTicket): void {
    this.authenticated(ticket);
    this.open--;
  }
}

/**
 * The key a client address is counted under, from uWS's binary remote address (4 or 16
 * bytes): an IPv4 address as dotted quad (IPv4-mapped IPv6 included), an IPv6 address
 * as its /64 prefix, since one host or customer usually holds a whole /64.
 */
export function addressKey(raw: ArrayBuffer): string {
  const b = new Uint8Array(raw);
  if (b.length === 4) return b.join('.');
  if (b.length === 16) {
    const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
    if (mapped) return b.subarray(12).join('.');
    const groups: string[] = [];
    for (let i = 0; i < 8; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return `${groups.join(':')}::/64`;
  }
  return 'unknown';
}
