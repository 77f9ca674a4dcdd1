/**
 * Consumer group storage (migrations/0016): create a group, lease messages to a member
 * (expired leases and due redeliveries first, then new offsets as one range), and
 * acknowledge, negatively acknowledge, extend and release them. Every operation is one
 * transaction; the group row's lock orders the leases of one group, so members on several
 * relays share a group safely.
 *
 * A member is a string the relay makes unique per connection; leases name it. Offsets a
 * member acknowledges, negatively acknowledges or extends must be leased to it now
 * (NOT_LEASED otherwise, and nothing changes).
 */
import { createHash } from 'node:crypto';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_GROUP_LEASE, MAX_GROUP_SETTLE, MAX_MAX_DELIVERIES, MAX_VISIBILITY_MS, MIN_VISIBILITY_MS } from '../../protocol/limits.js';
import { type GroupInfoAnswer, groupName, parseDeadLetter } from '../../protocol/topics.js';
import { type Database, type SqlExecutor, UNIQUE_VIOLATION, sqlState } from '../storage/database.js';
import { type PublishItem, RELAY_PUBLISH_ID_PREFIX, type TopicMessage, type TopicStore } from './store.js';

export const DEFAULT_VISIBILITY_MS = 30_000;
export const DEFAULT_MAX_DELIVERIES = 5;

export interface GroupSettings {
  readonly visibilityMs?: number | undefined;
  readonly maxDeliveries?: number | undefined;
  /** Where messages go after maxDeliveries (must exist). */
  readonly deadLetterTopic: string;
  /** Messages with one key go to one member at a time, in order. */
  readonly orderedByKey?: boolean | undefined;
}

/** A group's state, as the HTTP routes answer it (protocol/topics.ts). */
export type GroupInfo = GroupInfoAnswer;

export interface LeasedMessage extends TopicMessage {
  /** This delivery's number (1 for the first). */
  readonly deliveries: number;
  readonly leaseUntilMs: number;
}

export interface Lease {
  readonly epoch: number;
  readonly messages: readonly LeasedMessage[];
  /** Messages moved to the dead-letter topic by this lease call. */
  readonly deadLettered: number;
  /** Offsets found retired (by retention) before the group could lease them. */
  readonly skipped: number;
  /** The dead-letter topic's new head when this call moved messages there. */
  readonly deadLetterHead?: { readonly topic: string; readonly epoch: number; readonly head: number } | undefined;
  /** When nothing was leased: when something of the group next becomes due (a lease
   * deadline, a delayed redelivery), if anything is pending; undefined when only new
   * messages can come (and, to spare a statement, whenever something was leased). */
  readonly nextDueMs: number | undefined;
}

interface GroupRow {
  ordered_by_key: boolean;
  topic_id: string | number;
  name: string;
  epoch: string | number;
  next_offset: string | number;
  visibility_ms: number;
  max_deliveries: number;
  dead_letter_topic_id: string | number;
  skipped: string | number;
  dead_lettered: string | number;
  t_epoch: string | number;
  t_next: string | number;
  t_earliest: string | number;
}

function bounded(v: number | undefined, min: number, max: number, what: string): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max)) throw new ProtocolError('BAD_REQUEST', `${what}: an integer in ${min}..${max}`);
}

function bitSet(b: Uint8Array, i: number): boolean {
  return (b[i >> 3]! & (0x80 >> (i & 7))) !== 0;
}

/** A message row as a lease hands it out. */
function leasedMessage(m: MessageRow, deliveries: number, leaseUntilMs: number): LeasedMessage {
  return {
    offset: Number(m.off),
    publishedAtMs: Number(m.slot_ms),
    publisherUserId: m.publisher_user,
    publisherDeviceId: m.publisher_device,
    publishId: m.publish_id,
    key: m.msg_key ?? undefined,
    payload: m.payload,
    ...(m.dead_letter === null || m.dead_letter === undefined ? {} : { deadLetter: parseDeadLetter(m.dead_letter) }),
    deliveries,
    leaseUntilMs,
  };
}

function setBit(b: Uint8Array, i: number): void {
  b[i >> 3]! |= 0x80 >> (i & 7);
}

function checkOffsets(offsets: readonly number[]): void {
  if (offsets.length === 0 || offsets.length > MAX_GROUP_SETTLE) throw new ProtocolError('BAD_REQUEST', `1..${MAX_GROUP_SETTLE} offsets`);
  for (const o of offsets) if (!Number.isSafeInteger(o) || o < 1) throw new ProtocolError('BAD_REQUEST', 'offsets: positive integers');
}

const GROUP_SELECT = `SELECT g.ordered_by_key, g.topic_id, g.name, g.epoch, g.next_offset, g.visibility_ms, g.max_deliveries, g.dead_letter_topic_id, g.skipped, g.dead_lettered,
                             t.epoch AS t_epoch, t.next_offset AS t_next, t.earliest_offset AS t_earliest
                        FROM consumer_groups g JOIN topics t ON t.topic_id = g.topic_id
                       WHERE t.name = $1 AND g.name = $2`;

/** What a lease reads with the group row: the earliest lease deadline, and the messages
 * waiting to come again (counted up to MAX_GROUP_REDELIVERIES). */
interface GroupState {
  firstDeadlineMs: number | undefined;
  waiting: number;
}

