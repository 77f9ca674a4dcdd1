/**
 * Topic frames for the relay-level topic suites: publish and subscribe over a raw
 * connection, and the topic messages it received.
 */
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import type { JsonFrame, RawClient } from '../mailbox/raw-client.js';

/** A token claim granting everything on the `feeds.` topics. */
export const CLAIMS = { hermetic_topics: { create: ['feeds.>'], publish: ['feeds.>'], subscribe: ['feeds.>'], consume: ['feeds.>'] } };

let requestId = 1000;

/** Publishes `label` (as publish id and payload unless given) and waits for the answer. */
export async function publish(c: RawClient, topic: string, label: string, opts: { id?: string; payload?: Uint8Array; key?: string } = {}): Promise<JsonFrame> {
  const id = ++requestId;
  c.sendJson({
    type: 'publish',
    id,
    topic,
    publishId: encodeBase64url(new TextEncoder().encode(opts.id ?? label)),
    ...(opts.key ? { key: encodeBase64url(new TextEncoder().encode(opts.key)) } : {}),
    payload: encodeBase64url(opts.payload ?? new TextEncoder().encode(label)),
  });
  return c.waitJson((f) => (f.type === 'published' || f.type === 'error') && f.id === id);
}

export async function subscribe(c: RawClient, topic: string, from: unknown): Promise<JsonFrame> {
  const id = ++requestId;
  c.sendJson({ type: 'subscribe', id, topic, from });
  return c.waitJson((f) => (f.type === 'subscribed' || f.type === 'error') && f.id === id);
}

export function messages(c: RawClient, topic: string): JsonFrame[] {
  return c.json.filter((f) => f.type === 'topic_message' && f.topic === topic);
}

export function payloads(c: RawClient, topic: string): string[] {
  return messages(c, topic).map((f) => new TextDecoder().decode(decodeBase64url(String(f.payload))!));
}

export async function waitMessages(c: RawClient, topic: string, n: number, timeoutMs = 30_000): Promise<JsonFrame[]> {
  await c.until(() => messages(c, topic).length >= n || c.closeCode !== undefined, `${n} messages of ${topic}`, timeoutMs);
  return messages(c, topic);
}


/** Joins a consumer group and waits for the answer. */
export async function consume(c: RawClient, topic: string, group: string, prefetch?: number): Promise<JsonFrame> {
  const id = ++requestId;
  c.sendJson({ type: 'consume', id, topic, group, ...(prefetch !== undefined ? { prefetch } : {}) });
  return c.waitJson((f) => (f.type === 'consuming' || f.type === 'error') && f.id === id);
}

/** Settles offsets of a group and waits for the answer. */
export async function settle(c: RawClient, topic: string, group: string, action: 'ack' | 'nack' | 'extend', offsets: number[], extra: Record<string, unknown> = {}): Promise<JsonFrame> {
  const id = ++requestId;
  c.sendJson({ type: 'settle', id, topic, group, action, offsets, ...extra });
  return c.waitJson((f) => (f.type === 'settled' || f.type === 'error') && f.id === id);
}

export function leased(c: RawClient, topic: string): JsonFrame[] {
  return c.json.filter((f) => f.type === 'leased' && f.topic === topic);
}
