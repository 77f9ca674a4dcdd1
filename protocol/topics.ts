/**
 * Topic requests and answers on HTTP (docs/PROTOCOL.md, "Topics"): creating a topic, its
 * description, and a page of its messages. Byte strings are base64url; every field is
 * checked and bounded before use, on both sides.
 */
import { encodeBase64url } from './base64url.js';
import { type JsonObject, array, asObject, bool, bytesValue, int, str } from './decode.js';
import { ProtocolError } from './errors.js';
import {
  DEVICE_ID_PATTERN,
  GROUP_NAME_PATTERN,
  MAX_DEVICE_ID_LENGTH,
  MAX_GROUP_NAME_LENGTH,
  MAX_MAX_DELIVERIES,
  MAX_VISIBILITY_MS,
  MIN_VISIBILITY_MS,
  MAX_MESSAGE_KEY_BYTES,
  MAX_PUBLISH_ID_BYTES,
  MAX_TOPIC_MESSAGE_BYTES,
  MAX_TOPIC_NAME_LENGTH,
  MAX_TOPIC_READ_MESSAGES,
  MAX_TOPIC_RETENTION_BYTES,
  MAX_TOPIC_RETENTION_MS,
  MAX_USER_ID_LENGTH,
  MIN_TOPIC_RETENTION_BYTES,
  MIN_TOPIC_RETENTION_MS,
  TOPIC_NAME_PATTERN,
  USER_ID_PATTERN,
} from './limits.js';

const MAX_OFFSET = Number.MAX_SAFE_INTEGER;
const MAX_TIME_MS = Number.MAX_SAFE_INTEGER;

export interface CreateTopicRequest {
  readonly name: string;
  readonly retentionMs?: number | undefined;
  readonly retentionBytes?: number | undefined;
}

export interface TopicInfoAnswer {
  readonly name: string;
  readonly epoch: number;
  readonly earliestOffset: number;
  readonly nextOffset: number;
  readonly retentionMs: number | null;
  readonly retentionBytes: number | null;
  readonly sliceMs: number;
  readonly createdBy: string;
  readonly createdAt: number;
}

/** Where a dead-lettered message came from (on messages of a dead-letter topic). */
export interface DeadLetterInfo {
  readonly topic: string;
  readonly group: string;
  readonly epoch: number;
  readonly offset: number;
  readonly deliveries: number;
  /** Always `max_deliveries` for now. */
  readonly reason: string;
  /** How its last delivery failed: `nack` or `visibility_timeout`. */
  readonly lastFailure: string;
}

const DEAD_LETTER_WORD = /^[a-z_]{1,32}$/;

/** Checks a dead-letter record (JSON text from storage, or an object from the wire). */
export function decodeDeadLetter(v: unknown): DeadLetterInfo {
  const o = asObject(v, 'deadLetter');
  return {
    topic: topicName(str(o, 'topic', { max: MAX_TOPIC_NAME_LENGTH }), 'deadLetter.topic'),
    group: str(o, 'group', { max: MAX_GROUP_NAME_LENGTH, pattern: GROUP_NAME_PATTERN }),
    epoch: int(o, 'epoch', 1, MAX_OFFSET),
    offset: int(o, 'offset', 1, MAX_OFFSET),
    deliveries: int(o, 'deliveries', 1, MAX_OFFSET),
    reason: str(o, 'reason', { max: 32, pattern: DEAD_LETTER_WORD }),
    lastFailure: str(o, 'lastFailure', { max: 32, pattern: DEAD_LETTER_WORD }),
  };
}

export function parseDeadLetter(text: string): DeadLetterInfo {
  return decodeDeadLetter(JSON.parse(text));
}

export interface TopicMessageAnswer {
  readonly offset: number;
  readonly publishedAt: number;
  readonly publisher: { readonly userId: string; readonly deviceId: string };
  readonly publishId: Uint8Array;
  readonly key?: Uint8Array | undefined;
  readonly payload: Uint8Array;
  readonly deadLetter?: DeadLetterInfo | undefined;
}

export interface TopicPageAnswer {
  readonly epoch: number;
  /** The offset to read from next, and the topic's next offset when read. */
  readonly next: number;
  readonly head: number;
  readonly messages: readonly TopicMessageAnswer[];
}

