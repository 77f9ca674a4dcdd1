/**
 * Topic frames on the WebSocket (docs/PROTOCOL.md, "Topics"): PUBLISH and its answer,
 * SUBSCRIBE / UNSUBSCRIBE and what a subscription receives. JSON text frames, byte
 * strings in base64url; decoded once into typed frames by protocol/frames.ts.
 */
import { encodeBase64url } from './base64url.js';
import { type JsonObject, array, asObject, bool, bytesValue, int, str } from './decode.js';
import { type ErrorCode, ProtocolError, parseErrorBody } from './errors.js';
import {
  GROUP_NAME_PATTERN,
  MAX_GROUP_LEASE,
  MAX_GROUP_NAME_LENGTH,
  MAX_GROUP_SETTLE,
  MAX_VISIBILITY_MS,
  MIN_VISIBILITY_MS,
  MAX_MESSAGE_KEY_BYTES,
  MAX_PUBLISH_ID_BYTES,
  MAX_TOPIC_MESSAGE_BYTES,
  MAX_TOPIC_NAME_LENGTH,
} from './limits.js';
import { type TopicMessageAnswer, decodeDeadLetter, decodeTopicMessage, topicName } from './topics.js';

const MAX_REQUEST_ID = 0xffff_ffff;
const MAX_POSITION = Number.MAX_SAFE_INTEGER;
const MAX_TIME_MS = Number.MAX_SAFE_INTEGER;

/** Where a subscription starts (server/topics/store.ts StartPoint). */
export type SubscribeFrom =
  | { readonly kind: 'earliest' }
  | { readonly kind: 'latest' }
  | { readonly kind: 'offset'; readonly epoch: number; readonly offset: number }
  | { readonly kind: 'time'; readonly atMs: number };

export type TopicClientFrame =
  | {
      readonly type: 'publish';
      readonly id: number;
      readonly topic: string;
      readonly publishId: Uint8Array;
      readonly key?: Uint8Array | undefined;
      readonly payload: Uint8Array;
    }
  | { readonly type: 'subscribe'; readonly id: number; readonly topic: string; readonly from: SubscribeFrom }
  | { readonly type: 'unsubscribe'; readonly id: number; readonly topic: string }
  /** Joins consumer group `group` of `topic`: at most `prefetch` messages leased to this
   * connection and not yet settled at a time. */
  | { readonly type: 'consume'; readonly id: number; readonly topic: string; readonly group: string; readonly prefetch: number }
  | {
      readonly type: 'settle';
      readonly id: number;
      readonly topic: string;
      readonly group: string;
      readonly action: SettleAction;
      readonly offsets: readonly number[];
      /** The epoch the offsets were leased in (their `leased` frames'): after a reset of
       * the topic, offsets of the old epoch are refused, not taken for the new one's. */
      readonly epoch?: number | undefined;
      /** nack: leased again after this long (0 by default). */
      readonly delayMs?: number | undefined;
      /** extend: the leases run this long from now. */
      readonly byMs?: number | undefined;
    }
  | { readonly type: 'stop'; readonly id: number; readonly topic: string; readonly group: string };

export type SettleAction = 'ack' | 'nack' | 'extend';
export const DEFAULT_PREFETCH = 16;

export type TopicServerFrame =
  /** Answer to a PUBLISH, sent only after the message is committed. */
  | { readonly type: 'published'; readonly id: number; readonly topic: string; readonly epoch: number; readonly offset: number; readonly duplicate: boolean; readonly publishedAt: number }
  /** The subscription starts at (epoch, offset): messages follow in offset order. */
  | { readonly type: 'subscribed'; readonly id: number; readonly topic: string; readonly epoch: number; readonly offset: number }
  | { readonly type: 'unsubscribed'; readonly id: number; readonly topic: string }
  | ({ readonly type: 'topic_message'; readonly topic: string; readonly epoch: number } & TopicMessageAnswer)
  /** The relay ended a subscription (its offset was retired, the topic was reset, ...),
   * or, with `group`, a connection's membership of a consumer group: `code` and
   * `details` say why and where to go on. */
  | {
      readonly type: 'subscription_ended';
      readonly topic: string;
      readonly group?: string | undefined;
      readonly code: ErrorCode;
      readonly message: string;
      readonly details?: Readonly<Record<string, unknown>> | undefined;
    }
  | { readonly type: 'consuming'; readonly id: number; readonly topic: string; readonly group: string }
  /** A message leased to this connection until `leaseUntil`: settle it before then. */
  | ({
      readonly type: 'leased';
      readonly topic: string;
      readonly group: string;
      readonly epoch: number;
      readonly deliveries: number;
      readonly leaseUntil: number;
    } & TopicMessageAnswer)
  | { readonly type: 'settled'; readonly id: number; readonly topic: string; readonly group: string; readonly action: SettleAction; readonly leaseUntil?: number | undefined }
  | { readonly type: 'stopped'; readonly id: number; readonly topic: string; readonly group: string };

