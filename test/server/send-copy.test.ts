/**
 * A SEND taken out of the socket's buffer (server/ws/send-copy.ts): its fields hold no
 * byte of the message buffer (changed afterwards, they stay), its content hash is
 * SHA-256 of the content as framed, and what a SEND of several targets keeps holds
 * nothing beyond its own bytes (no target's payload, nor its hash, keeps the frame's copy
 * alive: a pending SEND would hold twice what the pending budget counts).
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeSend, sendContent } from '../../protocol/envelopes.js';
import { ownSend } from '../../server/ws/send-copy.js';

function frameOf(targets: number): Uint8Array {
  return encodeSend({
    id: 7,
    envelopeId: new Uint8Array(16).fill(0x11),
    ttlSeconds: 60,
    recipientUserId: 'bob',
    targets: Array.from({ length: targets }, (_, i) => ({ deviceId: `d${i}`, payload: new Uint8Array(1000 + i).fill(i + 1) })),
  }).slice();
}

describe('ownSend', () => {
  it.each([1, 3])('with %i target(s): fields equal the frame\'s, none aliases the message buffer, hash of the content', (n) => {
    const bytes = frameOf(n);
    const hash = crypto.createHash('sha256').update(sendContent(bytes)).digest();
    const { frame, contentHash } = ownSend(bytes);
    bytes.fill(0);
    expect(frame.id).toBe(7);
    expect(frame.envelopeId).toEqual(new Uint8Array(16).fill(0x11));
    expect(frame.targets.map((t) => t.deviceId)).toEqual(Array.from({ length: n }, (_, i) => `d${i}`));
    frame.targets.forEach((t, i) => expect(t.payload).toEqual(new Uint8Array(1000 + i).fill(i + 1)));
    expect(Buffer.from(contentHash)).toEqual(hash);
  });

  it('a SEND of several targets: the envelope id, each payload and the hash each hold only their own bytes', () => {
    const { frame, contentHash } = ownSend(frameOf(3));
    expect(frame.envelopeId.buffer.byteLength).toBe(16);
    for (const t of frame.targets) expect(t.payload.buffer.byteLength).toBe(t.payload.length);
    expect(contentHash.buffer.byteLength).toBe(32);
  });

  it('a SEND of one target: one copy of the frame and its hash, not from a shared pool', () => {
    const bytes = frameOf(1);
    const { frame, contentHash } = ownSend(bytes);
    expect(frame.targets[0]!.payload.buffer).toBe(contentHash.buffer);
    expect(contentHash.buffer.byteLength).toBe(bytes.length + 32);
  });
});
