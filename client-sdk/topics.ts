/**
 * Topics and consumer groups in the SDK (docs/SDK.md "Topics"): publishing end-to-end
 * encrypted messages, subscribing from any position, and consuming as a member of a group
 * — on the relay's topic frames (docs/PROTOCOL.md "Topics", "Consumer groups").
 *
 * What a topic message holds, inside its topic key seal (crypto/topic/topic-key.ts), padded
 * (crypto/padding.ts); integers big-endian:
 *
 *   u8   version (1)
 *   u8   body kind (0 bytes, 1 UTF-8 text, 2 JSON, 3 signed event JWS)
 *   u64  sentAt: the publisher's clock, ms since the epoch
 *   u8   publish id length (1..64) | publish id
 *   u16  ordering key length (0: none) | ordering key
 *   body
 *
 * The publish id and the ordering key travel in clear too (the relay needs them for
 * idempotency and per-key order); a reader checks they match the sealed ones, so the relay
 * cannot swap them between messages. A dead-letter copy keeps its original's seal: it is
 * opened as a message of the topic it came from, with the relay's own publish id.
 *
 * Publishing is durable on the device: the sealed message is stored before it is sent,
 * sent again after a reconnect or a restart (the relay answers a repeat as a duplicate),
 * and each publish id is remembered with a digest of what it carried, so publishing the
 * same id again answers with the first publish, and another body under it is refused.
 */
import { CryptoError } from '../crypto/errors.js';
import { unpad } from '../crypto/padding.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { equalBytes } from '../crypto/primitives/bytes.js';
import { openTopicMessage, topicMessageKeyId } from '../crypto/topic/topic-key.js';
import { ByteReader, ByteWriter } from '../crypto/ratchet/byte-codec.js';
import { decodeBase64url, encodeBase64url } from '../protocol/base64url.js';
import type { ProtocolError } from '../protocol/errors.js';
import { MAX_GROUP_SETTLE, MAX_MESSAGE_KEY_BYTES, MAX_PUBLISH_ID_BYTES, MAX_VISIBILITY_MS, MIN_VISIBILITY_MS } from '../protocol/limits.js';
import type { SettleAction, SubscribeFrom, TopicClientFrame, TopicServerFrame } from '../protocol/topic-frames.js';
import type { DeadLetterInfo } from '../protocol/topics.js';
import type { Clock, TimerHandle } from './clock.js';
import { SdkError, passing } from './errors.js';
import type { GroupTarget } from './groups.js';
import { CONSUMER_NACK_BASE_MS, CONSUMER_NACK_MAX_MS, DEFAULT_CONSUMER_PREFETCH, MAX_PUBLISHED_IDS, MAX_TOPIC_KEY_WAIT_MS, MAX_SUBSCRIPTION_BUFFER, MAX_TOPIC_BODY_BYTES, TOPIC_KEY_WAIT_MS } from './limits.js';
import { type BodyKind, decodeBody } from './payload.js';
import { NS, type StoreTx, type Transactor, decodeRecord, encodeRecord } from './stores/store.js';
import type { TopicKeys } from './topic-keys.js';
import type { SignedEvent } from '../crypto/evidence/event.js';

const encoder = new TextEncoder();
const utf8 = new TextDecoder('utf-8', { fatal: true });
const BODY_KINDS: readonly BodyKind[] = ['bytes', 'text', 'json', 'event'];
const INNER_VERSION = 1;

/** Request ids of topic frames: the upper half of the id space (the outbox's SENDs use the lower). */
const FIRST_TOPIC_REQUEST_ID = 0x8000_0000;
export const isTopicRequestId = (id: number): boolean => id >= FIRST_TOPIC_REQUEST_ID;

/** A message read from a topic (by a subscription or a consumer). */
export interface TopicMessage {
  /** The topic it was read from (for a dead-letter copy: the dead-letter topic). */
  readonly topic: string;
  readonly epoch: number;
  readonly offset: number;
  /** The publish id the publisher gave it (its idempotency key). */
  readonly id: string;
  /** The ordering key, if it has one. */
  readonly key: string | undefined;
  /** The publisher device, as its topic key generation proves. */
  readonly from: { readonly userId: string; readonly deviceId: string };
  readonly kind: BodyKind;
  readonly body: unknown;
  /** For a signed event: the verified event (also in `body`) and its JWS, verbatim. */
  readonly event: { readonly jws: string; readonly event: SignedEvent } | undefined;
  /** The publisher's clock when it was published; the relay's when it committed it (ms). */
  readonly sentAt: number;
  readonly publishedAt: number;
  /** On a dead-letter topic: where the message came from and how it failed. */
  readonly deadLetter: DeadLetterInfo | undefined;
  /** For a consumer: how many times it has been leased (1 the first time). */
  readonly deliveries: number | undefined;
}

/** Where a subscription starts. */
export type TopicStart = 'earliest' | 'latest' | { readonly epoch: number; readonly offset: number } | { readonly time: number | Date };

export interface PublishOptions {
  /** The ordering key (consumer groups with orderedByKey keep one key's messages in order). */
  readonly key?: string | undefined;
  /** The publish id (idempotency key), 1..64 bytes of UTF-8; random by default. */
  readonly id?: string | undefined;
}

export interface PublishResult {
  readonly topic: string;
  readonly id: string;
  readonly epoch: number;
  readonly offset: number;
  readonly publishedAt: number;
  /** This id was published before (by this device, or found so by the relay). */
  readonly duplicate: boolean;
}