interface MessageRow {
  off: string | number;
  slot_ms: string | number;
  publisher_user: string;
  publisher_device: string;
  publish_id: Uint8Array;
  content_hash: Uint8Array;
  msg_key: Uint8Array | null;
  payload: Uint8Array;
  /** On a dead-letter topic: where the message came from (JSON). */
  dead_letter: string | null;
}

interface DueRow {
  off: string | number;
  deliveries: number;
  reason: string;
  member: string | null;
  last_member: string | null;
  msg_key: Uint8Array | null;
}

/** What one lease call does: offsets leased again, dead-lettered, newly leased, parked
 * (ordered groups), and where the group's next offset goes. */
interface Plan {
  readonly again: { off: number; deliveries: number }[];
  readonly dead: { off: number; deliveries: number; lastFailure: string }[];
  readonly fresh: number[];
  readonly parked: number[];
  readonly end: number;
}

/** An ordered group looks this far ahead for messages whose key is free (at most this
 * factor times what it leases, and at most MAX_ORDERED_SCAN), and at most that many
 * due redeliveries; while that many are due, it leases no new offsets (so it parks at
 * most about 2 × MAX_ORDERED_SCAN messages). */
const ORDERED_SCAN_FACTOR = 4;
const MAX_ORDERED_SCAN = 1024;

/** Messages of a group waiting to be leased again past which it leases nothing new. */
export const MAX_GROUP_REDELIVERIES = 10_000;

/** Consumer groups one topic may have. */
export const MAX_GROUPS_PER_TOPIC = 64;

export interface SettleOptions {
  /** The epoch the offsets were leased in: refused (NOT_LEASED) if the topic's is another. */
  readonly epoch?: number | undefined;
}

interface LeaseRow {
  first_off: string | number;
  last_off: string | number;
  done: Uint8Array;
  done_count: number;
  deadline_ms: string | number;
}

/**
 * The publish id of a message's dead-letter copy: one per source message and group, so
 * dead-lettering is idempotent. A digest keeps it within MAX_PUBLISH_ID_BYTES whatever
 * the lengths (cutting the text would let two groups whose long names share a prefix
 * take one id, and the second group's copy be dropped as a duplicate).
 */
function deadLetterId(topicId: number, epoch: number, offset: number, group: string): Uint8Array {
  const digest = createHash('sha256').update(`${topicId}/${epoch}/${offset}/${group}`).digest('base64url');
  // Under the relay's reserved first byte: no client can publish this id first (and so
  // make the copy a conflict, dropped).
  const text = new TextEncoder().encode(`dl/${digest}`);
  const id = new Uint8Array(1 + text.length);
  id[0] = RELAY_PUBLISH_ID_PREFIX;
  id.set(text, 1);
  return id;
}

export class GroupStore {
  private readonly now: () => number;

