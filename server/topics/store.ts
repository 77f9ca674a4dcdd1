/**
 * Topic storage (migrations/0015): create a topic, publish to it in batches (one
 * transaction per batch, answered with offsets after commit), read it from an offset,
 * resolve where a subscription starts, retire slices by age and size, and reset it to a
 * new epoch. Messages are opaque bytes; the relay never reads them.
 *
 * Offsets are given out under the topic row's lock, so they are gap-free per epoch and a
 * batch's messages are visible only together and after every lower offset. A reader is
 * never moved ahead silently: an offset below the topic's earliest is OFFSET_RETIRED, an
 * offset of another epoch is TOPIC_EPOCH_CHANGED, both with where to go on.
 */
import { ProtocolError } from '../../protocol/errors.js';
import {
  MAX_MESSAGE_KEY_BYTES,
  MAX_PUBLISH_BATCH,
  MAX_PUBLISH_ID_BYTES,
  MAX_TOPIC_MESSAGE_BYTES,
  MAX_TOPIC_READ_BYTES,
  MAX_TOPIC_READ_MESSAGES,
  MAX_TOPIC_RETENTION_BYTES,
  MAX_TOPIC_RETENTION_MS,
  MAX_TOPIC_NAME_LENGTH,
  MIN_TOPIC_RETENTION_BYTES,
  MIN_TOPIC_RETENTION_MS,
  TOPIC_NAME_PATTERN,
} from '../../protocol/limits.js';
import type { DeadLetterInfo, TopicInfoAnswer, TopicMessageAnswer } from '../../protocol/topics.js';
import { parseDeadLetter } from '../../protocol/topics.js';
import { CONTENT_HASH_BYTES } from '../mailbox/send-batch.js';
import { type Database, type SqlExecutor, UNIQUE_VIOLATION, sqlState } from '../storage/database.js';

/** A topic's slices are a quarter of its retention age wide (so at most a quarter more
 * than the age is kept), within these bounds (a topic keeps at most about 5 slices for an
 * age up to 28 days, 57 for a year); a day without an age limit. */
export const MIN_TOPIC_SLICE_MS = 1000;
export const MAX_TOPIC_SLICE_MS = 7 * 86_400_000;
export const UNAGED_TOPIC_SLICE_MS = 86_400_000;

/** The age limit of a topic created with neither limit: every topic's storage is bounded
 * by an age or a size. */
export const DEFAULT_TOPIC_RETENTION_MS = 7 * 86_400_000;

/** Topics one user may have created. */
export const MAX_TOPICS_PER_CREATOR = 1000;

/** A publish id answers a repeat for this long at most (and while its message is
 * stored): the lookup reads only the slices of that window. */
export const MAX_IDEMPOTENCY_WINDOW_MS = 7 * 86_400_000;

/** Publish ids that start with this byte are the relay's own (dead-letter copies):
 * clients may not use them. */
export const RELAY_PUBLISH_ID_PREFIX = 0;

/** SQLSTATE of hermetic_create_topic's per-creator bound (migrations/0015). */
const TOO_MANY_TOPICS_STATE = 'HM001';
const SLICES_PER_RETENTION_AGE = 4;

/** How long a retirement pass waits for the table lock that dropping a slice takes;
 * beyond it the slice is tried again at the next pass. */
export const TOPIC_SLICE_LOCK_TIMEOUT_MS = 1000;

/** Lock-not-available (lock_timeout). */
const LOCK_NOT_AVAILABLE = '55P03';

export interface TopicSettings {
  /** Messages are dropped (a slice at a time) once older than this; absent: no age limit. */
  readonly retentionMs?: number | undefined;
  /** The oldest slices are dropped while the topic holds more than this; absent: no limit. */
  readonly retentionBytes?: number | undefined;
}

/** A topic's description: the same on the wire (protocol/topics.ts). */
export type TopicInfo = TopicInfoAnswer;

