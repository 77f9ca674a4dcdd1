/**
 * The relay's SEND content hash is SHA-256 of the content bytes, written where asked
 * and nowhere else, whatever the bytes (every byte value survives the latin1 round trip).
 */
import crypto from 'node:crypto';
import { fc, test } from '@fast-check/vitest';
import { expect } from 'vitest';
import { writeContentHash } from '../../server/mailbox/content-hash.js';

test.prop([fc.uint8Array({ maxLength: 2048 }), fc.nat({ max: 64 })])('writes SHA-256 of the content at the offset given', (content, at) => {
  const into = Buffer.alloc(at + 32 + 8, 0xee);
  writeContentHash(content, into, at);
  expect(into.subarray(at, at + 32)).toEqual(crypto.createHash('sha256').update(content).digest());
  expect([...into.subarray(0, at), ...into.subarray(at + 32)].every((b) => b === 0xee)).toBe(true);
  expect(() => writeContentHash(content, Buffer.alloc(at + 31), at)).toThrow(RangeError);
});