  constructor(
    private readonly db: Database,
    private readonly topics: TopicStore,
    opts: { now?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Creates a group reading `topic` from its earliest stored offset. */
  async create(topic: string, name: string, createdBy: string, settings: GroupSettings): Promise<GroupInfo> {
    groupName(name, 'group name');
    bounded(settings.visibilityMs, MIN_VISIBILITY_MS, MAX_VISIBILITY_MS, 'visibilityMs');
    bounded(settings.maxDeliveries, 1, MAX_MAX_DELIVERIES, 'maxDeliveries');
    const [t] = await this.db.query<{ topic_id: string | number; epoch: string | number; earliest_offset: string | number }>(
      'SELECT topic_id, epoch, earliest_offset FROM topics WHERE name = $1',
      [topic],
    );
    if (!t) throw new ProtocolError('TOPIC_NOT_FOUND', `no topic ${topic}`);
    const [dl] = await this.db.query<{ topic_id: string | number }>('SELECT topic_id FROM topics WHERE name = $1', [settings.deadLetterTopic]);
    if (!dl) throw new ProtocolError('TOPIC_NOT_FOUND', `no dead-letter topic ${settings.deadLetterTopic}`);
    if (String(dl.topic_id) === String(t.topic_id)) throw new ProtocolError('BAD_REQUEST', 'a topic cannot be its own dead-letter topic');
    const [count] = await this.db.query<{ n: string | number }>('SELECT count(*) AS n FROM consumer_groups WHERE topic_id = $1', [t.topic_id]);
    if (Number(count?.n ?? 0) >= MAX_GROUPS_PER_TOPIC) throw new ProtocolError('TOO_MANY_GROUPS', `at most ${MAX_GROUPS_PER_TOPIC} consumer groups per topic`);
    try {
      await this.db.query(
        `INSERT INTO consumer_groups (topic_id, name, epoch, next_offset, visibility_ms, max_deliveries, dead_letter_topic_id, created_by, created_at_ms, ordered_by_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [
          t.topic_id,
          name,
          t.epoch,
          t.earliest_offset,
          settings.visibilityMs ?? DEFAULT_VISIBILITY_MS,
          settings.maxDeliveries ?? DEFAULT_MAX_DELIVERIES,
          dl.topic_id,
          createdBy,
          this.now(),
          settings.orderedByKey === true,
        ],
      );
    } catch (err) {
      if (sqlState(err) === UNIQUE_VIOLATION) throw new ProtocolError('GROUP_EXISTS', `group ${name} of topic ${topic} exists`);
      throw err;
    }
    return (await this.info(topic, name))!;
  }

  /** Deletes a group, its leases and its redeliveries; its members find it gone at their
   * next lease (GROUP_NOT_FOUND). Resolves to the topic's epoch and head (to wake them),
   * or undefined when there was no such group. */
  async delete(topic: string, name: string): Promise<{ epoch: number; head: number } | undefined> {
    const rows = await this.db.query<{ epoch: string | number; next_offset: string | number }>(
      `DELETE FROM consumer_groups g USING topics t
        WHERE t.topic_id = g.topic_id AND t.name = $1 AND g.name = $2
        RETURNING t.epoch, t.next_offset`,
      [topic, name],
    );
    const r = rows[0];
    return r && { epoch: Number(r.epoch), head: Number(r.next_offset) };
  }

  async info(topic: string, name: string): Promise<GroupInfo | undefined> {
    const [g] = await this.db.query<GroupRow & { dl_name: string; leased: string | number | null; redo: string | number; first_open: string | number | null }>(
      `SELECT x.*, d.name AS dl_name,
              (SELECT sum(l.last_off - l.first_off + 1 - l.done_count) FROM group_leases l WHERE l.topic_id = x.topic_id AND l.group_name = x.name) AS leased,
              (SELECT count(*) FROM group_redeliveries r WHERE r.topic_id = x.topic_id AND r.group_name = x.name) AS redo,
              least((SELECT min(l.first_off) FROM group_leases l WHERE l.topic_id = x.topic_id AND l.group_name = x.name),
                    (SELECT min(r.off) FROM group_redeliveries r WHERE r.topic_id = x.topic_id AND r.group_name = x.name)) AS first_open
         FROM (${GROUP_SELECT}) x JOIN topics d ON d.topic_id = x.dead_letter_topic_id`,
      [topic, name],
    );
    if (!g) return undefined;
    const next = Number(g.next_offset);
    // A lease's first offset may be acknowledged already; the bound is conservative.
    const committed = g.first_open === null ? next : Math.min(next, Number(g.first_open));
    return {
      topic,
      name,
      epoch: Number(g.epoch),
      committedOffset: committed,
      nextOffset: next,
      visibilityMs: g.visibility_ms,
      maxDeliveries: g.max_deliveries,
      deadLetterTopic: g.dl_name,
      orderedByKey: g.ordered_by_key,
      inFlight: Number(g.leased ?? 0),
      redeliveries: Number(g.redo),
      skipped: Number(g.skipped),
      deadLettered: Number(g.dead_lettered),
    };
  }

  private async lockGroup(tx: SqlExecutor, topic: string, name: string): Promise<GroupRow & GroupState> {
    // NO KEY UPDATE: settles (KEY SHARE, below) go on beside a lease. The same statement
    // reads what a lease needs to know first (so the usual lease skips the statements for
    // expired leases and redeliveries when there are none).
    const [g] = await tx.query<GroupRow & { first_deadline: string | number | null; waiting: string | number }>(
      `SELECT x.*,
              (SELECT min(l.deadline_ms) FROM group_leases l WHERE l.topic_id = x.topic_id AND l.group_name = x.name) AS first_deadline,
              (SELECT count(*) FROM (SELECT 1 FROM group_redeliveries r WHERE r.topic_id = x.topic_id AND r.group_name = x.name LIMIT $3) y) AS waiting
         FROM (${GROUP_SELECT} FOR NO KEY UPDATE OF g) x`,
      [topic, name, MAX_GROUP_REDELIVERIES],
    );
    if (!g) throw new ProtocolError('GROUP_NOT_FOUND', `no group ${name} of topic ${topic}`);
    const state: GroupState = { firstDeadlineMs: g.first_deadline === null ? undefined : Number(g.first_deadline), waiting: Number(g.waiting) };
    if (String(g.epoch) !== String(g.t_epoch)) {
      // The topic was reset: the group starts again in the new epoch.
      await tx.query('DELETE FROM group_leases WHERE topic_id = $1 AND group_name = $2', [g.topic_id, name]);
      await tx.query('DELETE FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2', [g.topic_id, name]);
      await tx.query('UPDATE consumer_groups SET epoch = $3, next_offset = $4 WHERE topic_id = $1 AND name = $2', [g.topic_id, name, g.t_epoch, g.t_earliest]);
      g.epoch = g.t_epoch;
      g.next_offset = g.t_earliest;
      state.firstDeadlineMs = undefined;
      state.waiting = 0;
    }
    return Object.assign(g, state);
  }

  /**
   * Leases up to `max` messages to `member` for the group's visibility timeout: first
   * the offsets whose lease expired or that were negatively acknowledged and are due,
   * then new offsets. An offset that has had the maximum number of deliveries goes to
   * the dead-letter topic instead. With `avoidOwnFailures` (other members are there to
   * take them), the offsets whose last delivery to this member failed are left to them.
   * In a group ordered by key, a message is leased only while no earlier message with
   * its key is leased or due again; new ones that must wait are parked as due (in order).
   */
  async lease(topic: string, name: string, member: string, max: number, opts: { avoidOwnFailures?: boolean } = {}): Promise<Lease> {
    if (!Number.isSafeInteger(max) || max < 1 || max > MAX_GROUP_LEASE) throw new ProtocolError('BAD_REQUEST', `lease 1..${MAX_GROUP_LEASE} messages`);
    const now = this.now();
    const fresh = await this.leaseFresh(topic, name, [{ member, max }], now);
    if (fresh !== undefined) return fresh.get(member) as Lease;
    return this.db.transaction(async (tx) => {
      const g = await this.lockGroup(tx, topic, name);
      const topicId = Number(g.topic_id);
      const until = now + g.visibility_ms;
      if (g.firstDeadlineMs !== undefined && g.firstDeadlineMs <= now) g.waiting += await this.expireLeases(tx, topicId, name, now);
      const avoid = opts.avoidOwnFailures === true ? member : undefined;
      // Where new offsets start: past what retention took.
      let start = Number(g.next_offset);
      let skipped = 0;
      if (start < Number(g.t_earliest)) {
        skipped += Number(g.t_earliest) - start;
        start = Number(g.t_earliest);
      }
      const plan = g.ordered_by_key
        ? await this.planOrdered(tx, g, now, max, start, avoid)
        : await this.planUnordered(tx, g, now, max, start, avoid);
      const { again, dead, fresh, parked, end } = plan;
      const wanted = [...again.map((a) => a.off), ...dead.map((d) => d.off), ...fresh];
      const rows = await tx.query<MessageRow>(
        `SELECT off, slot_ms, publisher_user, publisher_device, publish_id, content_hash, msg_key, payload, dead_letter FROM topic_messages
          WHERE topic_id = $1 AND off = ANY ($2::int8[]) ORDER BY off`,
        [topicId, wanted],
      );
      const byOffset = new Map(rows.map((r) => [Number(r.off), r]));
      // Messages retention took meanwhile: gone for the group.
      const lostDue = [...again, ...dead].map((x) => x.off).filter((o) => !byOffset.has(o));
      const lostFresh = fresh.filter((o) => !byOffset.has(o));
      skipped += lostDue.length + lostFresh.length;
      if (lostDue.length > 0) await tx.query('DELETE FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2 AND off = ANY ($3::int8[])', [topicId, name, lostDue]);
      const deadRows = dead.filter((d) => byOffset.has(d.off));
      const deadLetterHead = deadRows.length > 0 ? await this.deadLetter(tx, g, topic, deadRows, byOffset) : undefined;
      const againFound = again.filter((a) => byOffset.has(a.off));
      if (againFound.length > 0) {
        await tx.query(
          `UPDATE group_redeliveries r SET member = $3, deadline_ms = $4, deliveries = x.d, last_member = $3
             FROM unnest($5::int8[], $6::int4[]) AS x(o, d)
            WHERE r.topic_id = $1 AND r.group_name = $2 AND r.off = x.o`,
          [topicId, name, member, until, againFound.map((a) => a.off), againFound.map((a) => a.deliveries)],
        );
      }
      if (parked.length > 0) {
        await tx.query(
          `INSERT INTO group_redeliveries (topic_id, group_name, off, deliveries, available_at_ms, reason)
           SELECT $1, $2, o, 0, $3, 'blocked' FROM unnest($4::int8[]) AS o`,
          [topicId, name, now, parked],
        );
      }
      const freshFound = fresh.filter((o) => byOffset.has(o));
      // The group row's new state, and (for new offsets) the window's lease row: one
      // statement when both are written, as they usually are.
      const moved = end !== Number(g.next_offset) || skipped > 0 || deadRows.length > 0;
      const updateGroup = 'UPDATE consumer_groups SET next_offset = $3, skipped = skipped + $4, dead_lettered = dead_lettered + $5 WHERE topic_id = $1 AND name = $2';
      const groupArgs = [topicId, name, end, skipped, deadRows.length];
      if (freshFound.length > 0) {
        // One row for the window: what is not leased in it (parked, or gone) is done here.
        const width = end - start;
        const done = new Uint8Array(Math.ceil(width / 8));
        const leasedSet = new Set(freshFound);
        let doneCount = 0;
        for (let o = start; o < end; o++) {
          if (leasedSet.has(o)) continue;
          setBit(done, o - start);
          doneCount++;
        }
        const insertLease = 'INSERT INTO group_leases (topic_id, group_name, first_off, last_off, member, deadline_ms, done, done_count)';
        const leaseArgs = [start, end - 1, member, until, done, doneCount];
        if (moved) await tx.query(`WITH moved AS (${updateGroup} RETURNING 1) ${insertLease} VALUES ($1, $2, $6, $7, $8, $9, $10, $11)`, [...groupArgs, ...leaseArgs]);
        else await tx.query(`${insertLease} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [topicId, name, ...leaseArgs]);
      } else if (moved) {
        await tx.query(updateGroup, groupArgs);
      }
      // When something next falls due: wanted only when nothing was leased now (the relay
      // then waits for it), so a lease that found work skips the statement.
      const [due] =
        againFound.length + freshFound.length > 0
          ? [undefined]
          : await tx.query<{ at: string | number | null }>(
              `SELECT least((SELECT min(deadline_ms) FROM group_leases WHERE topic_id = $1 AND group_name = $2),
                            (SELECT min(CASE WHEN member IS NULL THEN available_at_ms ELSE greatest(available_at_ms, deadline_ms) END)
                               FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2)) AS at`,
              [topicId, name],
            );
      const deliveriesOf = new Map<number, number>([...freshFound.map((o) => [o, 1] as const), ...againFound.map((a) => [a.off, a.deliveries] as const)]);
      const messages: LeasedMessage[] = [];
      for (const [off, deliveries] of deliveriesOf) messages.push(leasedMessage(byOffset.get(off)!, deliveries, until));
      messages.sort((a, b) => a.offset - b.offset);
      const nextDueMs = due?.at === null || due === undefined ? undefined : Number(due.at);
      return { epoch: Number(g.epoch), messages, deadLettered: deadRows.length, deadLetterHead, skipped, nextDueMs };
    });
  }