export interface PublishItem {
  readonly publisherUserId: string;
  readonly publisherDeviceId: string;
  /** The publisher's idempotency key (1..MAX_PUBLISH_ID_BYTES bytes). */
  readonly publishId: Uint8Array;
  /** SHA-256 of the payload: a repeat with other content is a conflict. */
  readonly contentHash: Uint8Array;
  readonly key?: Uint8Array | undefined;
  readonly payload: Uint8Array;
}

export type PublishResult =
  /** Stored now, or (`duplicate`) by an earlier publish with the same id and content. */
  | { readonly kind: 'stored'; readonly duplicate: boolean; readonly epoch: number; readonly offset: number; readonly publishedAtMs: number }
  /** The id was used, for this publisher, by a message with other content. */
  | { readonly kind: 'conflict'; readonly epoch: number; readonly offset: number };

export interface TopicMessage {
  /** Set on a message a consumer group moved to this (its dead-letter) topic. */
  readonly deadLetter?: DeadLetterInfo | undefined;
  readonly offset: number;
  readonly publishedAtMs: number;
  readonly publisherUserId: string;
  readonly publisherDeviceId: string;
  readonly publishId: Uint8Array;
  readonly key: Uint8Array | undefined;
  readonly payload: Uint8Array;
}

/** A stored message as the wire carries it (protocol/topics.ts). */
export function wireMessage(m: TopicMessage): TopicMessageAnswer {
  return {
    offset: m.offset,
    publishedAt: m.publishedAtMs,
    publisher: { userId: m.publisherUserId, deviceId: m.publisherDeviceId },
    publishId: m.publishId,
    key: m.key,
    payload: m.payload,
    ...(m.deadLetter ? { deadLetter: m.deadLetter } : {}),
  };
}

/** Where a subscription starts. */
export type StartPoint =
  | { readonly kind: 'earliest' }
  /** After the messages stored now: only what is published from here on. */
  | { readonly kind: 'latest' }
  | { readonly kind: 'offset'; readonly epoch: number; readonly offset: number }
  /** The first message published at or after this time. */
  | { readonly kind: 'time'; readonly atMs: number };

export interface TopicRead {
  readonly epoch: number;
  readonly messages: readonly TopicMessage[];
  /** The offset to read from next. */
  readonly next: number;
  /** The topic's next offset when read: `next` equal to it means caught up. */
  readonly head: number;
}

export interface TopicRetirement {
  /** Slices dropped, by topic name. */
  readonly dropped: number;
  /** Slices whose drop waited too long for its lock (tried again at the next pass). */
  readonly deferred: number;
}

export interface TopicRow {
  topic_id: string | number;
  name: string;
  epoch: string | number;
  earliest_offset: string | number;
  next_offset: string | number;
  retention_ms: string | number | null;
  retention_bytes: string | number | null;
  slice_ms: string | number;
  last_published_ms: string | number;
  created_by: string;
  created_at_ms: string | number;
}

const TOPIC_COLUMNS = 'topic_id, name, epoch, earliest_offset, next_offset, retention_ms, retention_bytes, slice_ms, last_published_ms, created_by, created_at_ms';

function nullableNumber(v: string | number | null): number | null {
  return v === null ? null : Number(v);
}

function toInfo(r: TopicRow): TopicInfo {
  return {
    name: r.name,
    epoch: Number(r.epoch),
    earliestOffset: Number(r.earliest_offset),
    nextOffset: Number(r.next_offset),
    retentionMs: nullableNumber(r.retention_ms),
    retentionBytes: nullableNumber(r.retention_bytes),
    sliceMs: Number(r.slice_ms),
    createdBy: r.created_by,
    createdAt: Number(r.created_at_ms),
  };
}

/** The slice width for a retention age (see MIN_TOPIC_SLICE_MS). */
export function sliceWidthFor(retentionMs: number | undefined): number {
  if (retentionMs === undefined) return UNAGED_TOPIC_SLICE_MS;
  return Math.min(MAX_TOPIC_SLICE_MS, Math.max(MIN_TOPIC_SLICE_MS, Math.ceil(retentionMs / SLICES_PER_RETENTION_AGE)));
}

