/**
 * Topics on one relay's connections: PUBLISH (group-committed per topic, answered after
 * commit), and subscriptions that read their backlog from the database and then go live.
 *
 * Live fan-out is uWebSockets.js's native publish: one frame per message, written by uWS
 * to every socket subscribed to the topic's channel. The relay keeps, per topic with
 * subscribers here, the next offset it will broadcast (`next`), and broadcasts strictly
 * in offset order: a commit of this relay that arrives ahead of an earlier one (or
 * another relay's, announced by `remoteHead`) waits until the gap is read from the
 * database. A subscription reading its backlog joins the channel when its own next
 * offset meets the channel's, so it never misses a message nor gets one twice.
 *
 * A subscriber whose socket buffers more than SOCKET_BUFFER_HIGH_WATER leaves the
 * channel, waits for its socket to drain and reads from the database again, from where
 * it was: never dropped, and the relay's memory does not grow with it. A position the
 * relay cannot serve (its offset retired while it was behind, the topic reset) ends the
 * subscription with a frame that says why and where to go on.
 */
import { writeContentHash } from '../mailbox/content-hash.js';
import { CONTENT_HASH_BYTES } from '../mailbox/send-batch.js';
import type { Logger } from 'pino';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_PUBLISH_BATCH, MAX_SUBSCRIPTIONS_PER_CONNECTION } from '../../protocol/limits.js';
import { type SubscribeFrom, type TopicServerFrame, encodeTopicServerFrame } from '../../protocol/topic-frames.js';
import { SOCKET_BUFFER_HIGH_WATER } from '../limits.js';
import { type PublishItem, type PublishResult, type TopicMessage, type TopicStore, wireMessage } from './store.js';

/** Messages and bytes a subscriber reads from the database per page. */
export const TOPIC_READ_PAGE_MESSAGES = 128;
export const TOPIC_READ_PAGE_BYTES = 1024 * 1024;

/** One connection, as the hub sees it. */
export interface TopicPeer {
  readonly userId: string;
  readonly deviceId: string;
  readonly closed: boolean;
  /** Writes a frame (of `type`, for the frame counts) now, after anything the
   * connection has queued. */
  write(text: string, type: TopicServerFrame['type']): void;
  /** Runs `fn` with the socket's writes gathered into one. */
  cork(fn: () => void): void;
  bufferedAmount(): number;
  join(channel: string): void;
  leave(channel: string): void;
}

export interface TopicHubDeps {
  readonly store: TopicStore;
  readonly logger: Logger;
  /** Writes a frame to every socket that joined `channel` (uWS app.publish). */
  readonly broadcast: (channel: string, text: string) => void;
  /** Told of each commit (to tell other relays: their subscribers read it). */
  readonly onCommitted?: (topic: string, epoch: number, head: number) => void;
  /** Told of every commit to a topic this relay hears of (its own and others'). */
  readonly onHead?: (topic: string, epoch: number) => void;
  /** Told each time a live subscriber is paused because its socket stopped draining. */
  readonly onPaused?: () => void;
}

export type PublishAnswer = Extract<TopicServerFrame, { type: 'published' }>;

/** Commits of this relay a channel keeps while it reads a gap before them. */
export const MAX_EARLY_COMMITS = 64;

/** Payload bytes one publish commit carries past its first message: what one commit
 * broadcasts in one turn stays well inside a socket's backpressure limit. */
export const MAX_PUBLISH_BATCH_BYTES = 1024 * 1024;

interface PublishQueue {
  readonly items: Array<{ readonly item: PublishItem; readonly resolve: (r: PublishResult) => void; readonly reject: (e: unknown) => void }>;
  running: boolean;
  /** The commit loop while it runs. */
  done?: Promise<void>;
}

interface Subscription {
  readonly peer: TopicPeer;
  readonly topic: string;
  readonly epoch: number;
  /** The next offset this subscriber gets (while not live: the next it reads). */
  next: number;
  /** reading: a read loop runs; paused: waits for the socket to drain; waiting: read up
   * to past the channel's next, waits for the channel to catch up; live: in the channel. */
  state: 'reading' | 'paused' | 'waiting' | 'live' | 'ended';
}