  /**
   * The usual lease, in one call for several members (migrations/0017): new offsets for
   * each in turn, in an unordered group with nothing due again. Undefined when the full
   * path must decide (then lease each member with `lease`); otherwise each member's lease
   * (empty for those the offsets did not reach).
   */
  async leaseFresh(topic: string, name: string, wants: ReadonlyArray<{ member: string; max: number }>, now = this.now()): Promise<Map<string, Lease> | undefined> {
    for (const w of wants) if (!Number.isSafeInteger(w.max) || w.max < 1 || w.max > MAX_GROUP_LEASE) throw new ProtocolError('BAD_REQUEST', `lease 1..${MAX_GROUP_LEASE} messages`);
    const rows = await this.db.query<MessageRow & { member: string; epoch: string | number; deadline_ms: string | number }>(
      'SELECT * FROM hermetic_group_lease_fresh($1, $2, $3::text[], $4::int4[], $5)',
      [topic, name, wants.map((w) => w.member), wants.map((w) => w.max), now],
    );
    if (rows.length === 0) return undefined;
    const epoch = Number(rows[0]!.epoch);
    const leases = new Map<string, Lease>(wants.map((w) => [w.member, { epoch, messages: [], deadLettered: 0, deadLetterHead: undefined, skipped: 0, nextDueMs: undefined }]));
    for (const r of rows) (leases.get(r.member)!.messages as LeasedMessage[]).push(leasedMessage(r, 1, Number(r.deadline_ms)));
    return leases;
  }

