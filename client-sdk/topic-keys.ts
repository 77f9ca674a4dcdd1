/**
 * Topic key generations in the device's store (crypto/topic/topic-key.ts is the format).
 *
 * Ours, per topic we publish to ("out:<topic>"): the current generation, the devices that
 * hold it, when it began and how many messages it sealed. A new generation begins when a
 * device that held the current one is no longer among the readers' devices, after
 * TOPIC_KEY_ROTATE_MESSAGES messages, or after TOPIC_KEY_MAX_AGE_MS.
 *
 * Others', per (publisher device, key id) ("in:<user> <device> <key id>"), with a list of
 * the key ids held per (publisher device, topic) ("list:<user> <device> <topic>") that
 * keeps the newest MAX_TOPIC_KEYS_PER_SENDER. A generation is only ever taken from the
 * pairwise session with its publisher device, so the key id a message names, looked up
 * under the publisher the relay names, finds a generation that device gave us — or none.
 */
import { CryptoError } from '../crypto/errors.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { OutboundTopicKey, type TopicKeyDistribution, decodeTopicKeyDistribution } from '../crypto/topic/topic-key.js';
import { encodeBase64url } from '../protocol/base64url.js';
import type { GroupTarget } from './groups.js';
import { MAX_TOPICS_PER_SENDER, MAX_TOPIC_KEYS_PER_SENDER, TOPIC_KEY_MAX_AGE_MS, TOPIC_KEY_RETENTION_MS, TOPIC_KEY_ROTATE_MESSAGES } from './limits.js';
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

interface OutboundRecord {
  v: 1;
  /** "user device" of every device that holds the current generation. */
  holders: string[];
  state: Uint8Array;
  createdAt: number;
  sealed: number;
}

interface InboundRecord {
  v: 1;
  topic: string;
  keyId: Uint8Array;
  secret: Uint8Array;
  signingKey: Uint8Array;
  receivedAt: number;
}

const holder = (t: GroupTarget): string => `${t.userId} ${t.deviceId}`;

export class TopicKeys {
  constructor(
    private readonly backend: CryptoBackend,
    private readonly random: RandomSource,
  ) {}

  /**
   * Our generation for `topic`, brought in line with `devices` (every device that should
   * read what we publish now) and counted for one more message. Returns the distribution
   * for the devices that need it.
   */
  async prepare(tx: StoreTx, topic: string, devices: readonly GroupTarget[], now: number): Promise<{ key: OutboundTopicKey; distribution: Uint8Array | undefined; needIt: GroupTarget[] }> {
    const slot = `out:${topic}`;
    const raw = await tx.get(NS.topics, slot);
    const rec = raw === undefined ? undefined : decodeRecord<OutboundRecord>(raw);
    const wanted = new Set(devices.map(holder));
    let key: OutboundTopicKey;
    let holders: string[];
    let createdAt = now;
    let sealed = 0;
    const stale =
      rec === undefined ||
      rec.holders.some((h) => !wanted.has(h)) || // someone who could read must not read what follows
      rec.sealed >= TOPIC_KEY_ROTATE_MESSAGES ||
      now - rec.createdAt >= TOPIC_KEY_MAX_AGE_MS ||
      now < rec.createdAt; // a clock set back: start over rather than keep a generation forever
    if (stale) {
      key = OutboundTopicKey.create(topic, this.backend, this.random);
      holders = [];
    } else {
      key = OutboundTopicKey.deserialize(topic, rec.state, this.backend, this.random);
      holders = rec.holders;
      createdAt = rec.createdAt;
      sealed = rec.sealed;
    }
    const needIt = devices.filter((d) => !holders.includes(holder(d)));
    const distribution = needIt.length > 0 ? key.distribution() : undefined;
    tx.put(NS.topics, slot, encodeRecord({ v: 1, holders: [...new Set([...holders, ...needIt.map(holder)])], state: key.serialize(), createdAt, sealed: sealed + 1 } satisfies OutboundRecord));
    return { key, distribution, needIt };
  }

  /** A generation received over the pairwise session with `from`. Throws CryptoError for one that does not decode. */
  async receive(tx: StoreTx, from: GroupTarget, distribution: Uint8Array, now: number): Promise<{ topic: string; keyId: string }> {
    const d = decodeTopicKeyDistribution(distribution);
    const keyId = encodeBase64url(d.keyId);
    const slot = `in:${holder(from)} ${keyId}`;
    const existing = await tx.get(NS.topics, slot);
    if (existing !== undefined) {
      const e = decodeRecord<InboundRecord>(existing);
      // The same generation again (a copy for another of our devices, a resend): kept as it was.
      if (e.topic !== d.topic) throw new CryptoError('INVALID_MESSAGE', 'a topic key id already used for another topic');
      return { topic: d.topic, keyId };
    }
    const listSlot = `list:${holder(from)} ${d.topic}`;
    const listRaw = await tx.get(NS.topics, listSlot);
    if (listRaw === undefined && (await tx.list(NS.topics, `list:${holder(from)} `)).length >= MAX_TOPICS_PER_SENDER) {
      throw new CryptoError('INVALID_MESSAGE', `${holder(from)} gave keys for ${MAX_TOPICS_PER_SENDER} topics already`);
    }
    const list = listRaw === undefined ? [] : decodeRecord<{ v: 1; ids: string[] }>(listRaw).ids;
    tx.put(NS.topics, slot, encodeRecord({ v: 1, topic: d.topic, keyId: d.keyId, secret: d.secret, signingKey: d.signingKey, receivedAt: now } satisfies InboundRecord));
    list.push(keyId);
    while (list.length > MAX_TOPIC_KEYS_PER_SENDER) tx.delete(NS.topics, `in:${holder(from)} ${list.shift() as string}`);
    tx.put(NS.topics, listSlot, encodeRecord({ v: 1, ids: list }));
    return { topic: d.topic, keyId };
  }

  /** Forgets generations received more than TOPIC_KEY_RETENTION_MS ago (they open no stored message). */
  async prune(tx: StoreTx, now: number): Promise<void> {
    for (const [k, raw] of await tx.list(NS.topics, 'list:')) {
      const rest = k.slice('list:'.length).split(' ');
      const from = { userId: rest[0] ?? '', deviceId: rest[1] ?? '' };
      const kept: string[] = [];
      for (const id of decodeRecord<{ v: 1; ids: string[] }>(raw).ids) {
        const slot = `in:${holder(from)} ${id}`;
        const r = await tx.get(NS.topics, slot);
        if (r !== undefined && now - decodeRecord<InboundRecord>(r).receivedAt < TOPIC_KEY_RETENTION_MS) kept.push(id);
        else tx.delete(NS.topics, slot);
      }
      if (kept.length === 0) tx.delete(NS.topics, k);
      else tx.put(NS.topics, k, encodeRecord({ v: 1, ids: kept }));
    }
  }

  /** The generation `publisher` gave us with this key id, if we hold it. */
  async find(tx: StoreTx, publisher: GroupTarget, keyId: Uint8Array): Promise<TopicKeyDistribution | undefined> {
    const raw = await tx.get(NS.topics, `in:${holder(publisher)} ${encodeBase64url(keyId)}`);
    if (raw === undefined) return undefined;
    const r = decodeRecord<InboundRecord>(raw);
    return { topic: r.topic, keyId: r.keyId, secret: r.secret, signingKey: r.signingKey };
  }
}