export function checkTopicName(name: string): void {
  if (name.length > MAX_TOPIC_NAME_LENGTH || !TOPIC_NAME_PATTERN.test(name)) {
    throw new ProtocolError('BAD_REQUEST', `topic name: 1..${MAX_TOPIC_NAME_LENGTH} characters, dot-separated segments of a-z 0-9 _ -, starting with a letter or digit`);
  }
}

function checkSettings(s: TopicSettings): void {
  const bounded = (v: number | undefined, min: number, max: number, what: string): void => {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max)) throw new ProtocolError('BAD_REQUEST', `${what}: an integer in ${min}..${max}`);
  };
  bounded(s.retentionMs, MIN_TOPIC_RETENTION_MS, MAX_TOPIC_RETENTION_MS, 'retentionMs');
  bounded(s.retentionBytes, MIN_TOPIC_RETENTION_BYTES, MAX_TOPIC_RETENTION_BYTES, 'retentionBytes');
}

function checkItem(it: PublishItem, i: number): void {
  if (it.publishId.byteLength < 1 || it.publishId.byteLength > MAX_PUBLISH_ID_BYTES) throw new ProtocolError('BAD_REQUEST', `message ${i}: publish id of 1..${MAX_PUBLISH_ID_BYTES} bytes`);
  if (it.publishId[0] === RELAY_PUBLISH_ID_PREFIX) throw new ProtocolError('BAD_REQUEST', `message ${i}: publish ids starting with a zero byte are the relay's`);
  if (it.contentHash.byteLength !== CONTENT_HASH_BYTES) throw new ProtocolError('BAD_REQUEST', `message ${i}: content hash of ${CONTENT_HASH_BYTES} bytes`);
  if (it.key !== undefined && (it.key.byteLength < 1 || it.key.byteLength > MAX_MESSAGE_KEY_BYTES)) throw new ProtocolError('BAD_REQUEST', `message ${i}: key of 1..${MAX_MESSAGE_KEY_BYTES} bytes`);
  if (it.payload.byteLength > MAX_TOPIC_MESSAGE_BYTES) throw new ProtocolError('MESSAGE_TOO_LARGE', `message ${i}: over ${MAX_TOPIC_MESSAGE_BYTES} bytes`);
}