  /** Expired leases: their unfinished offsets become redeliveries, due now. */
  private async expireLeases(tx: SqlExecutor, topicId: number, name: string, now: number): Promise<number> {
    const expired = await tx.query<LeaseRow & { member: string }>(
      'DELETE FROM group_leases WHERE topic_id = $1 AND group_name = $2 AND deadline_ms <= $3 RETURNING first_off, last_off, done, done_count, deadline_ms, member',
      [topicId, name, now],
    );
    const offsets: number[] = [];
    const members: string[] = [];
    for (const l of expired) {
      const first = Number(l.first_off);
      for (let o = first; o <= Number(l.last_off); o++) {
        if (bitSet(l.done, o - first)) continue;
        offsets.push(o);
        members.push(l.member);
      }
    }
    if (offsets.length === 0) return 0;
    await tx.query(
      `INSERT INTO group_redeliveries (topic_id, group_name, off, deliveries, available_at_ms, reason, last_member)
       SELECT $1, $2, o, 1, $3, 'visibility_timeout', m FROM unnest($4::int8[], $5::text[]) AS x(o, m)`,
      [topicId, name, now, offsets, members],
    );
    return offsets.length;
  }

  /** Redeliveries due now (and those whose second lease expired), oldest first. */
  private dueRedeliveries(tx: SqlExecutor, topicId: number, name: string, now: number, limit: number, avoid: string | undefined): Promise<DueRow[]> {
    return tx.query<DueRow>(
      `SELECT r.off, r.deliveries, r.reason, r.member, r.last_member, m.msg_key
         FROM group_redeliveries r LEFT JOIN topic_messages m ON m.topic_id = r.topic_id AND m.off = r.off
        WHERE r.topic_id = $1 AND r.group_name = $2 AND r.available_at_ms <= $3 AND (r.member IS NULL OR r.deadline_ms <= $3)
          AND ($5::text IS NULL OR coalesce(r.member, r.last_member, '') <> $5)
        ORDER BY r.off LIMIT $4 FOR UPDATE OF r`,
      [topicId, name, now, limit, avoid ?? null],
    );
  }

  /** Sorts due redeliveries into those leased again and those past the maximum. */
  private sortDue(g: GroupRow, r: DueRow, again: Plan['again'], dead: Plan['dead']): void {
    // Its last delivery failed so: a second lease that expired, or the reason kept.
    const lastFailure = r.member !== null ? 'visibility_timeout' : r.reason;
    if (r.deliveries >= g.max_deliveries) dead.push({ off: Number(r.off), deliveries: r.deliveries, lastFailure });
    else again.push({ off: Number(r.off), deliveries: r.deliveries + 1 });
  }

  private async planUnordered(tx: SqlExecutor, g: GroupRow & GroupState, now: number, max: number, start: number, avoid: string | undefined): Promise<Plan> {
    const again: Plan['again'] = [];
    const dead: Plan['dead'] = [];
    if (g.waiting > 0) for (const r of await this.dueRedeliveries(tx, Number(g.topic_id), g.name, now, max, avoid)) this.sortDue(g, r, again, dead);
    // Past MAX_GROUP_REDELIVERIES messages waiting to come again, nothing new is leased:
    // what fails keeps the group's rows (and each lease call) bounded.
    const room = g.waiting >= MAX_GROUP_REDELIVERIES ? 0 : max - again.length;
    const n = Math.max(0, Math.min(room, Number(g.t_next) - start));
    const fresh = Array.from({ length: n }, (_, i) => start + i);
    return { again, dead, fresh, parked: [], end: start + n };
  }

