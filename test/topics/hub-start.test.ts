/**
 * TopicHub with a store whose answers the test releases one by one: a commit announced
 * (by another relay, or this one) while the topic's first subscription here is still
 * reading the topic's head is not lost: the subscriber gets it without waiting for the
 * next commit.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { TopicServerFrame } from '../../protocol/topic-frames.js';
import { TopicHub, type TopicPeer } from '../../server/topics/hub.js';
import type { TopicInfo, TopicMessage, TopicRead, TopicStore } from '../../server/topics/store.js';

const TOPIC = 'feeds.start';

function message(offset: number): TopicMessage {
  return { offset, publishedAtMs: 1000 + offset, publisherUserId: 'alice', publisherDeviceId: 'd1', publishId: new Uint8Array([offset]), key: undefined, payload: new Uint8Array([offset]) };
}

function info(nextOffset: number): TopicInfo {
  return { name: TOPIC, epoch: 1, earliestOffset: 1, nextOffset, retentionMs: null, retentionBytes: null, sliceMs: 3_600_000, createdBy: 'alice', createdAt: 0 };
}

describe('TopicHub starting a channel', () => {
  it('delivers a commit announced while the first subscription read the head', async () => {
    // Stored: offsets 1..4, and 5 once "committed" by another relay.
    let stored = 4;
    let releaseInfo: (() => void) | undefined;
    const store = {
      resolve: async () => ({ epoch: 1, offset: stored + 1 }),
      // The head as read before the commit, answered after it.
      info: async () => {
        const snapshot = info(stored + 1);
        await new Promise<void>((r) => (releaseInfo = r));
        return snapshot;
      },
      read: async (_name: string, epoch: number, from: number): Promise<TopicRead> => ({
        epoch,
        messages: Array.from({ length: Math.max(0, stored + 1 - from) }, (_, i) => message(from + i)),
        next: stored + 1,
        head: stored + 1,
      }),
    } as unknown as TopicStore;
    const broadcasts: string[] = [];
    const hub = new TopicHub({ store, logger: pino({ level: 'silent' }), broadcast: (_channel, text) => broadcasts.push(text) });
    const written: string[] = [];
    const peer: TopicPeer = {
      userId: 'bob',
      deviceId: 'd1',
      closed: false,
      write: (text: string, _type: TopicServerFrame['type']) => written.push(text),
      cork: (fn) => fn(),
      bufferedAmount: () => 0,
      join: () => undefined,
      leave: () => undefined,
    };
    const subscribing = hub.subscribe(peer, 1, TOPIC, { kind: 'latest' });
    await new Promise((r) => setTimeout(r, 10));
    expect(releaseInfo).toBeDefined();
    // Another relay commits offset 5 and says so, before the head read answers.
    stored = 5;
    hub.remoteHead(TOPIC, 1, 6);
    releaseInfo!();
    await subscribing;
    await new Promise((r) => setTimeout(r, 10));
    const offsets = [...written, ...broadcasts].map((t) => JSON.parse(t) as { type: string; offset?: number }).filter((f) => f.type === 'topic_message').map((f) => f.offset);
    expect(offsets).toEqual([5]);
  });
});
