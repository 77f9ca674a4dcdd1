/**
 * Mailbox notices as they travel between relays (PostgreSQL NOTIFY text, NATS bytes):
 * what the relay writes reads back the same; anything that is not a notice of ours is
 * ignored without throwing — too large, too many tails, ids of the wrong form, bytes
 * that are not UTF-8 — and a tail or a time that is not a non-negative safe integer
 * never reaches a delivery stream. A commit's tails are split over notices that each
 * fit a NOTIFY payload.
 */
import { describe, expect, it } from 'vitest';
import {
  type MailboxNotice,
  NOTICE_MAX_BYTES,
  NOTICE_MAX_TAILS,
  NOTICE_TAILS_MAX_BYTES,
  connectedNotice,
  decodeNotice,
  encodeNotice,
  revokedNotice,
  tailsNotices,
} from '../../server/fleet/notice.js';

describe('decodeNotice', () => {
  it('reads the notices the relay and the store function write, as text and as bytes', () => {
    expect(decodeNotice('{"node":"n1","kind":"tails","tails":[["alice","d1",3],["bob","d2",1]]}')).toEqual({
      node: 'n1',
      kind: 'tails',
      tails: [['alice', 'd1', 3], ['bob', 'd2', 1]],
    });
    expect(decodeNotice('{"node":"n1","kind":"all"}')).toEqual({ node: 'n1', kind: 'all' });
    const notices: MailboxNotice[] = [
      connectedNotice('n2', 'carol', 'd3', 1_700_000_000_000),
      revokedNotice('dave', 'old-phone'),
      { node: 'n3', kind: 'all' },
      { node: 'n3', kind: 'tails', tails: [['erin', 'tablet', 9]] },
    ];
    for (const n of notices) {
      expect(decodeNotice(encodeNotice(n))).toEqual(n);
      expect(decodeNotice(new TextEncoder().encode(encodeNotice(n)))).toEqual(n);
    }
  });

  it('drops tails that are not sequence numbers (a 1e400 tail would be Infinity and announce everything expired)', () => {
    const payload = '{"node":"n","kind":"tails","tails":[["u","d",1.5],["u","d",-1],["u","d",1e400],["u","d",9007199254740993],["u","d",0],["u","d",7]]}';
    expect(decodeNotice(payload)).toEqual({ node: 'n', kind: 'tails', tails: [['u', 'd', 0], ['u', 'd', 7]] });
  });

  it('drops tails whose ids are not user and device ids', () => {
    const payload = JSON.stringify({ node: 'n', kind: 'tails', tails: [['u u', 'd', 1], ['u', 'd/x', 2], ['u', 'd', 3, 4], ['x'.repeat(129), 'd', 4], [1, 'd', 5], ['u', 'd', 6]] });
    expect(decodeNotice(payload)).toEqual({ node: 'n', kind: 'tails', tails: [['u', 'd', 6]] });
  });

  it('ignores a connected notice whose time is not a non-negative safe integer', () => {
    for (const at of ['1e400', '-5', '2.5', '9007199254740993']) {
      expect(decodeNotice(`{"node":"n","kind":"connected","userId":"u","deviceId":"d","at":${at}}`)).toBeUndefined();
    }
  });

  it('ignores anything else without throwing', () => {
    for (const payload of ['', 'null', '[]', '"x"', '{"kind":"all"}', '{"node":1,"kind":"all"}', '{"node":"n","kind":"tails"}', '{"node":"n","kind":"other"}',
      '{"node":"n","kind":"revoked","userId":"u","deviceId":"bad id"}', '{"node":"n","kind":"connected","userId":"","deviceId":"d","at":1}']) {
      expect(decodeNotice(payload)).toBeUndefined();
    }
    expect(decodeNotice(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))).toBeUndefined();
  });

  it('ignores a notice over NOTICE_MAX_BYTES, a node id over 64 characters, or more than NOTICE_MAX_TAILS tails', () => {
    const big = JSON.stringify({ node: 'n', kind: 'all', pad: 'x'.repeat(NOTICE_MAX_BYTES) });
    expect(decodeNotice(big)).toBeUndefined();
    expect(decodeNotice(new TextEncoder().encode(big))).toBeUndefined();
    // Multi-byte characters: the bound is on bytes, not characters.
    expect(decodeNotice(JSON.stringify({ node: 'n', kind: 'all', pad: 'é'.repeat(NOTICE_MAX_BYTES / 2) }))).toBeUndefined();
    expect(decodeNotice(JSON.stringify({ node: 'n'.repeat(65), kind: 'all' }))).toBeUndefined();
    const many = JSON.stringify({ node: 'n', kind: 'tails', tails: Array.from({ length: NOTICE_MAX_TAILS + 1 }, () => 0) });
    expect(many.length).toBeLessThan(NOTICE_MAX_BYTES);
    expect(decodeNotice(many)).toBeUndefined();
  });
});

describe('tailsNotices', () => {
  it('announces each mailbox once, at its highest committed sequence', () => {
    const committed = [
      { userId: 'bob', deviceId: 'd1', seq: 4 },
      { userId: 'bob', deviceId: 'd1', seq: 6 },
      { userId: 'bob', deviceId: 'd2', seq: 1 },
      { userId: 'bob', deviceId: 'd1', seq: 5 },
    ];
    expect(tailsNotices('n1', committed)).toEqual([{ node: 'n1', kind: 'tails', tails: [['bob', 'd1', 6], ['bob', 'd2', 1]] }]);
    expect(tailsNotices('n1', [])).toEqual([]);
  });

  it('splits a large commit over notices that each fit, and lose no mailbox', () => {
    const committed = Array.from({ length: 3000 }, (_, i) => ({ userId: `user-${i}`, deviceId: `device-${i % 7}`, seq: i + 1 }));
    const notices = tailsNotices('0123456789abcdef', committed);
    expect(notices.length).toBeGreaterThan(1);
    const seen: Array<readonly [string, string, number]> = [];
    for (const n of notices) {
      const text = encodeNotice(n);
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(NOTICE_TAILS_MAX_BYTES);
      const back = decodeNotice(text);
      expect(back).toEqual(n);
      if (back?.kind === 'tails') seen.push(...back.tails);
    }
    expect(seen).toEqual(committed.map((c) => [c.userId, c.deviceId, c.seq]));
  });
});