interface Channel {
  readonly name: string;
  epoch: number;
  /** The next offset this relay broadcasts. */
  next: number;
  readonly subs: Set<Subscription>;
  /** Commits of this relay ahead of `next`, by first offset. */
  readonly early: Map<number, readonly TopicMessage[]>;
  /** Something committed up to (not including) this offset; read if ahead of `next`. */
  knownHead: number;
  fetching: boolean;
}

export const channelOf = (topic: string): string => `topic:${topic}`;

function messageFrame(topic: string, epoch: number, m: TopicMessage): string {
  return encodeTopicServerFrame({ type: 'topic_message', topic, epoch, ...wireMessage(m) });
}

export class TopicHub {
  private readonly channels = new Map<string, Channel>();
  private readonly byPeer = new Map<TopicPeer, Map<string, Subscription>>();
  /** Topics a peer's SUBSCRIBE is starting (between the frame and its answer): counted
   * with its subscriptions, so that one sent before another is answered is checked
   * against it too. */
  private readonly starting = new Map<TopicPeer, Map<string, Promise<void>>>();
  /** Topics without a channel here whose first subscriptions are starting, with the
   * latest commit heard of meanwhile: the head a new channel reads may predate it, and
   * its notice would otherwise be lost with no channel to take it. */
  private readonly opening = new Map<string, { count: number; epoch: number; head: number }>();
  private readonly queues = new Map<string, PublishQueue>();

  constructor(private readonly deps: TopicHubDeps) {}

  /** Stores one message (in the topic's next batch); resolves once committed. */
  async publish(peer: TopicPeer, topic: string, msg: { id: number; publishId: Uint8Array; key?: Uint8Array | undefined; payload: Uint8Array }): Promise<PublishAnswer> {
    const contentHash = new Uint8Array(CONTENT_HASH_BYTES);
    writeContentHash(msg.payload, contentHash);
    const item: PublishItem = {
      publisherUserId: peer.userId,
      publisherDeviceId: peer.deviceId,
      publishId: msg.publishId,
      contentHash,
      key: msg.key,
      payload: msg.payload,
    };
    const r = await new Promise<PublishResult>((resolve, reject) => {
      let q = this.queues.get(topic);
      if (!q) this.queues.set(topic, (q = { items: [], running: false }));
      q.items.push({ item, resolve, reject });
      if (!q.running) q.done = this.runQueue(topic, q);
    });
    if (r.kind === 'conflict') {
      throw new ProtocolError('PUBLISH_ID_CONFLICT', 'this publish id was used with other content; the original is kept', { offset: r.offset, epoch: r.epoch });
    }
    return { type: 'published', id: msg.id, topic, epoch: r.epoch, offset: r.offset, duplicate: r.duplicate, publishedAt: r.publishedAtMs };
  }

  /**
   * Group commit per topic: whatever is queued when a commit ends goes in the next one
   * (at most MAX_PUBLISH_BATCH messages and, past the first, MAX_PUBLISH_BATCH_BYTES),
   * one commit at a time, so a connection's publishes keep their order.
   */
  private async runQueue(topic: string, q: PublishQueue): Promise<void> {
    q.running = true;
    try {
      while (q.items.length > 0) {
        let n = 0;
        let bytes = 0;
        while (n < q.items.length && n < MAX_PUBLISH_BATCH) {
          const size = q.items[n]!.item.payload.byteLength;
          if (n > 0 && bytes + size > MAX_PUBLISH_BATCH_BYTES) break;
          bytes += size;
          n++;
        }
        const batch = q.items.splice(0, n);
        const items = batch.map((p) => p.item);
        let results: PublishResult[];
        try {
          results = await this.deps.store.publish(topic, items);
        } catch (err) {
          for (const p of batch) p.reject(err);
          continue;
        }
        try {
          this.committed(topic, items, results);
        } catch (err) {
          this.deps.logger.error({ topic, err: { message: (err as Error).message } }, 'topic fan-out failed');
        }
        batch.forEach((p, i) => p.resolve(results[i]!));
      }
    } finally {
      q.running = false;
      if (q.items.length === 0 && this.queues.get(topic) === q) this.queues.delete(topic);
    }
  }

