/**
 * Topic frames: what a client sends and what the relay sends round-trip through their
 * encoders and decoders; every field is bounded and checked, an oversized payload is
 * MESSAGE_TOO_LARGE before it is decoded.
 */
import { describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { type ClientFrame, type ServerFrame, decodeClientFrame, decodeServerFrame, encodeClientFrame, encodeServerFrame } from '../../protocol/frames.js';
import { MAX_MESSAGE_KEY_BYTES, MAX_PUBLISH_ID_BYTES, MAX_TOPIC_MESSAGE_BYTES } from '../../protocol/limits.js';
import { codeOf } from '../helpers/protocol-error.js';

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

describe('topic frames', () => {
  it('round-trips every client frame', () => {
    const frames: ClientFrame[] = [
      { type: 'publish', id: 1, topic: 'bank-a.payments', publishId: bytes(16), key: bytes(3), payload: bytes(100) },
      { type: 'publish', id: 2, topic: 'a', publishId: bytes(1), payload: bytes(1) },
      { type: 'subscribe', id: 3, topic: 'a.b', from: { kind: 'earliest' } },
      { type: 'subscribe', id: 4, topic: 'a.b', from: { kind: 'latest' } },
      { type: 'subscribe', id: 5, topic: 'a.b', from: { kind: 'offset', epoch: 2, offset: 9 } },
      { type: 'subscribe', id: 6, topic: 'a.b', from: { kind: 'time', atMs: 1_800_000_000_000 } },
      { type: 'unsubscribe', id: 7, topic: 'a.b' },
      { type: 'consume', id: 8, topic: 'a.b', group: 'workers', prefetch: 16 },
      { type: 'settle', id: 9, topic: 'a.b', group: 'workers', action: 'ack', offsets: [1, 2, 3] },
      { type: 'settle', id: 12, topic: 'a.b', group: 'workers', action: 'ack', offsets: [7], epoch: 2 },
      { type: 'settle', id: 10, topic: 'a.b', group: 'workers', action: 'nack', offsets: [4], delayMs: 500 },
      { type: 'settle', id: 11, topic: 'a.b', group: 'workers', action: 'extend', offsets: [5], byMs: 60_000 },
      { type: 'stop', id: 12, topic: 'a.b', group: 'workers' },
    ];
    for (const f of frames) expect(decodeClientFrame(encodeClientFrame(f))).toEqual(f);
  });

  it('round-trips every relay frame', () => {
    const frames: ServerFrame[] = [
      { type: 'published', id: 1, topic: 't', epoch: 1, offset: 5, duplicate: false, publishedAt: 123 },
      { type: 'subscribed', id: 2, topic: 't', epoch: 3, offset: 1 },
      { type: 'unsubscribed', id: 3, topic: 't' },
      { type: 'topic_message', topic: 't', epoch: 1, offset: 7, publishedAt: 9, publisher: { userId: 'alice', deviceId: 'd1' }, publishId: bytes(4), key: bytes(2), payload: bytes(50) },
      { type: 'topic_message', topic: 't', epoch: 1, offset: 8, publishedAt: 9, publisher: { userId: 'alice', deviceId: 'd1' }, publishId: bytes(4), payload: bytes(1) },
      { type: 'subscription_ended', topic: 't', code: 'OFFSET_RETIRED', message: 'gone', details: { epoch: 1, earliest: 40 } },
      { type: 'subscription_ended', topic: 't', group: 'g', code: 'GROUP_NOT_FOUND', message: 'gone' },
      { type: 'consuming', id: 4, topic: 't', group: 'g' },
      { type: 'leased', topic: 't', group: 'g', epoch: 1, offset: 3, deliveries: 2, leaseUntil: 99, publishedAt: 9, publisher: { userId: 'alice', deviceId: 'd1' }, publishId: bytes(4), payload: bytes(5) },
      { type: 'settled', id: 5, topic: 't', group: 'g', action: 'extend', leaseUntil: 77 },
      { type: 'stopped', id: 6, topic: 't', group: 'g' },
      {
        type: 'topic_message',
        topic: 't.dead-letter',
        epoch: 1,
        offset: 1,
        publishedAt: 9,
        publisher: { userId: 'alice', deviceId: 'd1' },
        publishId: bytes(4),
        payload: bytes(5),
        deadLetter: { topic: 't', group: 'g', epoch: 1, offset: 3, deliveries: 5, reason: 'max_deliveries', lastFailure: 'nack' },
      },
      {
        type: 'leased',
        topic: 't.dead-letter',
        group: 'triage',
        epoch: 1,
        offset: 1,
        deliveries: 1,
        leaseUntil: 99,
        publishedAt: 9,
        publisher: { userId: 'alice', deviceId: 'd1' },
        publishId: bytes(4),
        payload: bytes(5),
        deadLetter: { topic: 't', group: 'g', epoch: 1, offset: 3, deliveries: 5, reason: 'max_deliveries', lastFailure: 'visibility_timeout' },
      },
    ];
    for (const f of frames) expect(decodeServerFrame(encodeServerFrame(f))).toEqual(f);
  });

  it('bounds and checks every field of a publish', () => {
    const ok = { type: 'publish', id: 1, topic: 't', publishId: encodeBase64url(bytes(8)), payload: encodeBase64url(bytes(8)) };
    const code = (o: Record<string, unknown>) => codeOf(() => decodeClientFrame(JSON.stringify({ ...ok, ...o })));
    expect(code({ payload: encodeBase64url(bytes(MAX_TOPIC_MESSAGE_BYTES + 1)) })).toBe('MESSAGE_TOO_LARGE');
    expect(decodeClientFrame(JSON.stringify({ ...ok, payload: encodeBase64url(bytes(MAX_TOPIC_MESSAGE_BYTES)) })).type).toBe('publish');
    for (const bad of [
      { payload: '' },
      { payload: 7 },
      { payload: 'not base64!' },
      { publishId: encodeBase64url(bytes(MAX_PUBLISH_ID_BYTES + 1)) },
      { publishId: '' },
      { publishId: encodeBase64url(new Uint8Array([0, 1, 2])) },
      { key: encodeBase64url(bytes(MAX_MESSAGE_KEY_BYTES + 1)) },
      { key: '' },
      { topic: 'Upper' },
      { topic: 'a..b' },
      { topic: 'x'.repeat(129) },
      { id: -1 },
      { id: undefined },
    ]) {
      expect(code(bad), JSON.stringify(bad)).toBe('BAD_REQUEST');
    }
  });

  it('checks where a subscription starts', () => {
    const code = (from: unknown) => codeOf(() => decodeClientFrame(JSON.stringify({ type: 'subscribe', id: 1, topic: 't', from })));
    for (const from of [undefined, 'middle', 5, null, [], { epoch: 1 }, { offset: 1 }, { epoch: 0, offset: 1 }, { epoch: 1, offset: 0 }, { time: -1 }, { time: 1.5 }]) {
      expect(code(from), JSON.stringify(from)).toBe('BAD_REQUEST');
    }
  });
});
