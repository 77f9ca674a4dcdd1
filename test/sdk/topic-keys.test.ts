/**
 * The topic key generations a device keeps of others (client-sdk/topic-keys.ts): filed
 * under the device that gave them, bounded per topic and per sender, never overwritten
 * with another topic's, and forgotten once they can open no stored message.
 */
import { describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/errors.js';
import { nobleBackend } from '../../crypto/primitives/noble.js';
import { systemRandom } from '../../crypto/primitives/random.js';
import { OutboundTopicKey } from '../../crypto/topic/topic-key.js';
import { MAX_TOPICS_PER_SENDER, MAX_TOPIC_KEYS_PER_SENDER, TOPIC_KEY_RETENTION_MS } from '../../client-sdk/limits.js';
import { MemoryStore } from '../../client-sdk/stores/memory.js';
import { Transactor } from '../../client-sdk/stores/store.js';
import { TopicKeys } from '../../client-sdk/topic-keys.js';

const alice = { userId: 'alice', deviceId: 'd1' };
const mallory = { userId: 'mallory', deviceId: 'm1' };
const T0 = 1_800_000_000_000;

describe('TopicKeys', () => {
  const keys = new TopicKeys(nobleBackend, systemRandom);
  const gen = (topic: string) => OutboundTopicKey.create(topic, nobleBackend, systemRandom);

  it('files a generation under its sender, and keeps the newest per topic', async () => {
    const db = new Transactor(new MemoryStore());
    const first = gen('t.a');
    await db.run((tx) => keys.receive(tx, alice, first.distribution(), T0));
    expect(await db.run((tx) => keys.find(tx, alice, first.keyId))).toMatchObject({ topic: 't.a' });
    // Another device naming the same key id finds nothing: keys are per sender.
    expect(await db.run((tx) => keys.find(tx, mallory, first.keyId))).toBeUndefined();
    const later = Array.from({ length: MAX_TOPIC_KEYS_PER_SENDER }, () => gen('t.a'));
    for (const g of later) await db.run((tx) => keys.receive(tx, alice, g.distribution(), T0));
    expect(await db.run((tx) => keys.find(tx, alice, first.keyId))).toBeUndefined();
    expect(await db.run((tx) => keys.find(tx, alice, later[0]!.keyId))).toBeDefined();
  });

  it('refuses a key id reused for another topic, and more topics per sender than the bound', async () => {
    const db = new Transactor(new MemoryStore());
    const g = gen('t.a');
    await db.run((tx) => keys.receive(tx, mallory, g.distribution(), T0));
    const forged = OutboundTopicKey.deserialize('t.b', g.serialize(), nobleBackend, systemRandom);
    await expect(db.run((tx) => keys.receive(tx, mallory, forged.distribution(), T0))).rejects.toBeInstanceOf(CryptoError);
    for (let i = 1; i < MAX_TOPICS_PER_SENDER; i++) await db.run((tx) => keys.receive(tx, mallory, gen(`made-up.t${i}`).distribution(), T0));
    await expect(db.run((tx) => keys.receive(tx, mallory, gen('one.more').distribution(), T0))).rejects.toThrow(/topics already/);
    // A topic it holds keys for still takes new generations; other senders are not affected.
    await db.run((tx) => keys.receive(tx, mallory, gen('t.a').distribution(), T0));
    await db.run((tx) => keys.receive(tx, alice, gen('one.more').distribution(), T0));
  });

  it('forgets generations that can open no stored message any more', async () => {
    const db = new Transactor(new MemoryStore());
    const old = gen('t.a');
    const recent = gen('t.a');
    await db.run((tx) => keys.receive(tx, alice, old.distribution(), T0));
    await db.run((tx) => keys.receive(tx, alice, recent.distribution(), T0 + TOPIC_KEY_RETENTION_MS / 2));
    await db.run((tx) => keys.prune(tx, T0 + TOPIC_KEY_RETENTION_MS));
    expect(await db.run((tx) => keys.find(tx, alice, old.keyId))).toBeUndefined();
    expect(await db.run((tx) => keys.find(tx, alice, recent.keyId))).toBeDefined();
    await db.run((tx) => keys.prune(tx, T0 + 2 * TOPIC_KEY_RETENTION_MS));
    expect(await db.run((tx) => tx.list('topics', 'list:'))).toEqual([]);
  });
});