  /** A commit of this relay: fan it out here, and tell the others. */
  private committed(topic: string, items: readonly PublishItem[], results: readonly PublishResult[]): void {
    const fresh: TopicMessage[] = [];
    let epoch = 0;
    for (let i = 0; i < items.length; i++) {
      const r = results[i]!;
      if (r.kind !== 'stored' || r.duplicate) continue;
      const it = items[i]!;
      epoch = r.epoch;
      fresh.push({
        offset: r.offset,
        publishedAtMs: r.publishedAtMs,
        publisherUserId: it.publisherUserId,
        publisherDeviceId: it.publisherDeviceId,
        publishId: it.publishId,
        key: it.key,
        payload: it.payload,
      });
    }
    if (fresh.length === 0) return;
    const head = fresh[fresh.length - 1]!.offset + 1;
    this.deps.onCommitted?.(topic, epoch, head);
    this.deps.onHead?.(topic, epoch);
    const ch = this.channels.get(topic);
    if (!ch) return this.heardWhileOpening(topic, epoch, head);
    if (epoch > ch.epoch) return this.resetChannel(ch, epoch);
    if (epoch < ch.epoch) return;
    // A read for another relay's notice may have broadcast the start of this commit
    // already (a page ends where its bytes do): only the rest is new.
    const ahead = fresh.filter((m) => m.offset >= ch.next);
    if (ahead.length === 0) return;
    const first = ahead[0]!.offset;
    if (first === ch.next) {
      this.broadcastFrom(ch, ahead);
      this.flushEarly(ch);
    } else {
      // Kept to broadcast without reading it back, up to a bound: past it (reads failing
      // while commits go on) the gap read fetches these too.
      if (ch.early.size < MAX_EARLY_COMMITS) {
        ch.early.set(first, ahead);
        this.noteHead(ch, first);
      } else {
        this.noteHead(ch, ahead[ahead.length - 1]!.offset + 1);
      }
    }
  }

  /** The topic was reset to `epoch` (here or by another relay): its subscribers are told. */
  topicReset(topic: string, epoch: number): void {
    const ch = this.channels.get(topic);
    if (!ch) this.heardWhileOpening(topic, epoch, 1);
    else if (epoch > ch.epoch) this.resetChannel(ch, epoch);
  }

  private heardWhileOpening(topic: string, epoch: number, head: number): void {
    const o = this.opening.get(topic);
    if (!o) return;
    if (epoch > o.epoch) {
      o.epoch = epoch;
      o.head = head;
    } else if (epoch === o.epoch && head > o.head) o.head = head;
  }

  /** Notices may have been missed (the bus subscription was lost and is back): every
   * topic with subscribers here reads its head from the database. */
  refresh(): void {
    for (const ch of this.channels.values()) {
      this.deps.store.info(ch.name).then(
        (info) => {
          if (this.channels.get(ch.name) !== ch) return;
          if (!info) return this.endChannel(ch, new ProtocolError('TOPIC_NOT_FOUND', `no topic ${ch.name}`));
          if (info.epoch > ch.epoch) this.resetChannel(ch, info.epoch);
          else if (info.epoch === ch.epoch) this.noteHead(ch, info.nextOffset);
        },
        (err: unknown) => this.deps.logger.warn({ topic: ch.name, err: { message: (err as Error).message } }, 'a topic head could not be read (read again at the next notice)'),
      );
    }
  }

  /** Another relay committed to `topic` up to (not including) `head`. */
  remoteHead(topic: string, epoch: number, head: number): void {
    this.deps.onHead?.(topic, epoch);
    const ch = this.channels.get(topic);
    if (!ch) return this.heardWhileOpening(topic, epoch, head);
    if (epoch > ch.epoch) return this.resetChannel(ch, epoch);
    // A notice of an earlier epoch arrived late: nothing to read.
    if (epoch === ch.epoch) this.noteHead(ch, head);
  }

  private noteHead(ch: Channel, head: number): void {
    if (head > ch.knownHead) ch.knownHead = head;
    if (ch.knownHead > ch.next) void this.fetchGap(ch);
  }