  /**
   * Per-key order: keys with a message leased now are busy; due redeliveries are taken
   * oldest first, each blocking its key for what follows; new offsets are scanned in a
   * window, leased when their key is free and parked (due, in order) when it is not.
   */
  private async planOrdered(tx: SqlExecutor, g: GroupRow, now: number, max: number, start: number, avoid: string | undefined): Promise<Plan> {
    const topicId = Number(g.topic_id);
    const keyHex = (k: Uint8Array | null): string | undefined => (k === null ? undefined : Buffer.from(k).toString('hex'));
    // Keys held now: undone offsets of range leases, redeliveries leased again, and
    // redeliveries not due yet (a negative acknowledgement's delay): each is its key's
    // earliest message not done, so nothing later of that key may go before it.
    const leases = await tx.query<LeaseRow>('SELECT first_off, last_off, done, done_count, deadline_ms FROM group_leases WHERE topic_id = $1 AND group_name = $2', [topicId, g.name]);
    const inFlight: number[] = [];
    for (const l of leases) {
      const first = Number(l.first_off);
      for (let o = first; o <= Number(l.last_off); o++) if (!bitSet(l.done, o - first)) inFlight.push(o);
    }
    const busyRows = await tx.query<{ msg_key: Uint8Array | null }>(
      `SELECT m.msg_key FROM topic_messages m
        WHERE m.topic_id = $1 AND m.msg_key IS NOT NULL
          AND (m.off = ANY ($2::int8[])
               OR m.off IN (SELECT r.off FROM group_redeliveries r WHERE r.topic_id = $1 AND r.group_name = $3
                                  AND (r.available_at_ms > $4 OR (r.member IS NOT NULL AND r.deadline_ms > $4))))`,
      [topicId, inFlight, g.name, now],
    );
    const blocked = new Set(busyRows.map((r) => keyHex(r.msg_key)!));
    const again: Plan['again'] = [];
    const dead: Plan['dead'] = [];
    // Every due redelivery, in order (a skipped one still blocks its key).
    const due = await this.dueRedeliveries(tx, topicId, g.name, now, MAX_ORDERED_SCAN, undefined);
    for (const r of due) {
      const k = keyHex(r.msg_key);
      const mine = avoid !== undefined && (r.member ?? r.last_member) === avoid;
      if (again.length < max && !mine && (k === undefined || !blocked.has(k))) this.sortDue(g, r, again, dead);
      if (k !== undefined) blocked.add(k);
    }
    // New offsets in a window: leased while there is room and the key is free. Not while
    // due redeliveries fill the scan: the keys of those past it are unknown (a new message
    // could go before an earlier one of its key), and parking more would grow them
    // without bound behind a hot key.
    const fresh: number[] = [];
    const parked: number[] = [];
    let end = start;
    if (again.length < max && due.length < MAX_ORDERED_SCAN) {
      const windowEnd = Math.min(Number(g.t_next), start + Math.min(MAX_ORDERED_SCAN, max * ORDERED_SCAN_FACTOR));
      const window = await tx.query<{ off: string | number; msg_key: Uint8Array | null }>(
        'SELECT off, msg_key FROM topic_messages WHERE topic_id = $1 AND off >= $2 AND off < $3 ORDER BY off',
        [topicId, start, windowEnd],
      );
      for (const w of window) {
        if (again.length + fresh.length >= max) break;
        const off = Number(w.off);
        const k = keyHex(w.msg_key);
        if (k !== undefined && blocked.has(k)) parked.push(off);
        else fresh.push(off);
        if (k !== undefined) blocked.add(k);
        end = off + 1;
      }
      if (window.length === 0 || (fresh.length === 0 && parked.length === 0)) end = start;
    }
    return { again, dead, fresh, parked, end };
  }

  /** Publishes dead messages to the group's dead-letter topic; its new head. */
  private async deadLetter(tx: SqlExecutor, g: GroupRow, topic: string, deadRows: Plan['dead'], byOffset: Map<number, MessageRow>): Promise<NonNullable<Lease['deadLetterHead']>> {
    const topicId = Number(g.topic_id);
    const dl = await this.topics.lockTopicById(tx, Number(g.dead_letter_topic_id));
    const items: PublishItem[] = [];
    const notes: string[] = [];
    for (const d of deadRows) {
      const m = byOffset.get(d.off)!;
      items.push({
        publisherUserId: m.publisher_user,
        publisherDeviceId: m.publisher_device,
        publishId: deadLetterId(topicId, Number(g.epoch), d.off, g.name),
        contentHash: m.content_hash,
        key: m.msg_key ?? undefined,
        payload: m.payload,
      });
      notes.push(JSON.stringify({ topic, group: g.name, epoch: Number(g.epoch), offset: d.off, deliveries: d.deliveries, reason: 'max_deliveries', lastFailure: d.lastFailure }));
    }
    const published = await this.topics.publishLocked(tx, dl, items, notes);
    await tx.query('DELETE FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2 AND off = ANY ($3::int8[])', [topicId, g.name, deadRows.map((d) => d.off)]);
    return { topic: dl.name, epoch: Number(dl.epoch), head: Math.max(...published.map((p) => p.offset)) + 1 };
  }