/** Byte strings packed into one, with 1-based offsets and lengths, cut apart in SQL. */
function pack(items: readonly Uint8Array[]): { bytes: Uint8Array; offsets: number[]; lengths: number[] } {
  const total = items.reduce((n, b) => n + b.byteLength, 0);
  const bytes = new Uint8Array(total);
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 0;
  for (const b of items) {
    bytes.set(b, at);
    offsets.push(at + 1);
    lengths.push(b.byteLength);
    at += b.byteLength;
  }
  return { bytes, offsets, lengths };
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

export class TopicStore {
  private readonly now: () => number;

  private readonly maxTopicsPerCreator: number;

  constructor(
    private readonly db: Database,
    opts: { now?: () => number; maxTopicsPerCreator?: number } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.maxTopicsPerCreator = opts.maxTopicsPerCreator ?? MAX_TOPICS_PER_CREATOR;
  }

  /** Creates a topic. TOPIC_EXISTS when the name is taken. */
  async create(name: string, createdBy: string, settings: TopicSettings = {}): Promise<TopicInfo> {
    checkTopicName(name);
    checkSettings(settings);
    // Neither limit given: the default age, so that no topic grows without bound.
    const retentionMs = settings.retentionMs ?? (settings.retentionBytes === undefined ? DEFAULT_TOPIC_RETENTION_MS : undefined);
    try {
      await this.db.query('SELECT hermetic_create_topic($1::text, $2::text, $3::int8, $4::int8, $5::int8, $6::int8, $7::int4, $8::int4)', [
        name,
        createdBy,
        retentionMs ?? null,
        settings.retentionBytes ?? null,
        sliceWidthFor(retentionMs),
        this.now(),
        this.maxTopicsPerCreator,
        TOPIC_SLICE_LOCK_TIMEOUT_MS,
      ]);
    } catch (err) {
      const state = sqlState(err);
      if (state === UNIQUE_VIOLATION) throw new ProtocolError('TOPIC_EXISTS', `topic ${name} exists`);
      if (state === TOO_MANY_TOPICS_STATE) throw new ProtocolError('TOO_MANY_TOPICS', `at most ${this.maxTopicsPerCreator} topics per user`);
      if (state === LOCK_NOT_AVAILABLE) throw new ProtocolError('UNAVAILABLE', 'the topic table is busy; try again');
      throw err;
    }
    return (await this.info(name))!;
  }

  async info(name: string): Promise<TopicInfo | undefined> {
    const [r] = await this.db.query<TopicRow>(`SELECT ${TOPIC_COLUMNS} FROM topics WHERE name = $1`, [name]);
    return r && toInfo(r);
  }

  private async requireInfo(name: string, q: SqlExecutor = this.db, lock = false): Promise<TopicRow> {
    const [r] = await q.query<TopicRow>(`SELECT ${TOPIC_COLUMNS} FROM topics WHERE name = $1${lock ? ' FOR UPDATE' : ''}`, [name]);
    if (!r) throw new ProtocolError('TOPIC_NOT_FOUND', `no topic ${name}`);
    return r;
  }

  /**
   * Stores a batch of messages in one transaction, in order. A message whose publisher
   * already published its id (in this batch or one still stored) gets the earlier
   * answer: the same offset (`duplicate`) or, with other content, `conflict`.
   */
  async publish(name: string, items: readonly PublishItem[]): Promise<PublishResult[]> {
    if (items.length === 0) return [];
    if (items.length > MAX_PUBLISH_BATCH) throw new ProtocolError('BAD_REQUEST', `at most ${MAX_PUBLISH_BATCH} messages per publish batch`);
    items.forEach(checkItem);
    return this.db.transaction(async (tx) => this.publishLocked(tx, await this.requireInfo(name, tx, true), items));
  }

  /** Locks a topic's row by id, in a transaction (consumer groups dead-lettering). */
  async lockTopicById(tx: SqlExecutor, topicId: number): Promise<TopicRow> {
    const [r] = await tx.query<TopicRow>(`SELECT ${TOPIC_COLUMNS} FROM topics WHERE topic_id = $1 FOR UPDATE`, [topicId]);
    if (!r) throw new ProtocolError('TOPIC_NOT_FOUND', 'the topic is gone');
    return r;
  }

  /**
   * publish() inside a transaction that holds the topic row's lock (`t`, read under it).
   * `deadLetters[i]`, when given, is what item i records of its dead-lettering (JSON).
   */
  async publishLocked(tx: SqlExecutor, t: TopicRow, items: readonly PublishItem[], deadLetters?: readonly (string | null)[]): Promise<PublishResult[]> {
    const topicId = Number(t.topic_id);
    const epoch = Number(t.epoch);
    const publishedAtMs = Math.max(this.now(), Number(t.last_published_ms));
    // What this batch's ids already have in the topic, by publisher.
    const ids = pack(items.map((it) => it.publishId));
    const earlier = await tx.query<{ publisher_user: string; publish_id: Uint8Array; off: string | number; content_hash: Uint8Array; slot_ms: string | number }>(
      `SELECT m.publisher_user, m.publish_id, m.off, m.content_hash, m.slot_ms
         FROM topic_messages m
        WHERE m.topic_id = $1 AND m.slot_ms >= $5
          AND m.publish_id = ANY (ARRAY(SELECT substring($2::bytea FROM o FOR l) FROM unnest($3::int4[], $4::int4[]) AS x(o, l)))`,
      [topicId, ids.bytes, ids.offsets, ids.lengths, publishedAtMs - MAX_IDEMPOTENCY_WINDOW_MS],
    );
    const known = new Map<string, { offset: number; hash: Uint8Array; atMs: number }>();
    for (const r of earlier) known.set(`${r.publisher_user}\n${hex(r.publish_id)}`, { offset: Number(r.off), hash: r.content_hash, atMs: Number(r.slot_ms) });
    const results: PublishResult[] = [];
    const fresh: PublishItem[] = [];
    const freshDeadLetters: (string | null)[] = [];
    let next = Number(t.next_offset);
    items.forEach((it, i) => {
      const k = `${it.publisherUserId}\n${hex(it.publishId)}`;
      const seen = known.get(k);
      if (seen) {
        results.push(
          equalBytes(seen.hash, it.contentHash)
            ? { kind: 'stored', duplicate: true, epoch, offset: seen.offset, publishedAtMs: seen.atMs }
            : { kind: 'conflict', epoch, offset: seen.offset },
        );
        return;
      }
      known.set(k, { offset: next, hash: it.contentHash, atMs: publishedAtMs });
      results.push({ kind: 'stored', duplicate: false, epoch, offset: next, publishedAtMs });
      fresh.push(it);
      freshDeadLetters.push(deadLetters?.[i] ?? null);
      next++;
    });
    if (fresh.length === 0) return results;
    await tx.query('SELECT hermetic_ensure_topic_slice($1::int8, $2::int8, $3::int8)', [topicId, publishedAtMs, Number(t.slice_ms)]);
    const payloads = pack(fresh.map((it) => it.payload));
    const freshIds = pack(fresh.map((it) => it.publishId));
    const hashes = pack(fresh.map((it) => it.contentHash));
    const keys = pack(fresh.map((it) => it.key ?? new Uint8Array(0)));
    const first = next - fresh.length;
    await tx.query(
      `INSERT INTO topic_messages (topic_id, slot_ms, off, publisher_user, publisher_device, publish_id, content_hash, msg_key, size, payload, dead_letter)
       SELECT $1, $2, $3 + x.n - 1, x.u, x.d,
              substring($6::bytea FROM x.io FOR x.il),
              substring($9::bytea FROM (x.n::int - 1) * ${CONTENT_HASH_BYTES} + 1 FOR ${CONTENT_HASH_BYTES}),
              CASE WHEN x.kl = 0 THEN NULL ELSE substring($10::bytea FROM x.ko FOR x.kl) END,
              x.pl, substring($13::bytea FROM x.po FOR x.pl), x.dl
         FROM unnest($4::text[], $5::text[], $7::int4[], $8::int4[], $11::int4[], $12::int4[], $14::int4[], $15::int4[], $16::text[]) WITH ORDINALITY
           AS x(u, d, io, il, ko, kl, po, pl, dl, n)`,
      [
        topicId,
        publishedAtMs,
        first,
        fresh.map((it) => it.publisherUserId),
        fresh.map((it) => it.publisherDeviceId),
        freshIds.bytes,
        freshIds.offsets,
        freshIds.lengths,
        hashes.bytes,
        keys.bytes,
        keys.offsets,
        keys.lengths,
        payloads.bytes,
        payloads.offsets,
        payloads.lengths,
        freshDeadLetters,
      ],
    );
    const bytes = fresh.reduce((n, it) => n + it.payload.byteLength, 0);
    await tx.query(
      `UPDATE topic_slices SET first_offset = coalesce(first_offset, $3), last_offset = $4, bytes = bytes + $5
        WHERE topic_id = $1 AND from_ms = $2`,
      [topicId, publishedAtMs - (publishedAtMs % Number(t.slice_ms)), first, next - 1, bytes],
    );
    await tx.query('UPDATE topics SET next_offset = $2, last_published_ms = $3 WHERE topic_id = $1', [topicId, next, publishedAtMs]);
    return results;
  }

  /** The epoch and offset a subscription starting at `start` reads from first. */
  async resolve(name: string, start: StartPoint): Promise<{ epoch: number; offset: number }> {
    const row = await this.requireInfo(name);
    const t = toInfo(row);
    switch (start.kind) {
      case 'earliest':
        return { epoch: t.epoch, offset: t.earliestOffset };
      case 'latest':
        return { epoch: t.epoch, offset: t.nextOffset };
      case 'offset':
        this.checkPosition(t, start.epoch, start.offset);
        return { epoch: t.epoch, offset: start.offset };
      case 'time': {
        const [r] = await this.db.query<{ off: string | number }>(
          'SELECT off FROM topic_messages WHERE topic_id = $1 AND slot_ms >= $2 ORDER BY off LIMIT 1',
          [row.topic_id, start.atMs],
        );
        return { epoch: t.epoch, offset: r ? Math.max(Number(r.off), t.earliestOffset) : t.nextOffset };
      }
    }
  }

  /** Throws when (epoch, offset) is not a position a reader of `t` can read from. */
  private checkPosition(t: TopicInfo, epoch: number, offset: number): void {
    if (epoch !== t.epoch) {
      throw new ProtocolError('TOPIC_EPOCH_CHANGED', `topic ${t.name} is at epoch ${t.epoch}`, { epoch: t.epoch, earliest: t.earliestOffset });
    }
    if (offset < t.earliestOffset) {
      throw new ProtocolError('OFFSET_RETIRED', `offsets of topic ${t.name} below ${t.earliestOffset} were retired`, { epoch: t.epoch, earliest: t.earliestOffset });
    }
    if (offset > t.nextOffset) {
      throw new ProtocolError('OFFSET_OUT_OF_RANGE', `topic ${t.name} has no offset ${offset} yet (next is ${t.nextOffset})`, { epoch: t.epoch, next: t.nextOffset });
    }
  }

  /**
   * Reads messages from `from` on, in offset order: at most `maxMessages`, and past the
   * first only while they fit in `maxBytes`.
   */
  async read(name: string, epoch: number, from: number, limits: { maxMessages?: number; maxBytes?: number } = {}): Promise<TopicRead> {
    const maxMessages = Math.min(limits.maxMessages ?? MAX_TOPIC_READ_MESSAGES, MAX_TOPIC_READ_MESSAGES);
    const maxBytes = Math.min(limits.maxBytes ?? MAX_TOPIC_READ_BYTES, MAX_TOPIC_READ_BYTES);
    if (!Number.isSafeInteger(from) || from < 1) throw new ProtocolError('BAD_REQUEST', 'offset: a positive integer');
    const row = await this.requireInfo(name);
    const t = toInfo(row);
    this.checkPosition(t, epoch, from);
    // The start of the slice holding `from` (publish times never decrease with offsets),
    // passed as a value so that the planner leaves out every older slice: a topic kept
    // for months has thousands, each otherwise opened and locked by every read.
    const [slice] = await this.db.query<{ from_ms: string | number | null }>(
      'SELECT max(from_ms) AS from_ms FROM topic_slices WHERE topic_id = $1 AND first_offset <= $2',
      [row.topic_id, from],
    );
    const sinceMs = Number(slice?.from_ms ?? 0);
    const rows = await this.db.query<{
      off: string | number;
      slot_ms: string | number;
      publisher_user: string;
      publisher_device: string;
      publish_id: Uint8Array;
      msg_key: Uint8Array | null;
      payload: Uint8Array;
      dead_letter: string | null;
    }>(
      // The page's last offset is found from the sizes alone (the first message, then
      // each while the running total fits), so only the payloads it holds are read.
      `SELECT m.off, m.slot_ms, m.publisher_user, m.publisher_device, m.publish_id, m.msg_key, m.payload, m.dead_letter
         FROM topic_messages m
        WHERE m.topic_id = $1 AND m.slot_ms >= $6 AND m.off >= $2
          AND m.off <= (SELECT max(c.off)
                          FROM (SELECT off, sum(size) OVER (ORDER BY off ROWS UNBOUNDED PRECEDING) AS running
                                  FROM topic_messages
                                 WHERE topic_id = $1 AND slot_ms >= $6 AND off >= $2 AND off < $3
                                 ORDER BY off
                                 LIMIT $4) c
                         WHERE c.off = $2 OR c.running <= $5)
        ORDER BY m.off`,
      [row.topic_id, from, t.nextOffset, maxMessages, maxBytes, sinceMs],
    );
    // Offsets are gap-free, so a first row past `from` means the slice holding `from` was
    // dropped (or the topic reset) after the topic row was read.
    const firstOffset = rows.length > 0 ? Number(rows[0]!.off) : t.nextOffset;
    if (firstOffset !== from) {
      const now = toInfo(await this.requireInfo(name));
      this.checkPosition(now, epoch, from);
      // Still readable by the fresh row: a reset to the same position in the meantime is
      // the only way here; report it as a changed epoch rather than guess.
      throw new ProtocolError('TOPIC_EPOCH_CHANGED', `topic ${name} changed while it was read`, { epoch: now.epoch, earliest: now.earliestOffset });
    }
    const messages: TopicMessage[] = [];
    let bytes = 0;
    for (const r of rows) {
      if (messages.length > 0 && bytes + r.payload.byteLength > maxBytes) break;
      bytes += r.payload.byteLength;
      messages.push({
        offset: Number(r.off),
        publishedAtMs: Number(r.slot_ms),
        publisherUserId: r.publisher_user,
        publisherDeviceId: r.publisher_device,
        publishId: r.publish_id,
        key: r.msg_key ?? undefined,
        payload: r.payload,
        deadLetter: r.dead_letter === null ? undefined : parseDeadLetter(r.dead_letter),
      });
    }
    return { epoch: t.epoch, messages, next: from + messages.length, head: t.nextOffset };
  }

  /** Drops every slice, bumps the epoch and starts offsets again at 1. UNAVAILABLE (and
   * nothing changed) when a slice stays locked by a reader for TOPIC_SLICE_LOCK_TIMEOUT_MS. */
  async reset(name: string): Promise<TopicInfo> {
    try {
      await this.db.transaction(async (tx) => {
        const t = await this.requireInfo(name, tx, true);
        const slices = await tx.query<{ from_ms: string | number }>('SELECT from_ms FROM topic_slices WHERE topic_id = $1', [t.topic_id]);
        for (const s of slices) await tx.query('SELECT hermetic_drop_topic_slice($1::int8, $2::int8, $3::int4)', [t.topic_id, s.from_ms, TOPIC_SLICE_LOCK_TIMEOUT_MS]);
        await tx.query('UPDATE topics SET epoch = epoch + 1, next_offset = 1, earliest_offset = 1 WHERE topic_id = $1', [t.topic_id]);
      });
    } catch (err) {
      if (sqlState(err) === LOCK_NOT_AVAILABLE) throw new ProtocolError('UNAVAILABLE', `topic ${name} is being read; nothing was reset: reset again`);
      throw err;
    }
    return (await this.info(name))!;
  }

  /**
   * One retirement pass over every topic with a retention limit: drops the slices wholly
   * older than the retention age, then the oldest while the topic holds more than its
   * retention bytes (never the newest slice). Each drop is its own transaction.
   */
  async retire(): Promise<TopicRetirement> {
    const now = this.now();
    const candidates = await this.db.query<{ topic_id: string | number; from_ms: string | number }>(
      `SELECT s.topic_id, s.from_ms
         FROM topics t JOIN topic_slices s ON s.topic_id = t.topic_id
        WHERE (t.retention_ms IS NOT NULL AND s.to_ms <= $1 - t.retention_ms)
           OR (t.retention_bytes IS NOT NULL
               AND s.from_ms < (SELECT max(n.from_ms) FROM topic_slices n WHERE n.topic_id = t.topic_id)
               AND (SELECT sum(o.bytes) FROM topic_slices o WHERE o.topic_id = t.topic_id AND o.from_ms >= s.from_ms) - s.bytes
                   >= t.retention_bytes)
        ORDER BY s.topic_id, s.from_ms`,
      [now],
    );
    let dropped = 0;
    let deferred = 0;
    for (const c of candidates) {
      try {
        await this.db.transaction(async (tx) => {
          await tx.query('SELECT 1 FROM topics WHERE topic_id = $1 FOR UPDATE', [c.topic_id]);
          await tx.query('SELECT hermetic_drop_topic_slice($1::int8, $2::int8, $3::int4)', [c.topic_id, c.from_ms, TOPIC_SLICE_LOCK_TIMEOUT_MS]);
        });
        dropped++;
      } catch (err) {
        if (sqlState(err) !== LOCK_NOT_AVAILABLE) throw err;
        deferred++;
      }
    }
    return { dropped, deferred };
  }
}