export function topicName(value: string, field = 'name'): string {
  if (value.length === 0 || value.length > MAX_TOPIC_NAME_LENGTH || !TOPIC_NAME_PATTERN.test(value)) {
    throw new ProtocolError('BAD_REQUEST', `${field}: 1..${MAX_TOPIC_NAME_LENGTH} characters, dot-separated segments of a-z 0-9 _ -`);
  }
  return value;
}

function optInt(o: JsonObject, field: string, min: number, max: number): number | undefined {
  return o[field] === undefined || o[field] === null ? undefined : int(o, field, min, max);
}

export interface CreateGroupRequest {
  readonly name: string;
  readonly visibilityMs?: number | undefined;
  readonly maxDeliveries?: number | undefined;
  readonly deadLetterTopic: string;
  readonly orderedByKey?: boolean | undefined;
}

export function groupName(value: string, field = 'group'): string {
  if (value.length === 0 || value.length > MAX_GROUP_NAME_LENGTH || !GROUP_NAME_PATTERN.test(value)) {
    throw new ProtocolError('BAD_REQUEST', `${field}: 1..${MAX_GROUP_NAME_LENGTH} of a-z 0-9 _ -, starting with a letter or digit`);
  }
  return value;
}

export function decodeCreateGroupRequest(o: JsonObject): CreateGroupRequest {
  return {
    name: groupName(str(o, 'name', { max: MAX_GROUP_NAME_LENGTH }), 'name'),
    visibilityMs: optInt(o, 'visibilityMs', MIN_VISIBILITY_MS, MAX_VISIBILITY_MS),
    maxDeliveries: optInt(o, 'maxDeliveries', 1, MAX_MAX_DELIVERIES),
    deadLetterTopic: topicName(str(o, 'deadLetterTopic', { max: MAX_TOPIC_NAME_LENGTH }), 'deadLetterTopic'),
    ...(o.orderedByKey !== undefined ? { orderedByKey: bool(o, 'orderedByKey') } : {}),
  };
}

export function decodeCreateTopicRequest(o: JsonObject): CreateTopicRequest {
  return {
    name: topicName(str(o, 'name', { max: MAX_TOPIC_NAME_LENGTH })),
    retentionMs: optInt(o, 'retentionMs', MIN_TOPIC_RETENTION_MS, MAX_TOPIC_RETENTION_MS),
    retentionBytes: optInt(o, 'retentionBytes', MIN_TOPIC_RETENTION_BYTES, MAX_TOPIC_RETENTION_BYTES),
  };
}

export function encodeTopicInfo(t: TopicInfoAnswer): Record<string, unknown> {
  return { ...t };
}

function nullableInt(o: JsonObject, field: string, min: number, max: number): number | null {
  return o[field] === null ? null : int(o, field, min, max);
}