/** Base64url of n bytes is at most this long. */
const b64Length = (n: number): number => Math.ceil((n * 4) / 3);

function optBytes(o: JsonObject, field: string, max: number): Uint8Array | undefined {
  return o[field] === undefined ? undefined : bytesValue(o[field], field, { min: 1, max });
}

function subscribeFrom(v: unknown): SubscribeFrom {
  if (v === 'earliest' || v === 'latest') return { kind: v };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ProtocolError('BAD_REQUEST', 'from: "earliest", "latest", {"epoch", "offset"} or {"time"}');
  }
  const o = asObject(v, 'from');
  if (o.time !== undefined) return { kind: 'time', atMs: int(o, 'time', 0, MAX_TIME_MS) };
  return { kind: 'offset', epoch: int(o, 'epoch', 1, MAX_POSITION), offset: int(o, 'offset', 1, MAX_POSITION) };
}

const topicField = (o: JsonObject): string => topicName(str(o, 'topic', { max: MAX_TOPIC_NAME_LENGTH }), 'topic');
const groupField = (o: JsonObject): string => str(o, 'group', { max: MAX_GROUP_NAME_LENGTH, pattern: GROUP_NAME_PATTERN });
/** A publish id as a client may send it: not starting with a zero byte (the relay's own,
 * for dead-letter copies). */
function clientPublishId(o: JsonObject): Uint8Array {
  const id = bytesValue(o.publishId, 'publishId', { min: 1, max: MAX_PUBLISH_ID_BYTES });
  if (id[0] === 0) throw new ProtocolError('BAD_REQUEST', 'publishId: ids starting with a zero byte are the relay\'s');
  return id;
}

const SETTLE_ACTIONS: readonly SettleAction[] = ['ack', 'nack', 'extend'];

function settleAction(v: unknown): SettleAction {
  if (typeof v === 'string' && (SETTLE_ACTIONS as readonly string[]).includes(v)) return v as SettleAction;
  throw new ProtocolError('BAD_REQUEST', 'action: "ack", "nack" or "extend"');
}

function offsetList(o: JsonObject): number[] {
  const list = array(o, 'offsets', MAX_GROUP_SETTLE, () => new ProtocolError('BAD_REQUEST', `offsets: at most ${MAX_GROUP_SETTLE}`));
  if (list.length === 0) throw new ProtocolError('BAD_REQUEST', 'offsets: at least one');
  return list.map((v, i) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new ProtocolError('BAD_REQUEST', `offsets[${i}]: a positive integer`);
    return v;
  });
}

/** A message as a `topic_message` and a `leased` frame carry it. */
function messageFields(o: JsonObject) {
  return { topic: topicField(o), epoch: int(o, 'epoch', 1, MAX_POSITION), ...decodeTopicMessage(o) };
}

export const TOPIC_CLIENT_DECODERS: { readonly [T in TopicClientFrame['type']]: (o: JsonObject) => Extract<TopicClientFrame, { type: T }> } = {
  publish: (o) => {
    // Its length says whether a payload is too large, before it is decoded.
    if (typeof o.payload === 'string' && o.payload.length > b64Length(MAX_TOPIC_MESSAGE_BYTES)) {
      throw new ProtocolError('MESSAGE_TOO_LARGE', `payload over ${MAX_TOPIC_MESSAGE_BYTES} bytes`);
    }
    const bytes = bytesValue(o.payload, 'payload', { min: 1, max: MAX_TOPIC_MESSAGE_BYTES });
    const key = optBytes(o, 'key', MAX_MESSAGE_KEY_BYTES);
    return {
      type: 'publish',
      id: int(o, 'id', 0, MAX_REQUEST_ID),
      topic: topicField(o),
      publishId: clientPublishId(o),
      ...(key !== undefined ? { key } : {}),
      payload: bytes,
    };
  },
  subscribe: (o) => ({ type: 'subscribe', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o), from: subscribeFrom(o.from) }),
  unsubscribe: (o) => ({ type: 'unsubscribe', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o) }),
  consume: (o) => ({
    type: 'consume',
    id: int(o, 'id', 0, MAX_REQUEST_ID),
    topic: topicField(o),
    group: groupField(o),
    prefetch: o.prefetch === undefined ? DEFAULT_PREFETCH : int(o, 'prefetch', 1, MAX_GROUP_LEASE),
  }),
  settle: (o) => {
    const action = settleAction(o.action);
    return {
      type: 'settle',
      id: int(o, 'id', 0, MAX_REQUEST_ID),
      topic: topicField(o),
      group: groupField(o),
      action,
      offsets: offsetList(o),
      ...(o.epoch !== undefined ? { epoch: int(o, 'epoch', 1, MAX_POSITION) } : {}),
      ...(action === 'nack' && o.delayMs !== undefined ? { delayMs: int(o, 'delayMs', 0, MAX_VISIBILITY_MS) } : {}),
      ...(action === 'extend' ? { byMs: int(o, 'byMs', MIN_VISIBILITY_MS, MAX_VISIBILITY_MS) } : {}),
    };
  },
  stop: (o) => ({ type: 'stop', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o), group: groupField(o) }),
};