  /** Reads what this relay has not broadcast yet, in order, up to the known head. */
  private async fetchGap(ch: Channel): Promise<void> {
    if (ch.fetching) return;
    ch.fetching = true;
    try {
      while (this.channels.get(ch.name) === ch && ch.next < ch.knownHead) {
        const page = await this.deps.store.read(ch.name, ch.epoch, ch.next, { maxMessages: TOPIC_READ_PAGE_MESSAGES, maxBytes: TOPIC_READ_PAGE_BYTES });
        if (this.channels.get(ch.name) !== ch) return;
        // Broadcast only what is still ahead (a commit of this relay may have come meanwhile).
        const ahead = page.messages.filter((m) => m.offset >= ch.next);
        if (ahead.length > 0 && ahead[0]!.offset === ch.next) this.broadcastFrom(ch, ahead);
        this.flushEarly(ch);
        if (page.messages.length === 0) break;
      }
    } catch (err) {
      if (this.channels.get(ch.name) !== ch) return;
      if (err instanceof ProtocolError && (err.code === 'TOPIC_EPOCH_CHANGED' || err.code === 'OFFSET_RETIRED' || err.code === 'TOPIC_NOT_FOUND')) {
        this.endChannel(ch, err);
      } else {
        this.deps.logger.warn({ topic: ch.name, err: { message: (err as Error).message } }, 'reading a topic for its subscribers failed (tried again at the next commit)');
      }
    } finally {
      ch.fetching = false;
    }
  }

  private flushEarly(ch: Channel): void {
    for (;;) {
      let progressed = false;
      for (const [first, msgs] of ch.early) {
        const last = msgs[msgs.length - 1]!.offset;
        if (last < ch.next) {
          ch.early.delete(first);
          progressed = true;
        } else if (first <= ch.next) {
          ch.early.delete(first);
          this.broadcastFrom(ch, msgs.filter((m) => m.offset >= ch.next));
          progressed = true;
        }
      }
      if (!progressed) return;
    }
  }

  /** Broadcasts messages starting at the channel's next offset, then tends the subscribers. */
  private broadcastFrom(ch: Channel, msgs: readonly TopicMessage[]): void {
    const channel = channelOf(ch.name);
    for (const m of msgs) this.deps.broadcast(channel, messageFrame(ch.name, ch.epoch, m));
    ch.next = msgs[msgs.length - 1]!.offset + 1;
    if (ch.next > ch.knownHead) ch.knownHead = ch.next;
    for (const sub of ch.subs) {
      if (sub.state === 'live') {
        if (sub.peer.bufferedAmount() >= SOCKET_BUFFER_HIGH_WATER) this.pauseLive(sub.peer);
      } else if (sub.state === 'waiting') {
        if (sub.next === ch.next) this.goLive(ch, sub);
        else if (sub.next < ch.next) {
          sub.state = 'reading';
          void this.readLoop(ch, sub);
        }
      }
    }
  }

  /**
   * The peer's socket stopped draining: every live subscription of it leaves its channel
   * (on drain each reads on from where its channel was). All of them, not only the one
   * whose broadcast crossed the mark: each channel still joined would add a commit's
   * worth to the socket before its own check, and past the socket's backpressure limit
   * uWS closes the connection.
   */
  private pauseLive(peer: TopicPeer): void {
    for (const sub of this.byPeer.get(peer)?.values() ?? []) {
      if (sub.state !== 'live') continue;
      const ch = this.channels.get(sub.topic);
      sub.peer.leave(channelOf(sub.topic));
      if (ch) sub.next = ch.next;
      sub.state = 'paused';
      this.deps.onPaused?.();
    }
  }

  private goLive(ch: Channel, sub: Subscription): void {
    sub.state = 'live';
    sub.peer.join(channelOf(ch.name));
  }

  /** Starts a subscription: answers `subscribed`, then the backlog, then live messages. */
  async subscribe(peer: TopicPeer, id: number, topic: string, from: SubscribeFrom): Promise<void> {
    const mine = this.byPeer.get(peer);
    let starting = this.starting.get(peer);
    if (mine?.has(topic) || starting?.has(topic)) throw new ProtocolError('BAD_REQUEST', `already subscribed to ${topic} on this connection`);
    if ((mine?.size ?? 0) + (starting?.size ?? 0) >= MAX_SUBSCRIPTIONS_PER_CONNECTION) {
      throw new ProtocolError('BAD_REQUEST', `at most ${MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection`);
    }
    if (!starting) this.starting.set(peer, (starting = new Map()));
    let opening = this.opening.get(topic);
    if (!opening) this.opening.set(topic, (opening = { count: 0, epoch: 0, head: 0 }));
    opening.count++;
    const started = this.start(peer, id, topic, from);
    starting.set(
      topic,
      started.then(
        () => undefined,
        () => undefined,
      ),
    );
    try {
      await started;
    } finally {
      starting.delete(topic);
      if (starting.size === 0 && this.starting.get(peer) === starting) this.starting.delete(peer);
      if (--opening.count === 0 && this.opening.get(topic) === opening) this.opening.delete(topic);
    }
  }