  /**
   * Finds where each offset is leased to `member`: a range lease (and its bit) or a
   * redelivery. Throws NOT_LEASED, changing nothing, when any is not.
   */
  private async leased(tx: SqlExecutor, topicId: number, name: string, member: string, offsets: readonly number[]) {
    const leases = await tx.query<LeaseRow>(
      `SELECT first_off, last_off, done, done_count, deadline_ms FROM group_leases
        WHERE topic_id = $1 AND group_name = $2 AND member = $3 AND first_off <= $5 AND last_off >= $4
        ORDER BY first_off FOR UPDATE`,
      [topicId, name, member, Math.min(...offsets), Math.max(...offsets)],
    );
    const inLease = new Map<LeaseRow, number[]>();
    const rest: number[] = [];
    for (const o of new Set(offsets)) {
      const l = leases.find((x) => Number(x.first_off) <= o && o <= Number(x.last_off) && !bitSet(x.done, o - Number(x.first_off)));
      if (!l) {
        rest.push(o);
        continue;
      }
      const list = inLease.get(l) ?? [];
      list.push(o);
      inLease.set(l, list);
    }
    // Only what no range lease holds is looked for among the redeliveries (usually nothing).
    const redo =
      rest.length === 0
        ? []
        : await tx.query<{ off: string | number }>(
            'SELECT off FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2 AND member = $3 AND off = ANY ($4::int8[]) FOR UPDATE',
            [topicId, name, member, rest],
          );
    const redoSet = new Set(redo.map((r) => Number(r.off)));
    const inRedo = rest.filter((o) => redoSet.has(o));
    const missing = rest.filter((o) => !redoSet.has(o));
    if (missing.length > 0) {
      throw new ProtocolError('NOT_LEASED', `offsets not leased to this member: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`, { offsets: missing.slice(0, 64) });
    }
    return { inLease, inRedo };
  }

  /** Marks offsets of range leases done; a lease all done is removed. */
  private async finishInLeases(tx: SqlExecutor, topicId: number, name: string, inLease: Map<LeaseRow, number[]>): Promise<void> {
    for (const [l, offs] of inLease) {
      const first = Number(l.first_off);
      const done = new Uint8Array(l.done);
      for (const o of offs) setBit(done, o - first);
      const count = l.done_count + offs.length;
      if (count >= Number(l.last_off) - first + 1) {
        await tx.query('DELETE FROM group_leases WHERE topic_id = $1 AND group_name = $2 AND first_off = $3', [topicId, name, first]);
      } else {
        await tx.query('UPDATE group_leases SET done = $4, done_count = $5 WHERE topic_id = $1 AND group_name = $2 AND first_off = $3', [topicId, name, first, done, count]);
      }
    }
  }

  private async settle<T>(
    topic: string,
    name: string,
    member: string,
    offsets: readonly number[],
    opts: SettleOptions,
    fn: (tx: SqlExecutor, g: GroupRow, found: { inLease: Map<LeaseRow, number[]>; inRedo: number[] }) => Promise<T>,
  ): Promise<T> {
    checkOffsets(offsets);
    bounded(opts.epoch, 1, Number.MAX_SAFE_INTEGER, 'epoch');
    return this.db.transaction(async (tx) => {
      // Only the lease rows are changed: the group row is read under KEY SHARE, which a
      // lease's lock does not block, so settles do not wait in line behind leases.
      const [g] = await tx.query<GroupRow>(`${GROUP_SELECT} FOR KEY SHARE OF g`, [topic, name]);
      if (!g) throw new ProtocolError('GROUP_NOT_FOUND', `no group ${name} of topic ${topic}`);
      // The topic was reset and the group not yet restarted: its leases are the old epoch's.
      if (String(g.epoch) !== String(g.t_epoch)) {
        throw new ProtocolError('NOT_LEASED', `the topic is at epoch ${String(g.t_epoch)}: these leases were of an earlier one`, { epoch: Number(g.t_epoch) });
      }
      // Offsets of an epoch the topic has left are not the same offsets of the new one.
      if (opts.epoch !== undefined && opts.epoch !== Number(g.epoch)) {
        throw new ProtocolError('NOT_LEASED', `offsets of epoch ${opts.epoch}: the topic is at epoch ${String(g.epoch)}`, { epoch: Number(g.epoch) });
      }
      const found = await this.leased(tx, Number(g.topic_id), name, member, offsets);
      return fn(tx, g, found);
    });
  }

  /** Acknowledges offsets leased to `member`: done for the group. */
  async ack(topic: string, name: string, member: string, offsets: readonly number[], opts: SettleOptions = {}): Promise<void> {
    const [outcome] = await this.ackMany(topic, name, [{ member, offsets, epoch: opts.epoch }]);
    if (outcome !== undefined) throw outcome;
  }

