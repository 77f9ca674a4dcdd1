/**
 * The connection cap and the per-address cap on unauthenticated sockets, as pure logic:
 * how client addresses are grouped, how the cap is derived from the descriptor limit,
 * and how slots are taken and given back.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../server/config.js';
import { connectionCap, openFdCount, parseProcLimits, readFdLimit } from '../../server/fd-limit.js';
import { DB_LISTEN_CONNECTIONS, FALLBACK_MAX_CONNECTIONS, FD_RESERVE_MARGIN } from '../../server/limits.js';
import { Admission, addressKey } from '../../server/ws/admission.js';

const bytes = (...b: number[]): ArrayBuffer => new Uint8Array(b).buffer;

describe('addressKey', () => {
  it('keys IPv4 and IPv4-mapped IPv6 by the address', () => {
    expect(addressKey(bytes(192, 0, 2, 7))).toBe('192.0.2.7');
    expect(addressKey(bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7))).toBe('192.0.2.7');
  });

  it('keys IPv6 by its /64 prefix: hosts in one /64 share a key, other /64s do not', () => {
    const a = addressKey(bytes(0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1));
    const b = addressKey(bytes(0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4));
    const c = addressKey(bytes(0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1));
    expect(a).toBe('2001:db8:1:2::/64');
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(addressKey(bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1))).toBe('0:0:0:0::/64');
  });
});

describe('connection cap from the descriptor limit', () => {
  const limits = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                40000                files
Max locked memory         8388608              8388608              bytes
`;

  it('reads the soft "Max open files" limit from /proc/self/limits', () => {
    expect(parseProcLimits(limits)).toBe(20_000);
    expect(parseProcLimits(limits.replace('20000  ', 'unlimited'))).toBeUndefined();
    expect(parseProcLimits('Max cpu time unlimited unlimited seconds\n')).toBeUndefined();
    // This process (Linux): the same number the shell reports.
    expect(readFdLimit()).toBeGreaterThan(0);
  });

  it('counts this process\'s open descriptors (the process_open_fds gauge) without listing them on the event loop', async () => {
    const before = await openFdCount();
    // The same count as the listing of /proc/self/fd, less the listing's own descriptor.
    expect(before).toBe(fs.readdirSync('/proc/self/fd').length - 1);
    const opened = Array.from({ length: 40 }, () => fs.openSync('/dev/null', 'r'));
    try {
      expect(await openFdCount()).toBe(before! + 40);
    } finally {
      for (const fd of opened) fs.closeSync(fd);
    }
    expect(await openFdCount()).toBe(before);
  });

  it('keeps the pool, the LISTEN connection and a margin back from the limit', () => {
    const reserve = 10 + DB_LISTEN_CONNECTIONS + FD_RESERVE_MARGIN;
    expect(connectionCap({ configured: undefined, dbPoolMax: 10, fdLimit: 20_000 })).toEqual({ maxConnections: 20_000 - reserve, reserve, fdLimit: 20_000 });
    expect(connectionCap({ configured: 500, dbPoolMax: 10, fdLimit: 20_000 }).maxConnections).toBe(500);
    expect(connectionCap({ configured: 20_000 - reserve, dbPoolMax: 10, fdLimit: 20_000 }).maxConnections).toBe(20_000 - reserve);
    expect(connectionCap({ configured: undefined, dbPoolMax: 10, fdLimit: undefined }).maxConnections).toBe(FALLBACK_MAX_CONNECTIONS);
  });

  it('refuses a configured cap that eats into the reserve, and a limit too small for any socket', () => {
    const over = (): unknown => connectionCap({ configured: 20_000, dbPoolMax: 10, fdLimit: 20_000 });
    expect(over).toThrow(ConfigError);
    expect(over).toThrow(/^HERMETIC_MAX_CONNECTIONS must be at most 19733/);
    expect(() => connectionCap({ configured: undefined, dbPoolMax: 100, fdLimit: 300 })).toThrow(/open-file limit \(300\)/);
  });
});

describe('Admission', () => {
  it('counts unauthenticated sockets per address and gives a slot back on auth or close', () => {
    const gauge: number[] = [];
    const a = new Admission({ maxConnections: 10, maxUnauthenticatedPerAddress: 2 }, { set: (n) => gauge.push(n) });
    const t1 = a.opened('192.0.2.1');
    a.opened('192.0.2.1');
    expect(a.check('192.0.2.1')?.error.code).toBe('TOO_MANY_UNAUTHENTICATED');
    expect(a.check('192.0.2.2')).toBeUndefined();
    a.authenticated(t1);
    a.authenticated(t1); // once only
    expect(a.check('192.0.2.1')).toBeUndefined();
    const t3 = a.opened('192.0.2.1');
    expect(a.check('192.0.2.1')?.reason).toBe('unauthenticated_per_address');
    a.closed(t3);
    expect(a.check('192.0.2.1')).toBeUndefined();
    a.closed(t1); // authenticated earlier: frees only the connection slot
    expect(a.openConnections).toBe(1);
    expect(a.unauthenticatedConnections).toBe(1);
    expect(gauge).toEqual([1, 2, 1, 2, 1]);
  });

  it('refuses everyone once maxConnections sockets are open, authenticated or not', () => {
    const a = new Admission({ maxConnections: 2, maxUnauthenticatedPerAddress: 100 });
    const t1 = a.opened('192.0.2.1');
    a.authenticated(t1);
    a.opened('192.0.2.2');
    const refusal = a.check('192.0.2.3');
    expect(refusal?.reason).toBe('capacity');
    expect(refusal?.error.code).toBe('TOO_MANY_CONNECTIONS');
    expect(refusal?.error.httpStatus).toBe(503);
    a.closed(t1);
    expect(a.check('192.0.2.3')).toBeUndefined();
  });
});