  private async start(peer: TopicPeer, id: number, topic: string, from: SubscribeFrom): Promise<void> {
    const start = await this.deps.store.resolve(topic, from);
    if (peer.closed) return;
    let ch = this.channels.get(topic);
    // A channel of an earlier epoch: its subscribers have not heard of the reset yet.
    if (ch && start.epoch > ch.epoch) {
      this.resetChannel(ch, start.epoch);
      ch = undefined;
    }
    if (!ch) {
      const info = await this.deps.store.info(topic);
      if (!info) throw new ProtocolError('TOPIC_NOT_FOUND', `no topic ${topic}`);
      if (peer.closed) return;
      ch = this.channels.get(topic);
      if (!ch) {
        ch = { name: topic, epoch: info.epoch, next: info.nextOffset, subs: new Set(), early: new Map(), knownHead: info.nextOffset, fetching: false };
        this.channels.set(topic, ch);
        // What was committed or reset while the head was read (a commit's own notice
        // found no channel here then).
        const heard = this.opening.get(topic);
        if (heard && heard.epoch > ch.epoch) {
          this.channels.delete(topic);
          throw new ProtocolError('TOPIC_EPOCH_CHANGED', `topic ${topic} was reset while subscribing`, { epoch: heard.epoch, earliest: 1 });
        }
        if (heard && heard.epoch === ch.epoch) this.noteHead(ch, heard.head);
      }
    }
    if (start.epoch !== ch.epoch) {
      // Not left behind without subscribers (it would be read for at every notice).
      if (ch.subs.size === 0) this.channels.delete(topic);
      throw new ProtocolError('TOPIC_EPOCH_CHANGED', `topic ${topic} was reset while subscribing`, { epoch: ch.epoch, earliest: 1 });
    }
    const sub: Subscription = { peer, topic, epoch: start.epoch, next: start.offset, state: 'reading' };
    ch.subs.add(sub);
    let mine = this.byPeer.get(peer);
    if (!mine) this.byPeer.set(peer, (mine = new Map()));
    mine.set(topic, sub);
    peer.write(encodeTopicServerFrame({ type: 'subscribed', id, topic, epoch: start.epoch, offset: start.offset }), 'subscribed');
    void this.readLoop(ch, sub);
  }

  /** Reads the subscriber's backlog page by page until it meets the channel. */
  private async readLoop(ch: Channel, sub: Subscription): Promise<void> {
    try {
      while (sub.state === 'reading') {
        if (sub.peer.closed) return;
        if (sub.peer.bufferedAmount() >= SOCKET_BUFFER_HIGH_WATER) {
          sub.state = 'paused';
          this.deps.onPaused?.();
          return;
        }
        if (sub.next === ch.next) return this.goLive(ch, sub);
        if (sub.next > ch.next) {
          // Read past what this relay has broadcast: wait for the channel to catch up.
          sub.state = 'waiting';
          this.noteHead(ch, sub.next);
          return;
        }
        const page = await this.deps.store.read(ch.name, sub.epoch, sub.next, {
          maxMessages: TOPIC_READ_PAGE_MESSAGES,
          maxBytes: TOPIC_READ_PAGE_BYTES,
        });
        if (sub.state !== 'reading' || sub.peer.closed) return;
        // Checked again: other subscriptions of this socket may have written their pages
        // meanwhile. Paused before writing, the page is read again on drain.
        if (sub.peer.bufferedAmount() >= SOCKET_BUFFER_HIGH_WATER) {
          sub.state = 'paused';
          this.deps.onPaused?.();
          return;
        }
        // Only up to the channel's next: what lies beyond it the channel broadcasts.
        const upTo = page.messages.filter((m) => m.offset < ch.next);
        if (upTo.length === 0) {
          // Offsets are gap-free and the channel broadcasts only what is committed, so an
          // empty page means the channel moved on meanwhile: wait for it.
          sub.state = 'waiting';
          this.noteHead(ch, page.head);
          return;
        }
        sub.peer.cork(() => {
          for (const m of upTo) sub.peer.write(messageFrame(ch.name, sub.epoch, m), 'topic_message');
        });
        sub.next = upTo[upTo.length - 1]!.offset + 1;
      }
    } catch (err) {
      if (sub.state === 'ended') return;
      this.endSubscription(sub, err instanceof ProtocolError ? err : new ProtocolError('UNAVAILABLE', 'the topic could not be read; subscribe again'));
      if (!(err instanceof ProtocolError)) this.deps.logger.warn({ topic: ch.name, err: { message: (err as Error).message } }, 'a topic subscription ended: its backlog could not be read');
    }
  }