export function decodeTopicInfo(o: JsonObject): TopicInfoAnswer {
  return {
    name: topicName(str(o, 'name', { max: MAX_TOPIC_NAME_LENGTH })),
    epoch: int(o, 'epoch', 1, MAX_OFFSET),
    earliestOffset: int(o, 'earliestOffset', 1, MAX_OFFSET),
    nextOffset: int(o, 'nextOffset', 1, MAX_OFFSET),
    retentionMs: nullableInt(o, 'retentionMs', MIN_TOPIC_RETENTION_MS, MAX_TOPIC_RETENTION_MS),
    retentionBytes: nullableInt(o, 'retentionBytes', MIN_TOPIC_RETENTION_BYTES, MAX_TOPIC_RETENTION_BYTES),
    sliceMs: int(o, 'sliceMs', 1, MAX_TIME_MS),
    createdBy: str(o, 'createdBy', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
    createdAt: int(o, 'createdAt', 0, MAX_TIME_MS),
  };
}

export function encodeTopicPage(p: TopicPageAnswer): Record<string, unknown> {
  return {
    epoch: p.epoch,
    next: p.next,
    head: p.head,
    messages: p.messages.map((m) => ({
      offset: m.offset,
      publishedAt: m.publishedAt,
      publisher: { userId: m.publisher.userId, deviceId: m.publisher.deviceId },
      publishId: encodeBase64url(m.publishId),
      ...(m.key !== undefined ? { key: encodeBase64url(m.key) } : {}),
      payload: encodeBase64url(m.payload),
      ...(m.deadLetter !== undefined ? { deadLetter: m.deadLetter } : {}),
    })),
  };
}

/**
 * The message fields shared by a page of messages, a `topic_message` and a `leased`
 * frame (without `deadLetter`, which only the first two carry). `at` prefixes the field
 * names in errors ("messages[3]." in a page).
 */
export function decodeTopicMessage(m: JsonObject, at = ''): Omit<TopicMessageAnswer, 'deadLetter'> {
  const publisher = asObject(m.publisher, `${at}publisher`);
  return {
    offset: int(m, 'offset', 1, MAX_OFFSET),
    publishedAt: int(m, 'publishedAt', 0, MAX_TIME_MS),
    publisher: {
      userId: str(publisher, 'userId', { max: MAX_USER_ID_LENGTH, pattern: USER_ID_PATTERN }),
      deviceId: str(publisher, 'deviceId', { max: MAX_DEVICE_ID_LENGTH, pattern: DEVICE_ID_PATTERN }),
    },
    publishId: bytesValue(m.publishId, `${at}publishId`, { min: 1, max: MAX_PUBLISH_ID_BYTES }),
    ...(m.key !== undefined ? { key: bytesValue(m.key, `${at}key`, { min: 1, max: MAX_MESSAGE_KEY_BYTES }) } : {}),
    payload: bytesValue(m.payload, `${at}payload`, { min: 1, max: MAX_TOPIC_MESSAGE_BYTES }),
  };
}

export function decodeTopicPage(o: JsonObject): TopicPageAnswer {
  const messages = array(o, 'messages', MAX_TOPIC_READ_MESSAGES, () => new ProtocolError('BAD_REQUEST', 'messages: too many')).map((v, i) => {
    const m = asObject(v, `messages[${i}]`);
    return {
      ...decodeTopicMessage(m, `messages[${i}].`),
      ...(m.deadLetter !== undefined ? { deadLetter: decodeDeadLetter(m.deadLetter) } : {}),
    };
  });
  return { epoch: int(o, 'epoch', 1, MAX_OFFSET), next: int(o, 'next', 1, MAX_OFFSET), head: int(o, 'head', 1, MAX_OFFSET), messages };
}

/** A consumer group as GET/POST /v1/topics/{topic}/groups answer it. */
export interface GroupInfoAnswer {
  readonly topic: string;
  readonly name: string;
  readonly epoch: number;
  readonly committedOffset: number;
  readonly nextOffset: number;
  readonly visibilityMs: number;
  readonly maxDeliveries: number;
  readonly deadLetterTopic: string;
  readonly orderedByKey: boolean;
  readonly inFlight: number;
  readonly redeliveries: number;
  readonly skipped: number;
  readonly deadLettered: number;
}

export function decodeGroupInfo(o: JsonObject): GroupInfoAnswer {
  const count = (f: string) => int(o, f, 0, MAX_OFFSET);
  return {
    topic: topicName(str(o, 'topic', { max: MAX_TOPIC_NAME_LENGTH }), 'topic'),
    name: groupName(str(o, 'name', { max: MAX_GROUP_NAME_LENGTH }), 'name'),
    epoch: int(o, 'epoch', 1, MAX_OFFSET),
    committedOffset: int(o, 'committedOffset', 1, MAX_OFFSET),
    nextOffset: int(o, 'nextOffset', 1, MAX_OFFSET),
    visibilityMs: int(o, 'visibilityMs', MIN_VISIBILITY_MS, MAX_VISIBILITY_MS),
    maxDeliveries: int(o, 'maxDeliveries', 1, MAX_MAX_DELIVERIES),
    deadLetterTopic: topicName(str(o, 'deadLetterTopic', { max: MAX_TOPIC_NAME_LENGTH }), 'deadLetterTopic'),
    orderedByKey: bool(o, 'orderedByKey'),
    inFlight: count('inFlight'),
    redeliveries: count('redeliveries'),
    skipped: count('skipped'),
    deadLettered: count('deadLettered'),
  };
}