export interface SubscribeOptions {
  readonly from?: TopicStart | undefined;
  /** A message the handler cannot be given (its key never came, or it does not verify): skipped, and told here. */
  readonly onSkipped?: ((err: SdkError) => void) | undefined;
  /** The handler threw: the subscription goes on with the next message. */
  readonly onError?: ((err: unknown, message: TopicMessage) => void) | undefined;
  /** How long a message waits for its key generation (default TOPIC_KEY_WAIT_MS). */
  readonly keyWaitMs?: number | undefined;
}

export interface ConsumerOptions {
  /** Messages leased to this consumer at once (default DEFAULT_CONSUMER_PREFETCH). */
  readonly prefetch?: number | undefined;
  /** The delay before a failed message is leased again, by its delivery count (default: 1 s doubling to 60 s). */
  readonly retryDelayMs?: ((deliveries: number) => number) | undefined;
  /** The handler threw (the message is released for redelivery), a message could not be
   * opened, or retryDelayMs threw (the default delay is used). */
  readonly onError?: ((err: unknown, message: TopicMessage | undefined) => void) | undefined;
  readonly keyWaitMs?: number | undefined;
}

/** What the client gives the topic machinery. */
export interface TopicHost {
  readonly db: Transactor;
  readonly backend: CryptoBackend;
  readonly clock: Clock;
  readonly keys: TopicKeys;
  readonly userId: string;
  readonly deviceId: string;
  newId(n: number): Uint8Array;
  /** Sends a frame now; false when not online. */
  send(frame: TopicClientFrame): boolean;
  online(): boolean;
  assertLinked(): void;
  /** Seals `inner` for the topic's readers (distributing the key generation first where
   * needed) and stores `record` as pending in the same transaction. */
  seal(topic: string, readers: readonly string[], inner: Uint8Array, inTx: (tx: StoreTx, payload: Uint8Array) => Promise<void>): Promise<void>;
  /** Verifies a signed event's JWS as `from`'s (throws SdkError EVIDENCE_INVALID / UNKNOWN_DEVICE). */
  verifyEvent(jws: string, from: GroupTarget): Promise<SignedEvent>;
  report(err: unknown): void;
  published(result: PublishResult): void;
}

interface PendingRecord {
  v: 1;
  state: 'pending' | 'done';
  digest: Uint8Array;
  at: number;
  /** pending: the sealed message and its clear metadata. */
  payload?: Uint8Array;
  key?: string;
  /** done: the relay's answer. */
  epoch?: number;
  offset?: number;
  publishedAt?: number;
}

// ---------------------------------------------------------------------------------------
// The sealed plaintext
// ---------------------------------------------------------------------------------------

interface Inner {
  kind: BodyKind;
  sentAt: number;
  id: Uint8Array;
  key: Uint8Array | undefined;
  body: Uint8Array;
}

export function encodeInner(m: Inner): Uint8Array {
  const keyLength = m.key?.length ?? 0;
  const w = new ByteWriter(16 + m.id.length + keyLength + m.body.length);
  w.u8(INNER_VERSION).u8(BODY_KINDS.indexOf(m.kind));
  w.u32(Math.floor(m.sentAt / 0x1_0000_0000)).u32(m.sentAt >>> 0);
  w.u8(m.id.length).bytes(m.id);
  w.u8(keyLength >>> 8).u8(keyLength & 0xff);
  if (m.key) w.bytes(m.key);
  return w.bytes(m.body).finish();
}

export function decodeInner(bytes: Uint8Array): Inner {
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'topic message');
  if (r.u8() !== INNER_VERSION) throw new CryptoError('UNSUPPORTED_VERSION', 'topic message of another version');
  const kind = BODY_KINDS[r.u8()];
  if (kind === undefined) throw r.fail('unknown body kind');
  const hi = r.u32();
  const lo = r.u32();
  if (hi > 0x1fffff) throw r.fail('sentAt out of range');
  const idLength = r.u8();
  if (idLength === 0 || idLength > MAX_PUBLISH_ID_BYTES) throw r.fail('publish id length');
  const id = r.bytes(idLength);
  const keyLength = (r.u8() << 8) | r.u8();
  if (keyLength > MAX_MESSAGE_KEY_BYTES) throw r.fail('ordering key length');
  const key = keyLength === 0 ? undefined : r.bytes(keyLength);
  return { kind, sentAt: hi * 0x1_0000_0000 + lo, id, key, body: r.bytes(r.remaining) };
}

/** The application's string as bytes, bounded; INVALID_ARGUMENT otherwise. */
function textBytes(value: unknown, what: string, max: number): Uint8Array {
  const b = typeof value === 'string' ? encoder.encode(value) : undefined;
  if (b === undefined || b.length === 0 || b.length > max) throw new SdkError('INVALID_ARGUMENT', `${what} is a string of 1..${max} bytes of UTF-8`);
  return b;
}

export function publishIdBytes(id: string): Uint8Array {
  const b = textBytes(id, 'a publish id', MAX_PUBLISH_ID_BYTES);
  if (b[0] === 0) throw new SdkError('INVALID_ARGUMENT', 'a publish id does not start with NUL (those are the relay\'s)');
  return b;
}

export function orderingKeyBytes(key: string | undefined): Uint8Array | undefined {
  return key === undefined ? undefined : textBytes(key, 'an ordering key', MAX_MESSAGE_KEY_BYTES);
}

export function checkBodySize(bytes: Uint8Array): void {
  if (bytes.length > MAX_TOPIC_BODY_BYTES) throw new SdkError('BODY_TOO_LARGE', `a topic message body is at most ${MAX_TOPIC_BODY_BYTES} bytes`);
}

function relayError(err: ProtocolError, what: string): SdkError {
  return new SdkError('RELAY_ERROR', `${what}: ${err.code}: ${err.message}`, { relayCode: err.code, ...(err.details ? { details: { ...err.details } } : {}) });
}

