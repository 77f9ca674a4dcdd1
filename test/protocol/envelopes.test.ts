/**
 * The binary SEND and DELIVER codecs: frames round-trip for any field values, a DELIVER
 * encoded into a reused writer is byte-for-byte the one encoded fresh, and a SEND's
 * idempotency content covers the recipient and targets but not the id or the TTL.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { BinaryWriter } from '../../protocol/binary.js';
import { decodeDeliver, decodeSend, encodeDeliver, encodeSend, sendContent } from '../../protocol/envelopes.js';

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
const deviceId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
// User ids are printable ASCII; sender ids in DELIVER are whatever the relay stored.
const userId = fc.stringMatching(/^[\x21-\x7e]{1,64}$/);

const deliver = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  envelopeId: bytes(16, 16),
  senderUserId: userId,
  senderDeviceId: deviceId,
  storedAtMs: fc.integer({ min: 0, max: 2 ** 50 }),
  expiresAtMs: fc.integer({ min: 0, max: 2 ** 50 }),
  payload: bytes(1, 3000),
});

describe('DELIVER', () => {
  test.prop([fc.array(deliver, { minLength: 1, maxLength: 8 })])('encoded into a reused writer equals encoded fresh, frame after frame', (frames) => {
    const shared = new BinaryWriter(16);
    for (const f of frames) {
      const fresh = encodeDeliver(f);
      const reused = encodeDeliver(f, shared);
      expect(Buffer.from(reused)).toEqual(Buffer.from(fresh));
      expect(decodeDeliver(reused)).toEqual({ type: 'deliver', ...f });
    }
  });

  it('writes a string of multi-byte characters with its UTF-8 length, and refuses one over 255 bytes', () => {
    const w = new BinaryWriter(4);
    const view = w.str8('é€😀').finish();
    expect(Array.from(view)).toEqual([9, ...new TextEncoder().encode('é€😀')]);
    expect(() => new BinaryWriter().str8('€'.repeat(86))).toThrow(RangeError);
    expect(new BinaryWriter().str8('€'.repeat(85)).finish().length).toBe(256);
  });
});

describe('SEND', () => {
  const send = fc.record({
    id: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    envelopeId: bytes(16, 16),
    ttlSeconds: fc.integer({ min: 1, max: 86_400 }),
    recipientUserId: userId,
    targets: fc.uniqueArray(fc.record({ deviceId, payload: bytes(1, 2000) }), { minLength: 1, maxLength: 4, selector: (t) => t.deviceId }),
  });

  test.prop([send, fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 1, max: 86_400 })])(
    'round-trips; its content ignores id and TTL and is exactly the recipient and targets',
    (f, otherId, otherTtl) => {
      const encoded = encodeSend(f);
      expect(decodeSend(encoded)).toEqual({ type: 'send', ...f });
      const again = encodeSend({ ...f, id: otherId, ttlSeconds: otherTtl });
      expect(Buffer.from(sendContent(again))).toEqual(Buffer.from(sendContent(encoded)));
      const changed = encodeSend({ ...f, targets: f.targets.map((t, i) => (i === 0 ? { ...t, payload: Uint8Array.from([...t.payload, 0]) } : t)) });
      expect(Buffer.from(sendContent(changed))).not.toEqual(Buffer.from(sendContent(encoded)));
      const elsewhere = encodeSend({ ...f, recipientUserId: `${f.recipientUserId}x` });
      expect(Buffer.from(sendContent(elsewhere))).not.toEqual(Buffer.from(sendContent(encoded)));
    },
  );
});

describe('decoded bytes are copies', () => {
  // Node hands frames over as Buffers, whose slice() is a view: decoding must still copy,
  // or reusing the buffer (as socket layers do) would change envelopes already decoded.
  it('SEND and DELIVER decoded from a Buffer keep their bytes when the buffer is overwritten', () => {
    const send = { id: 5, envelopeId: new Uint8Array(16).fill(1), ttlSeconds: 60, recipientUserId: 'bob', targets: [{ deviceId: 'd1', payload: Uint8Array.of(1, 2, 3) }] };
    const sendBuffer = Buffer.from(encodeSend(send));
    const decodedSend = decodeSend(sendBuffer);
    sendBuffer.fill(0);
    expect(decodedSend).toEqual({ type: 'send', ...send });

    const deliver = { seq: 9, envelopeId: new Uint8Array(16).fill(2), senderUserId: 'alice', senderDeviceId: 'd2', storedAtMs: 1, expiresAtMs: 2, payload: Uint8Array.of(4, 5) };
    const deliverBuffer = Buffer.from(encodeDeliver(deliver));
    const decodedDeliver = decodeDeliver(deliverBuffer);
    deliverBuffer.fill(0);
    expect(decodedDeliver).toEqual({ type: 'deliver', ...deliver });
  });
});

describe('decodeSend with views', () => {
  it('gives views into the frame it was handed, equal to the copies', () => {
    const send = { id: 6, envelopeId: new Uint8Array(16).fill(3), ttlSeconds: 60, recipientUserId: 'bob', targets: [{ deviceId: 'd1', payload: Uint8Array.of(7, 8) }, { deviceId: 'd2', payload: Uint8Array.of(9) }] };
    const own = encodeSend(send).slice();
    const viewed = decodeSend(own, { views: true });
    expect(viewed).toEqual(decodeSend(own));
    expect(viewed.envelopeId.buffer).toBe(own.buffer);
    expect(viewed.targets.map((t) => t.payload.buffer)).toEqual([own.buffer, own.buffer]);
  });
});