  /** The peer's socket drained: its paused subscriptions read on. */
  drain(peer: TopicPeer): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const sub of mine.values()) {
      if (sub.state !== 'paused') continue;
      const ch = this.channels.get(sub.topic);
      if (!ch) continue;
      sub.state = 'reading';
      void this.readLoop(ch, sub);
    }
  }

  /** Ends the peer's subscription to `topic`, once a SUBSCRIBE to it sent before is
   * answered (so that it does not start after the UNSUBSCRIBE was). */
  async unsubscribe(peer: TopicPeer, topic: string): Promise<boolean> {
    await this.starting.get(peer)?.get(topic);
    const sub = this.byPeer.get(peer)?.get(topic);
    if (!sub) return false;
    this.remove(sub);
    return true;
  }

  /** The peer's connection closed. */
  close(peer: TopicPeer): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const sub of [...mine.values()]) this.remove(sub);
  }

  /** The peer's rights changed (a renewed token): each subscription `allowed` refuses
   * ends with that refusal. */
  recheck(peer: TopicPeer, allowed: (topic: string) => ProtocolError | undefined): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const sub of [...mine.values()]) {
      const refusal = allowed(sub.topic);
      if (refusal) this.endSubscription(sub, refusal);
    }
  }

  private remove(sub: Subscription): void {
    if (sub.state === 'live' && !sub.peer.closed) sub.peer.leave(channelOf(sub.topic));
    sub.state = 'ended';
    const mine = this.byPeer.get(sub.peer);
    mine?.delete(sub.topic);
    if (mine?.size === 0) this.byPeer.delete(sub.peer);
    const ch = this.channels.get(sub.topic);
    if (ch) {
      ch.subs.delete(sub);
      if (ch.subs.size === 0) this.channels.delete(sub.topic);
    }
  }

  private endSubscription(sub: Subscription, err: ProtocolError): void {
    const peer = sub.peer;
    this.remove(sub);
    if (!peer.closed) {
      peer.write(
        encodeTopicServerFrame({ type: 'subscription_ended', topic: sub.topic, code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) }),
        'subscription_ended',
      );
    }
  }

  private endChannel(ch: Channel, err: ProtocolError): void {
    for (const sub of [...ch.subs]) this.endSubscription(sub, err);
    this.channels.delete(ch.name);
  }

  /** The topic is at another epoch than its subscribers here: each is told. */
  private resetChannel(ch: Channel, epoch: number): void {
    this.endChannel(ch, new ProtocolError('TOPIC_EPOCH_CHANGED', `topic ${ch.name} was reset`, { epoch, earliest: 1 }));
  }

  /** Subscriptions open on this relay (for metrics). */
  get subscriptions(): number {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.subs.size;
    return n;
  }

  /** Resolves once every publish queued now (and any queued meanwhile) is committed and
   * answered, or refused: shutdown waits for it. */
  async settle(): Promise<void> {
    for (;;) {
      const running = [...this.queues.values()].map((q) => q.done);
      if (running.length === 0) return;
      await Promise.allSettled(running);
    }
  }

  /** Publishes queued or being committed. */
  get pendingPublishes(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.items.length + (q.running ? 1 : 0);
    return n;
  }
}