  /**
   * Acknowledgements of several members at once (what a relay gathers while one is under
   * way): in one call when every offset is in its member's range leases (migrations/0017),
   * otherwise each by the full path. Resolves to each one's outcome: undefined when
   * applied, else the error that refused it (nothing of it applied).
   */
  async ackMany(topic: string, name: string, items: ReadonlyArray<{ member: string; offsets: readonly number[]; epoch?: number | undefined }>): Promise<Array<unknown>> {
    const outcomes: unknown[] = items.map((it) => {
      try {
        checkOffsets(it.offsets);
        bounded(it.epoch, 1, Number.MAX_SAFE_INTEGER, 'epoch');
        return undefined;
      } catch (err) {
        return err;
      }
    });
    const valid = items.filter((_, i) => outcomes[i] === undefined);
    const epochs = new Set(valid.map((it) => it.epoch ?? null));
    // An offset a member acknowledges in two requests: the full path applies the first and
    // refuses the second (NOT_LEASED), where the one call would take both.
    const pairs = valid.flatMap((it) => [...new Set(it.offsets)].map((o) => `${o} ${it.member}`));
    if (valid.length > 0 && epochs.size === 1 && new Set(pairs).size === pairs.length) {
      const members = valid.flatMap((it) => it.offsets.map(() => it.member));
      const offsets = valid.flatMap((it) => [...it.offsets]);
      const [fast] = await this.db.query<{ ok: boolean }>('SELECT hermetic_group_ack_fast($1, $2, $3::text[], $4::int8[], $5) AS ok', [topic, name, members, offsets, [...epochs][0] ?? null]);
      if (fast?.ok === true) return outcomes;
    }
    for (const [i, it] of items.entries()) {
      if (outcomes[i] !== undefined) continue;
      try {
        await this.settle(topic, name, it.member, it.offsets, { epoch: it.epoch }, async (tx, g, { inLease, inRedo }) => {
          await this.finishInLeases(tx, Number(g.topic_id), name, inLease);
          if (inRedo.length > 0) await tx.query('DELETE FROM group_redeliveries WHERE topic_id = $1 AND group_name = $2 AND off = ANY ($3::int8[])', [g.topic_id, name, inRedo]);
        });
      } catch (err) {
        outcomes[i] = err;
      }
    }
    return outcomes;
  }

  /** Negatively acknowledges offsets leased to `member`: leased again (to any member)
   * after `delayMs`, this delivery counted. */
  async nack(topic: string, name: string, member: string, offsets: readonly number[], delayMs = 0, opts: SettleOptions = {}): Promise<void> {
    bounded(delayMs, 0, MAX_VISIBILITY_MS, 'delayMs');
    const at = this.now() + delayMs;
    await this.settle(topic, name, member, offsets, opts, async (tx, g, { inLease, inRedo }) => {
      const topicId = Number(g.topic_id);
      await this.finishInLeases(tx, topicId, name, inLease);
      const fromLeases = [...inLease.values()].flat();
      if (fromLeases.length > 0) {
        await tx.query(
          `INSERT INTO group_redeliveries (topic_id, group_name, off, deliveries, available_at_ms, reason, last_member)
           SELECT $1, $2, o, 1, $3, 'nack', $5 FROM unnest($4::int8[]) AS o`,
          [topicId, name, at, fromLeases, member],
        );
      }
      if (inRedo.length > 0) {
        await tx.query(
          `UPDATE group_redeliveries SET member = NULL, deadline_ms = NULL, available_at_ms = $3, reason = 'nack'
            WHERE topic_id = $1 AND group_name = $2 AND off = ANY ($4::int8[])`,
          [topicId, name, at, inRedo],
        );
      }
    });
  }

  /** Extends the lease of offsets leased to `member` to `byMs` from now (the range
   * lease holding an offset is extended whole). Resolves to the new deadline and every
   * offset it now holds (the named ones and the rest of their ranges). */
  async extend(topic: string, name: string, member: string, offsets: readonly number[], byMs: number, opts: SettleOptions = {}): Promise<{ readonly leaseUntilMs: number; readonly offsets: readonly number[] }> {
    bounded(byMs, MIN_VISIBILITY_MS, MAX_VISIBILITY_MS, 'byMs');
    const until = this.now() + byMs;
    return this.settle(topic, name, member, offsets, opts, async (tx, g, { inLease, inRedo }) => {
      const extended = [...inRedo];
      for (const l of inLease.keys()) {
        const first = Number(l.first_off);
        for (let o = first; o <= Number(l.last_off); o++) if (!bitSet(l.done, o - first)) extended.push(o);
      }
      const firsts = [...inLease.keys()].map((l) => Number(l.first_off));
      if (firsts.length > 0) {
        await tx.query('UPDATE group_leases SET deadline_ms = $3 WHERE topic_id = $1 AND group_name = $2 AND first_off = ANY ($4::int8[])', [g.topic_id, name, until, firsts]);
      }
      if (inRedo.length > 0) {
        await tx.query('UPDATE group_redeliveries SET deadline_ms = $3 WHERE topic_id = $1 AND group_name = $2 AND off = ANY ($4::int8[])', [g.topic_id, name, until, inRedo]);
      }
      return { leaseUntilMs: until, offsets: extended };
    });
  }

  /** A member left: what it holds is due now, for the others. Resolves to the topic's
   * epoch and head when it held something (the others' relays are told), else undefined. */
  async release(topic: string, name: string, member: string): Promise<{ readonly epoch: number; readonly head: number } | undefined> {
    const now = this.now();
    return this.db.transaction(async (tx) => {
      const g = await this.lockGroup(tx, topic, name).catch((err: unknown) => {
        if (err instanceof ProtocolError && err.code === 'GROUP_NOT_FOUND') return undefined;
        throw err;
      });
      if (!g) return undefined;
      const ranges = await tx.query('UPDATE group_leases SET deadline_ms = $4 WHERE topic_id = $1 AND group_name = $2 AND member = $3 AND deadline_ms > $4 RETURNING first_off', [g.topic_id, name, member, now]);
      const again = await tx.query('UPDATE group_redeliveries SET deadline_ms = $4 WHERE topic_id = $1 AND group_name = $2 AND member = $3 AND deadline_ms > $4 RETURNING off', [g.topic_id, name, member, now]);
      return ranges.length + again.length > 0 ? { epoch: Number(g.epoch), head: Number(g.t_next) } : undefined;
    });
  }
}
