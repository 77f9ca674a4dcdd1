/**
 * TopicHub with a store whose answers the test releases one by one, for the orders of
 * events a real relay makes rare: a commit announced while the topic's first
 * subscription here is still reading the topic's head, and a commit of this relay whose
 * first messages another relay's notice had already made it read and broadcast. Each
 * message is broadcast once, without waiting for the next commit.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { TopicServerFrame } from '../../protocol/topic-frames.js';
import { TopicHub, type TopicPeer } from '../../server/topics/hub.js';
import type { PublishItem, PublishResult, TopicInfo, TopicMessage, TopicRead, TopicStore } from '../../server/topics/store.js';

const TOPIC = 'feeds.start';

function message(offset: number): TopicMessage {
  return { offset, publishedAtMs: 1000 + offset, publisherUserId: 'alice', publisherDeviceId: 'd1', publishId: new Uint8Array([offset]), key: undefined, payload: new Uint8Array([offset]) };
}

function info(nextOffset: number): TopicInfo {
  return { name: TOPIC, epoch: 1, earliestOffset: 1, nextOffset, retentionMs: null, retentionBytes: null, sliceMs: 3_600_000, createdBy: 'alice', createdAt: 0 };
}

/** A connection whose socket always drains, its frames written to `written`. */
function fakePeer(written: string[]): TopicPeer {
  return {
    userId: 'bob',
    deviceId: 'd1',
    closed: false,
    write: (text: string, _type: TopicServerFrame['type']) => written.push(text),
    cork: (fn) => fn(),
    bufferedAmount: () => 0,
    join: () => undefined,
    leave: () => undefined,
  };
}

describe('TopicHub orders', () => {
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
    const peer = fakePeer(written);
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

  it('broadcasts the rest of a commit of this relay whose first messages a notice made it read', async () => {
    const releases: Array<() => void> = [];
    let nextOffset = 2;
    const store = {
      resolve: async () => ({ epoch: 1, offset: 1 }),
      info: async () => info(1),
      // Stored: offset 1 (another relay's), 2 and 3..4 (this relay's two commits); a
      // page holds three.
      read: async (_name: string, epoch: number, from: number): Promise<TopicRead> => {
        const messages = [1, 2, 3, 4].filter((o) => o >= from).slice(0, 3).map(message);
        return { epoch, messages, next: from + messages.length, head: 5 };
      },
      // This relay's commits, each answered once released.
      publish: async (_name: string, items: readonly PublishItem[]): Promise<PublishResult[]> => {
        const first = nextOffset;
        nextOffset += items.length;
        await new Promise<void>((r) => releases.push(r));
        return items.map((_, i) => ({ kind: 'stored', duplicate: false, epoch: 1, offset: first + i, publishedAtMs: 1000 + first + i }));
      },
    } as unknown as TopicStore;
    const broadcasts: string[] = [];
    const hub = new TopicHub({ store, logger: pino({ level: 'silent' }), broadcast: (_channel, text) => broadcasts.push(text) });
    const peer = fakePeer([]);
    await hub.subscribe(peer, 1, TOPIC, { kind: 'latest' });
    // Offset 2 in a first commit; 3 and 4, queued meanwhile, in a second.
    const published = [2, 3, 4].map((k) => hub.publish(peer, TOPIC, { id: k, publishId: new Uint8Array([k]), payload: new Uint8Array([k]) }));
    const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 10));
    await tick();
    // Another relay's commit of offset 1 is announced: its read finds 1, 2 and 3.
    hub.remoteHead(TOPIC, 1, 2);
    await tick();
    releases[0]!();
    await tick();
    releases[1]!();
    await Promise.all(published);
    await tick();
    expect(broadcasts.map((t) => (JSON.parse(t) as { offset: number }).offset)).toEqual([1, 2, 3, 4]);
  });
});