function startFrame(from: TopicStart | undefined): SubscribeFrom {
  if (from === undefined || from === 'latest') return { kind: 'latest' };
  if (from === 'earliest') return { kind: 'earliest' };
  if (typeof from === 'object' && from !== null && 'time' in from) {
    const t = from.time instanceof Date ? from.time.getTime() : from.time;
    if (!Number.isSafeInteger(t) || t < 0) throw new SdkError('INVALID_ARGUMENT', 'from.time is a Date or ms since the epoch');
    return { kind: 'time', atMs: t };
  }
  if (typeof from === 'object' && from !== null && Number.isSafeInteger(from.epoch) && Number.isSafeInteger(from.offset) && from.epoch >= 1 && from.offset >= 1) {
    return { kind: 'offset', epoch: from.epoch, offset: from.offset };
  }
  throw new SdkError('INVALID_ARGUMENT', "from is 'earliest', 'latest', { epoch, offset } or { time }");
}

/** Options given as an object, with a keyWaitMs a timer can hold: NaN, a string or more
 * than MAX_TOPIC_KEY_WAIT_MS would have a message poll the store every millisecond, forever. */
function checkOptions(opts: unknown, what: string): void {
  if (typeof opts !== 'object' || opts === null) throw new SdkError('INVALID_ARGUMENT', `${what} options are an object`);
  const ms = (opts as { keyWaitMs?: unknown }).keyWaitMs;
  if (ms !== undefined && !(typeof ms === 'number' && Number.isInteger(ms) && ms >= 0 && ms <= MAX_TOPIC_KEY_WAIT_MS)) {
    throw new SdkError('INVALID_ARGUMENT', `keyWaitMs is an integer of 0..${MAX_TOPIC_KEY_WAIT_MS} ms`);
  }
}

type MessageFrame = Extract<TopicServerFrame, { type: 'topic_message' }> | Extract<TopicServerFrame, { type: 'leased' }>;

// ---------------------------------------------------------------------------------------
// The router: requests, subscriptions, consumers, pending publishes
// ---------------------------------------------------------------------------------------

interface Request {
  resolve(frame: TopicServerFrame): void;
  reject(err: SdkError): void;
}

interface Publishing {
  readonly topic: string;
  readonly id: string;
  readonly payload: Uint8Array;
  readonly key: string | undefined;
  readonly waiters: Array<{ resolve(r: PublishResult): void; reject(err: unknown): void }>;
  sent: boolean;
}

export class TopicRouter {
  #nextId = FIRST_TOPIC_REQUEST_ID;
  /** Which connection we are on: answers and leases of an earlier one are void. */
  #generation = 0;
  readonly #requests = new Map<number, Request>();
  readonly #publishing = new Map<string, Publishing>();
  readonly #subscriptions = new Map<string, Subscription>();
  readonly #consumers = new Map<string, Consumer>();
  readonly #keyWaiters = new Map<string, Set<() => void>>();
  #closed = false;

  constructor(readonly host: TopicHost) {}

  get generation(): number {
    return this.#generation;
  }

  /** Publishes left pending by an earlier run: sent once online. */
  async load(): Promise<void> {
    const rows = await this.host.db.run((tx) => tx.list(NS.topics, 'pub:'));
    for (const [k, raw] of rows) {
      const r = decodeRecord<PendingRecord>(raw);
      if (r.state !== 'pending' || r.payload === undefined) continue;
      const [topic, id] = splitPubKey(k);
      this.#publishing.set(k, { topic, id, payload: r.payload, key: r.key, waiters: [], sent: false });
    }
  }