export const TOPIC_SERVER_DECODERS: { readonly [T in TopicServerFrame['type']]: (o: JsonObject) => Extract<TopicServerFrame, { type: T }> } = {
  published: (o) => ({
    type: 'published',
    id: int(o, 'id', 0, MAX_REQUEST_ID),
    topic: topicField(o),
    epoch: int(o, 'epoch', 1, MAX_POSITION),
    offset: int(o, 'offset', 1, MAX_POSITION),
    duplicate: bool(o, 'duplicate'),
    publishedAt: int(o, 'publishedAt', 0, MAX_TIME_MS),
  }),
  subscribed: (o) => ({ type: 'subscribed', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o), epoch: int(o, 'epoch', 1, MAX_POSITION), offset: int(o, 'offset', 1, MAX_POSITION) }),
  unsubscribed: (o) => ({ type: 'unsubscribed', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o) }),
  topic_message: (o) => ({
    type: 'topic_message',
    ...messageFields(o),
    ...(o.deadLetter !== undefined ? { deadLetter: decodeDeadLetter(o.deadLetter) } : {}),
  }),
  leased: (o) => ({
    type: 'leased',
    ...messageFields(o),
    group: groupField(o),
    deliveries: int(o, 'deliveries', 1, MAX_POSITION),
    leaseUntil: int(o, 'leaseUntil', 0, MAX_TIME_MS),
    ...(o.deadLetter !== undefined ? { deadLetter: decodeDeadLetter(o.deadLetter) } : {}),
  }),
  consuming: (o) => ({ type: 'consuming', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o), group: groupField(o) }),
  settled: (o) => {
    const action = settleAction(o.action);
    return {
      type: 'settled',
      id: int(o, 'id', 0, MAX_REQUEST_ID),
      topic: topicField(o),
      group: groupField(o),
      action,
      ...(o.leaseUntil !== undefined ? { leaseUntil: int(o, 'leaseUntil', 0, MAX_TIME_MS) } : {}),
    };
  },
  stopped: (o) => ({ type: 'stopped', id: int(o, 'id', 0, MAX_REQUEST_ID), topic: topicField(o), group: groupField(o) }),
  subscription_ended: (o) => {
    const e = parseErrorBody(o);
    if (e === undefined) throw new ProtocolError('BAD_REQUEST', 'subscription_ended: not a well-formed error with a known code');
    return {
      type: 'subscription_ended',
      topic: topicField(o),
      ...(o.group !== undefined ? { group: groupField(o) } : {}),
      code: e.code,
      message: e.message,
      ...(e.details !== undefined ? { details: e.details } : {}),
    };
  },
};

export function encodeTopicServerFrame(f: TopicServerFrame): string {
  switch (f.type) {
    case 'topic_message':
    case 'leased':
      return JSON.stringify({
        ...f,
        publisher: { userId: f.publisher.userId, deviceId: f.publisher.deviceId },
        publishId: encodeBase64url(f.publishId),
        ...(f.key !== undefined ? { key: encodeBase64url(f.key) } : {}),
        payload: encodeBase64url(f.payload),
      });
    case 'published':
    case 'subscribed':
    case 'unsubscribed':
    case 'subscription_ended':
    case 'consuming':
    case 'settled':
    case 'stopped':
      return JSON.stringify(f);
  }
}

export function encodeTopicClientFrame(f: TopicClientFrame): string {
  switch (f.type) {
    case 'publish':
      return JSON.stringify({
        type: f.type,
        id: f.id,
        topic: f.topic,
        publishId: encodeBase64url(f.publishId),
        ...(f.key !== undefined ? { key: encodeBase64url(f.key) } : {}),
        payload: encodeBase64url(f.payload),
      });
    case 'subscribe': {
      const from = f.from.kind === 'offset' ? { epoch: f.from.epoch, offset: f.from.offset } : f.from.kind === 'time' ? { time: f.from.atMs } : f.from.kind;
      return JSON.stringify({ type: f.type, id: f.id, topic: f.topic, from });
    }
    case 'unsubscribe':
    case 'consume':
    case 'settle':
    case 'stop':
      return JSON.stringify(f);
  }
}
