/**
 * The relay's SEND content hash is SHA-256 of the content bytes, whatever the bytes
 * (every byte value survives the latin1 string it passes through), written into exactly
 * the bytes given.
 */
import crypto from 'node:crypto';
import { fc, test } from '@fast-check/vitest';
import { expect } from 'vitest';
import { writeContentHash } from '../../server/mailbox/content-hash.js';

test.prop([fc.uint8Array({ maxLength: 2048 }), fc.nat({ max: 64 })])('writes SHA-256 of the content into the bytes given, and nowhere else', (content, at) => {
  const around = new Uint8Array(at + 32 + 8).fill(0xee);
  writeContentHash(content, around.subarray(at, at + 32));
  expect(Buffer.from(around.subarray(at, at + 32))).toEqual(crypto.createHash('sha256').update(content).digest());
  expect([...around.subarray(0, at), ...around.subarray(at + 32)].every((b) => b === 0xee)).toBe(true);
  expect(() => writeContentHash(content, new Uint8Array(31))).toThrow(RangeError);
});
