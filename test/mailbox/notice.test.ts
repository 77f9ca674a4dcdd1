/**
 * Mailbox notices read back from PostgreSQL NOTIFY payloads: anything that is not a
 * notice of ours is ignored, and a tail or a time that is not a non-negative safe
 * integer never reaches a delivery stream.
 */
import { describe, expect, it } from 'vitest';
import { decodeNotice, encodeConnectedNotice } from '../../server/mailbox/store.js';

describe('decodeNotice', () => {
  it('reads the notices the relay writes', () => {
    expect(decodeNotice('{"node":"n1","kind":"tails","tails":[["alice","d1",3],["bob","d2",1]]}')).toEqual({
      node: 'n1',
      kind: 'tails',
      tails: [['alice', 'd1', 3], ['bob', 'd2', 1]],
    });
    expect(decodeNotice('{"node":"n1","kind":"all"}')).toEqual({ node: 'n1', kind: 'all' });
    expect(decodeNotice(encodeConnectedNotice('n2', 'carol', 'd3', 1_700_000_000_000))).toEqual({
      node: 'n2',
      kind: 'connected',
      userId: 'carol',
      deviceId: 'd3',
      at: 1_700_000_000_000,
    });
  });

  it('drops tails that are not sequence numbers (a 1e400 tail would be Infinity and announce everything expired)', () => {
    const payload = '{"node":"n","kind":"tails","tails":[["u","d",1.5],["u","d",-1],["u","d",1e400],["u","d",9007199254740993],["u","d",0],["u","d",7]]}';
    expect(decodeNotice(payload)).toEqual({ node: 'n', kind: 'tails', tails: [['u', 'd', 0], ['u', 'd', 7]] });
  });

  it('ignores a connected notice whose time is not a non-negative safe integer', () => {
    for (const at of ['1e400', '-5', '2.5', '9007199254740993']) {
      expect(decodeNotice(`{"node":"n","kind":"connected","userId":"u","deviceId":"d","at":${at}}`)).toBeUndefined();
    }
  });

  it('ignores anything else without throwing', () => {
    for (const payload of ['', 'null', '[]', '"x"', '{"kind":"all"}', '{"node":1,"kind":"all"}', '{"node":"n","kind":"tails"}', '{"node":"n","kind":"other"}']) {
      expect(decodeNotice(payload)).toBeUndefined();
    }
  });
});