  online(): void {
    this.#generation++;
    for (const [k, p] of this.#publishing) this.#sendPublish(k, p);
    for (const s of this.#subscriptions.values()) s.resume();
    for (const c of this.#consumers.values()) c.resume();
  }

  offline(): void {
    for (const [id, r] of this.#requests) {
      this.#requests.delete(id);
      r.reject(new SdkError('NETWORK_ERROR', 'the connection to the relay was lost'));
    }
    for (const p of this.#publishing.values()) p.sent = false;
  }

  close(err: SdkError): void {
    this.#closed = true;
    this.offline();
    for (const p of this.#publishing.values()) for (const w of p.waiters.splice(0)) w.reject(err);
    for (const s of this.#subscriptions.values()) s.end(undefined);
    for (const c of this.#consumers.values()) c.end(err);
    for (const set of this.#keyWaiters.values()) for (const wake of set) wake();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a request frame (online only) and waits for its answer. */
  request(make: (id: number) => TopicClientFrame): Promise<TopicServerFrame> {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_fffe ? FIRST_TOPIC_REQUEST_ID : this.#nextId + 1;
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new SdkError('CLIENT_CLOSED'));
      this.#requests.set(id, { resolve, reject });
      if (!this.host.send(make(id))) {
        this.#requests.delete(id);
        reject(new SdkError('NETWORK_ERROR', 'not connected to the relay'));
      }
    });
  }

  /** A frame of the topic protocol from the relay. */
  onFrame(f: TopicServerFrame): void {
    switch (f.type) {
      case 'published':
      case 'subscribed':
      case 'unsubscribed':
      case 'consuming':
      case 'settled':
      case 'stopped': {
        // At once, before any message of that stream is dispatched (they follow the answer).
        if (f.type === 'subscribed') this.#subscriptions.get(f.topic)?.onSubscribed(f);
        const r = this.#requests.get(f.id);
        if (r === undefined) return;
        this.#requests.delete(f.id);
        r.resolve(f);
        return;
      }
      case 'topic_message':
        this.#subscriptions.get(f.topic)?.onMessage(f);
        return;
      case 'leased':
        this.#consumers.get(`${f.topic} ${f.group}`)?.onLeased(f);
        return;
      case 'subscription_ended': {
        const err = new SdkError('RELAY_ERROR', `the relay ended ${f.group === undefined ? 'the subscription to' : `membership of group ${f.group} of`} ${f.topic}: ${f.code}: ${f.message}`, { relayCode: f.code, ...(f.details ? { details: { ...f.details } } : {}) });
        if (f.group === undefined) this.#subscriptions.get(f.topic)?.end(err);
        else this.#consumers.get(`${f.topic} ${f.group}`)?.end(err);
        return;
      }
    }
  }

  /** An error frame naming one of our requests. */
  onError(id: number, err: ProtocolError): boolean {
    const r = this.#requests.get(id);
    if (r === undefined) return false;
    this.#requests.delete(id);
    r.reject(relayError(err, 'the relay refused the request'));
    return true;
  }

  // ---- publishing -------------------------------------------------------------------

  /**
   * Publishes one message: answered with the first publish when this device published the
   * id before with the same content (`content`: what identifies it, by default its kind, key
   * and body), refused with PUBLISH_ID_CONFLICT when with other content. `body` may be made
   * only once the id is known to be new (a signed event is signed then).
   */
  async publish(
    topic: string,
    readers: readonly string[],
    m: { id: string; key: Uint8Array | undefined; kind: BodyKind; sentAt: number; content?: Uint8Array; body: Uint8Array | (() => Promise<Uint8Array>) },
  ): Promise<PublishResult> {
    const idBytes = publishIdBytes(m.id);
    const keyText = m.key === undefined ? undefined : new TextDecoder().decode(m.key);
    const content = m.content ?? (m.body instanceof Uint8Array ? m.body : undefined);
    if (content === undefined) throw new SdkError('INVALID_ARGUMENT', 'a body made later needs its content digest');
    const keyBytes = m.key ?? new Uint8Array(0);
    const digest = this.host.backend.sha256(new ByteWriter(8 + keyBytes.length + content.length).u8(BODY_KINDS.indexOf(m.kind)).u32(keyBytes.length).bytes(keyBytes).bytes(content).finish());
    const slot = pubKey(topic, m.id);
    const existing = await this.#lookup(slot, digest);
    if (existing !== undefined) return existing;
    const body = m.body instanceof Uint8Array ? m.body : await m.body();
    const inner = { kind: m.kind, sentAt: m.sentAt, key: m.key, body };
    const sealed = encodeInner({ ...inner, id: idBytes });
    let prior: PublishResult | Publishing | undefined;
    let stored: Uint8Array | undefined;
    try {
      await this.host.seal(topic, readers, sealed, async (tx, payload) => {
        // Looked at again in the sealing transaction: of two publishes of one id at once,
        // one seals and the other waits for it (a throw here rolls the transaction back).
        prior = await this.#lookupIn(tx, slot, digest);
        if (prior !== undefined) throw PRIOR;
        tx.put(NS.topics, slot, encodeRecord({ v: 1, state: 'pending', digest, at: this.host.clock.now(), payload, ...(keyText === undefined ? {} : { key: keyText }) } satisfies PendingRecord));
        stored = payload;
      });
    } catch (err) {
      if (err !== PRIOR) throw err;
    }
    if (prior !== undefined && 'epoch' in prior) return prior;
    let p = prior ?? this.#publishing.get(slot);
    if (p === undefined) {
      p = { topic, id: m.id, payload: stored as Uint8Array, key: keyText, waiters: [], sent: false };
      this.#publishing.set(slot, p);
    }
    const waiting = p;
    // Closed while sealing: the message stays stored (sent after a restart), nobody waits here.
    const done = new Promise<PublishResult>((resolve, reject) => (this.#closed ? reject(new SdkError('CLIENT_CLOSED')) : waiting.waiters.push({ resolve, reject })));
    if (this.host.online()) this.#sendPublish(slot, p);
    return done;
  }

  /** The outcome of an earlier publish of this id, a wait for one in flight, or undefined. */
  async #lookup(slot: string, digest: Uint8Array): Promise<PublishResult | undefined> {
    const found = await this.host.db.run((tx) => this.#lookupIn(tx, slot, digest));
    if (found === undefined || 'epoch' in found) return found;
    return new Promise<PublishResult>((resolve, reject) => {
      if (this.#closed) return reject(new SdkError('CLIENT_CLOSED'));
      found.waiters.push({ resolve, reject });
      if (this.host.online()) this.#sendPublish(slot, found);
    });
  }

  async #lookupIn(tx: StoreTx, slot: string, digest: Uint8Array): Promise<PublishResult | Publishing | undefined> {
    const raw = await tx.get(NS.topics, slot);
    if (raw === undefined) return undefined;
    const r = decodeRecord<PendingRecord>(raw);
    if (!equalBytes(r.digest, digest)) throw new SdkError('PUBLISH_ID_CONFLICT', 'this device published this id before with another body or key');
    const [topic, id] = splitPubKey(slot);
    if (r.state === 'done') return { topic, id, epoch: r.epoch as number, offset: r.offset as number, publishedAt: r.publishedAt as number, duplicate: true };
    let p = this.#publishing.get(slot);
    if (p === undefined && r.payload !== undefined) {
      p = { topic, id, payload: r.payload, key: r.key, waiters: [], sent: false };
      this.#publishing.set(slot, p);
    }
    return p;
  }

  #sendPublish(slot: string, p: Publishing): void {
    if (p.sent) return;
    p.sent = true;
    const key = p.key === undefined ? undefined : encoder.encode(p.key);
    this.request((id) => ({ type: 'publish', id, topic: p.topic, publishId: encoder.encode(p.id), ...(key ? { key } : {}), payload: p.payload })).then(
      (f) => {
        if (f.type !== 'published') return;
        const result: PublishResult = { topic: p.topic, id: p.id, epoch: f.epoch, offset: f.offset, publishedAt: f.publishedAt, duplicate: f.duplicate };
        void this.host.db
          .run(async (tx) => {
            const raw = await tx.get(NS.topics, slot);
            if (raw === undefined) return;
            const r = decodeRecord<PendingRecord>(raw);
            tx.put(NS.topics, slot, encodeRecord({ v: 1, state: 'done', digest: r.digest, at: this.host.clock.now(), epoch: f.epoch, offset: f.offset, publishedAt: f.publishedAt } satisfies PendingRecord));
          })
          .then(
            () => {
              this.#publishing.delete(slot);
              for (const w of p.waiters.splice(0)) w.resolve(result);
              this.host.published(result);
            },
            (err: unknown) => {
              p.sent = false;
              this.host.report(err);
            },
          );
      },
      (err: SdkError) => {
        p.sent = false;
        if (passing(err) || err.code === 'CLIENT_CLOSED') return; // sent again when online, or after a restart
        // Refused for good (no such topic, not allowed, too large): it will never be published.
        void this.host.db
          .run((tx) => tx.delete(NS.topics, slot))
          .then(() => {
            this.#publishing.delete(slot);
            if (p.waiters.length === 0) this.host.report(err);
            for (const w of p.waiters.splice(0)) w.reject(err);
          }, (e: unknown) => this.host.report(e));
      },
    );
  }

  /** Forgets published ids older than `cutoff`, and the oldest beyond MAX_PUBLISHED_IDS. */
  async prune(tx: StoreTx, cutoff: number): Promise<void> {
    const rows = (await tx.list(NS.topics, 'pub:')).map(([k, v]) => ({ k, r: decodeRecord<PendingRecord>(v) })).filter((x) => x.r.state === 'done').sort((a, b) => a.r.at - b.r.at);
    const excess = rows.length - MAX_PUBLISHED_IDS;
    rows.forEach((x, i) => {
      if (x.r.at < cutoff || i < excess) tx.delete(NS.topics, x.k);
    });
  }

  // ---- subscriptions and consumers ----------------------------------------------------

  subscribe(topic: string, handler: (m: TopicMessage) => unknown, opts: SubscribeOptions): Subscription {
    checkOptions(opts, 'subscribe');
    if (this.#subscriptions.has(topic)) throw new SdkError('INVALID_ARGUMENT', `this client is already subscribed to ${topic}; close that subscription first`);
    const s = new Subscription(this, topic, startFrame(opts.from), handler, opts, () => this.#subscriptions.delete(topic));
    this.#subscriptions.set(topic, s);
    s.resume();
    return s;
  }

  consumer(topic: string, group: string, opts: ConsumerOptions): Consumer {
    checkOptions(opts, 'consumer');
    const k = `${topic} ${group}`;
    if (this.#consumers.has(k)) throw new SdkError('INVALID_ARGUMENT', `this client already consumes ${topic} as group ${group}`);
    const c = new Consumer(this, topic, group, opts, () => this.#consumers.delete(k));
    this.#consumers.set(k, c);
    return c;
  }

  // ---- opening messages ----------------------------------------------------------------

  /** Wakes messages waiting for this generation (called after it is stored). */
  keyArrived(publisher: GroupTarget, keyId: string): void {
    const set = this.#keyWaiters.get(`${publisher.userId} ${publisher.deviceId} ${keyId}`);
    if (set) for (const wake of set) wake();
  }

  /** Opens a message frame: the message, or the SdkError that says why it can't be read. */
  async open(readTopic: string, f: MessageFrame, keyWaitMs: number, deliveries: number | undefined): Promise<TopicMessage | SdkError> {
    const where = { topic: readTopic, epoch: f.epoch, offset: f.offset, publisher: f.publisher };
    const invalid = (why: string, cause?: unknown) => new SdkError('TOPIC_MESSAGE_INVALID', `${readTopic}@${f.epoch}:${f.offset}: ${why}`, { cause, details: where });
    const deadLetter = 'deadLetter' in f ? f.deadLetter : undefined;
    const topic = deadLetter?.topic ?? readTopic;
    let keyId: Uint8Array;
    try {
      keyId = topicMessageKeyId(f.payload);
    } catch (err) {
      return invalid('not a topic message', err);
    }
    const generation = await this.#waitForKey(f.publisher, keyId, keyWaitMs);
    if (generation === undefined) {
      return new SdkError('TOPIC_KEY_MISSING', `${readTopic}@${f.epoch}:${f.offset}: no key generation ${encodeBase64url(keyId)} from ${f.publisher.userId}/${f.publisher.deviceId}`, { details: where });
    }
    let inner: Inner;
    try {
      inner = decodeInner(unpad(openTopicMessage(this.host.backend, generation, topic, f.payload)));
    } catch (err) {
      if (!(err instanceof CryptoError)) throw err;
      return invalid(err.message, err);
    }
    // The clear metadata must be what was sealed (a dead-letter copy has the relay's id).
    if (deadLetter === undefined && !equalBytes(inner.id, f.publishId)) return invalid('its publish id is not the one it was sealed with');
    if ((inner.key === undefined) !== (f.key === undefined) || (inner.key !== undefined && f.key !== undefined && !equalBytes(inner.key, f.key))) {
      return invalid('its ordering key is not the one it was sealed with');
    }
    let id: string;
    let key: string | undefined;
    let body: unknown;
    try {
      id = utf8.decode(inner.id);
      key = inner.key === undefined ? undefined : utf8.decode(inner.key);
      body = inner.kind === 'event' ? undefined : decodeBody(inner.kind, inner.body);
    } catch (err) {
      return invalid('its body, id or key does not decode', err);
    }
    let event: TopicMessage['event'];
    if (inner.kind === 'event') {
      let jws: string;
      try {
        jws = utf8.decode(inner.body);
      } catch (err) {
        return invalid('a signed event that is not text', err);
      }
      try {
        const verified = await this.host.verifyEvent(jws, f.publisher);
        event = { jws, event: verified };
        body = verified;
      } catch (err) {
        return invalid(`a signed event that does not verify: ${(err as Error).message}`, err);
      }
    }
    return {
      topic: readTopic,
      epoch: f.epoch,
      offset: f.offset,
      id,
      key,
      from: { userId: f.publisher.userId, deviceId: f.publisher.deviceId },
      kind: inner.kind,
      body,
      event,
      sentAt: inner.sentAt,
      publishedAt: f.publishedAt,
      deadLetter,
      deliveries,
    };
  }

  async #waitForKey(publisher: GroupTarget, keyId: Uint8Array, waitMs: number): Promise<Awaited<ReturnType<TopicKeys['find']>>> {
    const slot = `${publisher.userId} ${publisher.deviceId} ${encodeBase64url(keyId)}`;
    const deadline = this.host.clock.now() + waitMs;
    for (;;) {
      let wake!: () => void;
      const woken = new Promise<void>((r) => (wake = r));
      let set = this.#keyWaiters.get(slot);
      if (set === undefined) this.#keyWaiters.set(slot, (set = new Set()));
      set.add(wake);
      try {
        const found = await this.host.db.run((tx) => this.host.keys.find(tx, publisher, keyId));
        const left = deadline - this.host.clock.now();
        if (found !== undefined || left <= 0 || this.#closed) return found;
        let timer: TimerHandle | undefined;
        await Promise.race([woken, new Promise<void>((r) => (timer = this.host.clock.setTimeout(r, left)))]);
        if (timer) this.host.clock.clearTimeout(timer);
      } finally {
        set.delete(wake);
        if (set.size === 0) this.#keyWaiters.delete(slot);
      }
    }
  }
}

const PRIOR = Symbol('published before');

function pubKey(topic: string, id: string): string {
  return `pub:${topic} ${encodeBase64url(encoder.encode(id))}`;
}

function splitPubKey(k: string): [string, string] {
  const rest = k.slice(4);
  const at = rest.lastIndexOf(' ');
  return [rest.slice(0, at), new TextDecoder().decode(decodeBase64url(rest.slice(at + 1)) ?? new Uint8Array(0))];
}

// ---------------------------------------------------------------------------------------
// A subscription
// ---------------------------------------------------------------------------------------

type Position = { epoch: number; offset: number };

/** A topic subscription: messages go to the handler one at a time, in offset order. */
export class Subscription {
  /** The next message the handler gets (after the relay first answered). */
  #next: Position | undefined;
  /** The last message queued (messages at or before it are repeats, after a resubscribe). */
  #queuedThrough: Position | undefined;
  readonly #queue: Extract<TopicServerFrame, { type: 'topic_message' }>[] = [];
  #running = false;
  /** Left the live stream to let the handler catch up. */
  #paused = false;
  #subscribing = false;
  /** The request id of our latest SUBSCRIBE, and whether the relay answered it: messages
   * come only from then on (before, they belong to a stream we left, or are forged). */
  #subscribeId = -1;
  #live = false;
  #ended = false;
  readonly #done: Promise<void>;
  #resolveDone!: () => void;
  #rejectDone!: (err: SdkError) => void;

  constructor(
    private readonly router: TopicRouter,
    readonly topic: string,
    private readonly start: SubscribeFrom,
    private readonly handler: (m: TopicMessage) => unknown,
    private readonly opts: SubscribeOptions,
    private readonly forget: () => void,
  ) {
    this.#done = new Promise<void>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    this.#done.catch(() => undefined);
  }

  /** Where the subscription is: the next offset its handler will get. */
  get position(): Position | undefined {
    return this.#next && { ...this.#next };
  }

  /** Resolves when closed; rejects with the relay's reason when the relay ends it
   * (OFFSET_RETIRED, TOPIC_EPOCH_CHANGED, FORBIDDEN, TOPIC_NOT_FOUND...: `relayCode`, `details`). */
  get ended(): Promise<void> {
    return this.#done;
  }

  /** Subscribes (again) from where it is, when online and not paused. */
  resume(): void {
    if (this.#ended || this.#paused || this.#subscribing || !this.router.host.online()) return;
    const at = this.#queuedThrough ? { epoch: this.#queuedThrough.epoch, offset: this.#queuedThrough.offset + 1 } : this.#next;
    const from: SubscribeFrom = at ? { kind: 'offset', ...at } : this.start;
    const generation = this.router.generation;
    this.#subscribing = true;
    this.#live = false;
    this.router.request((id) => {
      this.#subscribeId = id;
      return { type: 'subscribe', id, topic: this.topic, from };
    }).then(
      () => {
        this.#subscribing = false;
      },
      (err: SdkError) => {
        this.#subscribing = false;
        if (passing(err)) {
          if (generation === this.router.generation) return; // the connection is down: resumed when it is back
          this.resume();
          return;
        }
        this.end(err);
      },
    );
  }

  /** @internal The relay answered a SUBSCRIBE to this topic. */
  onSubscribed(f: Extract<TopicServerFrame, { type: 'subscribed' }>): void {
    if (this.#ended || f.id !== this.#subscribeId) return;
    this.#live = true;
    if (this.#next === undefined) this.#next = { epoch: f.epoch, offset: f.offset };
  }

  onMessage(f: Extract<TopicServerFrame, { type: 'topic_message' }>): void {
    if (this.#ended || !this.#live) return;
    const q = this.#queuedThrough;
    if (q !== undefined && f.epoch === q.epoch && f.offset <= q.offset) return;
    this.#queue.push(f);
    this.#queuedThrough = { epoch: f.epoch, offset: f.offset };
    if (this.#queue.length >= MAX_SUBSCRIPTION_BUFFER && !this.#paused) {
      // The handler is slower than the topic: leave the live stream, read from the
      // relay's storage again once it has caught up (nothing is held beyond the buffer).
      this.#paused = true;
      this.#live = false; // what still comes of the stream is read again from #next
      this.router.request((id) => ({ type: 'unsubscribe', id, topic: this.topic })).catch(() => undefined);
    }
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      for (;;) {
        const f = this.#queue.shift();
        if (f === undefined || this.#ended) break;
        try {
          const m = await this.router.open(this.topic, f, this.opts.keyWaitMs ?? TOPIC_KEY_WAIT_MS, undefined);
          if (this.#ended) break;
          if (m instanceof SdkError) {
            if (this.opts.onSkipped) this.opts.onSkipped(m);
            else this.router.host.report(m);
          } else {
            try {
              await this.handler(m);
            } catch (err) {
              if (this.opts.onError) this.opts.onError(err, m);
              else this.router.host.report(err);
            }
          }
        } catch (err) {
          // The store failed, or onSkipped / onError threw: told, and the subscription goes on
          // (rather than stop with the rest of the queue unread).
          this.router.host.report(err);
        }
        this.#next = { epoch: f.epoch, offset: f.offset + 1 };
      }
    } finally {
      this.#running = false;
    }
    if (this.#paused && this.#queue.length === 0 && !this.#ended) {
      this.#paused = false;
      this.#queuedThrough = undefined;
      this.resume();
    }
  }

  /** Ends the subscription: no more messages reach the handler. */
  async close(): Promise<void> {
    if (this.#ended) return;
    this.end(undefined);
    if (this.router.host.online()) await this.router.request((id) => ({ type: 'unsubscribe', id, topic: this.topic })).catch(() => undefined);
  }

  /** @internal */
  end(err: SdkError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#queue.length = 0;
    this.forget();
    if (err) this.#rejectDone(err);
    else this.#resolveDone();
  }
}

// ---------------------------------------------------------------------------------------
// A consumer
// ---------------------------------------------------------------------------------------

interface Settling {
  action: SettleAction;
  epoch: number;
  delayMs?: number;
  byMs?: number;
  offsets: number[];
}

/**
 * A member of a consumer group. `run(handler)` takes each leased message to the handler:
 * acknowledged when it resolves, released for redelivery (after a backoff) when it throws,
 * and its lease extended while it runs. Messages are handled concurrently, up to prefetch.
 */
export class Consumer {
  readonly #prefetch: number;
  #handler: ((m: TopicMessage) => unknown) | undefined;
  #joining = false;
  /** Settles when the CONSUME in flight is answered. */
  #join: Promise<void> = Promise.resolve();
  #joined = -1;
  #stopping = false;
  #ended = false;
  /** Each message being handled, with the connection (router generation) it was leased on. */
  readonly #inFlight = new Map<Promise<void>, number>();
  #batch = new Map<string, Settling>();
  #flushQueued = false;
  #done!: Promise<void>;
  #resolveDone!: () => void;
  #rejectDone!: (err: unknown) => void;

  constructor(
    private readonly router: TopicRouter,
    readonly topic: string,
    readonly group: string,
    private readonly opts: ConsumerOptions,
    private readonly forget: () => void,
  ) {
    const prefetch = opts.prefetch ?? DEFAULT_CONSUMER_PREFETCH;
    if (!Number.isInteger(prefetch) || prefetch < 1 || prefetch > MAX_GROUP_SETTLE) throw new SdkError('INVALID_ARGUMENT', `prefetch is 1..${MAX_GROUP_SETTLE}`);
    this.#prefetch = prefetch;
    this.#done = new Promise<void>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    this.#done.catch(() => undefined);
  }

  /** Messages being handled now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Joins the group and hands each leased message to `handler` until `stop()` (then it
   * resolves) or until the relay ends the membership (then it rejects with the reason).
   */
  run(handler: (m: TopicMessage) => unknown): Promise<void> {
    if (typeof handler !== 'function') throw new SdkError('INVALID_ARGUMENT', 'run takes a handler function');
    if (this.#handler !== undefined) throw new SdkError('INVALID_ARGUMENT', 'this consumer is already running');
    this.#handler = handler;
    this.resume();
    return this.#done;
  }

  /** @internal Joins (again) when online. */
  resume(): void {
    if (this.#handler === undefined || this.#ended || this.#stopping || this.#joining || !this.router.host.online()) return;
    if (this.#joined === this.router.generation) return;
    const generation = this.router.generation;
    this.#joining = true;
    this.#join = this.router.request((id) => ({ type: 'consume', id, topic: this.topic, group: this.group, prefetch: this.#prefetch })).then(
      () => {
        this.#joining = false;
        this.#joined = generation;
      },
      (err: SdkError) => {
        this.#joining = false;
        if (passing(err)) {
          if (generation !== this.router.generation) this.resume();
          return;
        }
        this.end(err);
      },
    );
  }

  onLeased(f: Extract<TopicServerFrame, { type: 'leased' }>): void {
    if (this.#ended) return;
    const generation = this.router.generation;
    if (this.#stopping) {
      this.#settle(generation, f.epoch, { action: 'nack', delayMs: 0 }, f.offset);
      return;
    }
    // The relay leases at most prefetch to a connection at once: a lease beyond that is
    // not handled (nor settled: it runs out and is leased again), so a relay cannot make
    // the handlers, timers and key waits of this consumer grow without bound.
    let held = 0;
    for (const g of this.#inFlight.values()) if (g === generation) held++;
    if (held >= this.#prefetch) return;
    const work = this.#handle(f, generation).finally(() => this.#inFlight.delete(work));
    this.#inFlight.set(work, generation);
  }

  async #handle(f: Extract<TopicServerFrame, { type: 'leased' }>, generation: number): Promise<void> {
    const clock = this.router.host.clock;
    // The lease's length as we see it; extended by that much at half of it while the handler runs.
    const leaseMs = Math.min(MAX_VISIBILITY_MS, Math.max(MIN_VISIBILITY_MS, f.leaseUntil - clock.now()));
    let timer: TimerHandle | undefined;
    const extend = (): void => {
      timer = clock.setTimeout(() => {
        this.#settle(generation, f.epoch, { action: 'extend', byMs: leaseMs }, f.offset);
        extend();
      }, Math.max(1, Math.floor(leaseMs / 2)));
    };
    extend();
    try {
      // A store failure is told and released like a message that cannot be opened.
      const m = await this.router.open(this.topic, f, this.opts.keyWaitMs ?? TOPIC_KEY_WAIT_MS, f.deliveries).catch((err: unknown) => ({ failed: err }));
      if (m instanceof SdkError || 'failed' in m) {
        this.#failed(m instanceof SdkError ? m : m.failed, undefined);
        this.#settle(generation, f.epoch, { action: 'nack', delayMs: this.#retryDelay(f.deliveries) }, f.offset);
        return;
      }
      try {
        await (this.#handler as (m: TopicMessage) => unknown)(m);
      } catch (err) {
        this.#failed(err, m);
        this.#settle(generation, f.epoch, { action: 'nack', delayMs: this.#retryDelay(f.deliveries) }, f.offset);
        return;
      }
      this.#settle(generation, f.epoch, { action: 'ack' }, f.offset);
    } finally {
      if (timer) clock.clearTimeout(timer);
    }
  }

  #retryDelay(deliveries: number): number {
    const backoff = Math.min(CONSUMER_NACK_MAX_MS, CONSUMER_NACK_BASE_MS * 2 ** Math.min(16, Math.max(0, deliveries - 1)));
    let d: unknown = backoff;
    if (this.opts.retryDelayMs) {
      try {
        d = this.opts.retryDelayMs(deliveries);
      } catch (err) {
        // Thrown out of #handle it would leave the message leased until its lease expires.
        this.#failed(err, undefined);
        d = backoff;
      }
    }
    return typeof d === 'number' && Number.isFinite(d) ? Math.min(MAX_VISIBILITY_MS, Math.max(0, Math.floor(d))) : 0;
  }

  #failed(err: unknown, m: TopicMessage | undefined): void {
    if (this.opts.onError) {
      try {
        this.opts.onError(err, m);
      } catch (e) {
        this.router.host.report(e);
      }
    } else this.router.host.report(err);
  }

  /** Queues a settle; the settles of one turn go in one frame per kind. A lease of an
   * earlier connection is void (the relay released it when that connection ended). */
  #settle(generation: number, epoch: number, s: Omit<Settling, 'offsets' | 'epoch'>, offset: number): void {
    if (generation !== this.router.generation || this.#ended) return;
    const k = `${s.action} ${epoch} ${s.delayMs ?? ''} ${s.byMs ?? ''}`;
    let b = this.#batch.get(k);
    if (b === undefined) this.#batch.set(k, (b = { ...s, epoch, offsets: [] }));
    b.offsets.push(offset);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushQueued = false;
    const batch = this.#batch;
    this.#batch = new Map();
    for (const b of batch.values()) {
      for (let i = 0; i < b.offsets.length; i += MAX_GROUP_SETTLE) {
        const offsets = b.offsets.slice(i, i + MAX_GROUP_SETTLE);
        this.router
          .request((id) => ({ type: 'settle', id, topic: this.topic, group: this.group, action: b.action, offsets, epoch: b.epoch, ...(b.delayMs !== undefined ? { delayMs: b.delayMs } : {}), ...(b.byMs !== undefined ? { byMs: b.byMs } : {}) }))
          .catch((err: SdkError) => {
            // Lost with the connection: the relay released those leases. Otherwise (the
            // lease expired meanwhile: NOT_LEASED) the message is redelivered; say so.
            if (err.code !== 'NETWORK_ERROR' && err.code !== 'CLIENT_CLOSED') this.#failed(err, undefined);
          });
      }
    }
  }

  /** Stops taking messages: those in hand finish and are settled, then the membership ends. */
  async stop(): Promise<void> {
    if (this.#ended || this.#stopping) return this.#done.catch(() => undefined);
    this.#stopping = true;
    // A CONSUME still unanswered makes us a member all the same: leave once it is, or the
    // relay leases to a member nobody hears (until the connection ends).
    while (this.#joining) await this.#join;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight.keys()]);
    // Let the last settles go out before the stop (one turn).
    await new Promise<void>((r) => queueMicrotask(r));
    if (this.router.host.online() && this.#joined === this.router.generation) {
      await this.router.request((id) => ({ type: 'stop', id, topic: this.topic, group: this.group })).catch(() => undefined);
    }
    this.end(undefined);
  }

  /** @internal */
  end(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.forget();
    if (err === undefined) this.#resolveDone();
    else this.#rejectDone(err);
  }
}
