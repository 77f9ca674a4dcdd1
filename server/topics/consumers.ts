/**
 * Consumer groups on one relay's connections (server/topics/groups.ts holds the state).
 * A connection joins a group with a prefetch: the most messages leased to it and not yet
 * settled; it is leased more once half of it is free (or it holds nothing). The relay
 * leases for its members one call at a time per group, round robin, each member what it
 * has room for (new offsets for several members in one call, when the group is in its
 * usual state: server/topics/groups.ts leaseFresh); when nothing is leasable it waits for the
 * topic's next commit (on any relay) or for the group's next due time (a lease deadline,
 * a delayed redelivery). A member whose socket stops draining gets nothing more until
 * it drains; one that leaves has its leases released to the others at once.
 * Acknowledgements that come while a group's acknowledgement calls run are gathered into
 * the next call (GroupStore.ackMany).
 */
import type { Logger } from 'pino';
import { ProtocolError } from '../../protocol/errors.js';
import { type SettleAction, type TopicServerFrame, encodeTopicServerFrame } from '../../protocol/topic-frames.js';
import { SOCKET_BUFFER_HIGH_WATER } from '../limits.js';
import type { GroupStore, Lease } from './groups.js';
import type { TopicPeer } from './hub.js';
import { wireMessage } from './store.js';

/** Groups one connection may consume from at once. */
export const MAX_CONSUMES_PER_CONNECTION = 16;
/** Acknowledgements (settle frames) of one group applied in one call: those that come
 * while MAX_ACK_CALLS calls are under way wait and go together in the next. */
export const MAX_ACKS_PER_CALL = 16;
/** Acknowledgement calls of one group under way at once (they take the group's row in a
 * shared lock, and each member's leases in order, so they run side by side). */
export const MAX_ACK_CALLS = 2;
/** Members one lease call serves at most (each gets up to its prefetch, at most 256): the
 * rest are served by the next call. */
export const MAX_MEMBERS_PER_LEASE_CALL = 8;

interface AckRequest {
  readonly member: Member;
  readonly offsets: readonly number[];
  readonly epoch: number | undefined;
  resolve(): void;
  reject(err: unknown): void;
}

interface Member {
  readonly peer: TopicPeer;
  /** Unique per connection and relay: what the group's leases name. */
  readonly id: string;
  readonly prefetch: number;
  /** Offsets leased to this member and not yet settled, with their lease deadlines
   * (past it the lease is the group's again, and stops taking the member's room). */
  readonly outstanding: Map<number, number>;
}

interface GroupState {
  readonly topic: string;
  readonly group: string;
  readonly members: Member[];
  /** The topic's epoch as last heard of: a newer one means the topic was reset, and the
   * leases of the old epoch (the members' outstanding offsets) are gone. */
  epoch: number | undefined;
  /** The member served first at the next lease (round robin). */
  turn: number;
  leasing: boolean;
  /** Something happened while a lease call ran: lease again after it. */
  again: boolean;
  timer: NodeJS.Timeout | undefined;
  /** Acknowledgements waiting for a call (`acking` are under way). */
  readonly acks: AckRequest[];
  acking: number;
}

export interface ConsumerHubDeps {
  readonly groups: GroupStore;
  readonly logger: Logger;
  /** This relay's node id: member ids are unique across relays. */
  readonly nodeId: string;
  /** Told when a lease moved messages to a dead-letter topic (its subscribers read them). */
  readonly onDeadLettered: (head: NonNullable<Lease['deadLetterHead']>, count: number) => void;
  readonly onSkipped?: (count: number) => void;
  /** Told when a departed member's leases were made due: the group's members on other
   * relays lease them (a topic notice wakes them). */
  readonly onReleased?: (topic: string, epoch: number, head: number) => void;
}

const keyOf = (topic: string, group: string): string => `${topic}\n${group}`;

export class ConsumerHub {
  private readonly states = new Map<string, GroupState>();
  private readonly byPeer = new Map<TopicPeer, Map<string, Member>>();
  private serial = 0;

  constructor(private readonly deps: ConsumerHubDeps) {}

  /** Joins `peer` to the group; answers `consuming`, then `leased` frames. */
  async consume(peer: TopicPeer, id: number, topic: string, group: string, prefetch: number): Promise<void> {
    const k = keyOf(topic, group);
    this.checkRoom(peer, topic, group);
    // The group must exist: said now, not at the first lease.
    if (!(await this.deps.groups.info(topic, group))) throw new ProtocolError('GROUP_NOT_FOUND', `no group ${group} of topic ${topic}`);
    if (peer.closed) return;
    // Again: other consume requests of this connection may have joined meanwhile.
    this.checkRoom(peer, topic, group);
    const member: Member = { peer, id: `${this.deps.nodeId}/${++this.serial}/${peer.userId}/${peer.deviceId}`, prefetch, outstanding: new Map() };
    let st = this.states.get(k);
    if (!st) this.states.set(k, (st = { topic, group, members: [], epoch: undefined, turn: 0, leasing: false, again: false, timer: undefined, acks: [], acking: 0 }));
    st.members.push(member);
    let m = this.byPeer.get(peer);
    if (!m) this.byPeer.set(peer, (m = new Map()));
    m.set(k, member);
    peer.write(encodeTopicServerFrame({ type: 'consuming', id, topic, group }), 'consuming');
    this.pump(st);
  }

  /** Throws BAD_REQUEST when `peer` consumes the group already, or its most groups. */
  private checkRoom(peer: TopicPeer, topic: string, group: string): void {
    const mine = this.byPeer.get(peer);
    if (mine?.has(keyOf(topic, group))) throw new ProtocolError('BAD_REQUEST', `already consuming ${group} of ${topic} on this connection`);
    if (mine && mine.size >= MAX_CONSUMES_PER_CONNECTION) throw new ProtocolError('BAD_REQUEST', `at most ${MAX_CONSUMES_PER_CONNECTION} groups per connection`);
  }

  /** Acknowledges, negatively acknowledges or extends offsets leased to `peer`. */
  async settle(peer: TopicPeer, id: number, topic: string, group: string, action: SettleAction, offsets: readonly number[], opts: { epoch?: number | undefined; delayMs?: number | undefined; byMs?: number | undefined }): Promise<TopicServerFrame> {
    const member = this.byPeer.get(peer)?.get(keyOf(topic, group));
    if (!member) throw new ProtocolError('NOT_LEASED', `this connection is not consuming ${group} of ${topic}`);
    let leaseUntil: number | undefined;
    const at = { epoch: opts.epoch };
    try {
      if (action === 'ack') await this.ack(topic, group, member, offsets, opts.epoch);
      else if (action === 'nack') await this.deps.groups.nack(topic, group, member.id, offsets, opts.delayMs ?? 0, at);
      else {
        const extended = await this.deps.groups.extend(topic, group, member.id, offsets, opts.byMs ?? 0, at);
        // The whole range each offset came in: all of it keeps taking the member's room.
        for (const o of extended.offsets) if (member.outstanding.has(o)) member.outstanding.set(o, extended.leaseUntilMs);
        leaseUntil = extended.leaseUntilMs;
      }
    } catch (err) {
      // The group was deleted (a member with a full prefetch learns it here): the
      // membership ends, as it would at the next lease.
      if (err instanceof ProtocolError && err.code === 'GROUP_NOT_FOUND') {
        const st = this.states.get(keyOf(topic, group));
        if (st) this.endGroup(st, err);
      }
      throw err;
    }
    if (action !== 'extend') {
      for (const o of offsets) member.outstanding.delete(o);
      const st = this.states.get(keyOf(topic, group));
      if (st) this.pump(st);
    }
    return { type: 'settled', id, topic, group, action, ...(leaseUntil !== undefined ? { leaseUntil } : {}) };
  }

  /** Acknowledges through the group's queue: one call for what comes while one is under way. */
  private ack(topic: string, group: string, member: Member, offsets: readonly number[], epoch: number | undefined): Promise<void> {
    const st = this.states.get(keyOf(topic, group));
    if (!st) return this.deps.groups.ack(topic, group, member.id, offsets, { epoch });
    return new Promise<void>((resolve, reject) => {
      st.acks.push({ member, offsets, epoch, resolve, reject });
      if (st.acking < MAX_ACK_CALLS) void this.flushAcks(st);
    });
  }

  private async flushAcks(st: GroupState): Promise<void> {
    st.acking++;
    try {
      while (st.acks.length > 0) {
        const batch = st.acks.splice(0, MAX_ACKS_PER_CALL);
        let outcomes: unknown[];
        try {
          outcomes = await this.deps.groups.ackMany(st.topic, st.group, batch.map((b) => ({ member: b.member.id, offsets: b.offsets, epoch: b.epoch })));
        } catch (err) {
          outcomes = batch.map(() => err);
        }
        batch.forEach((b, i) => (outcomes[i] === undefined ? b.resolve() : b.reject(outcomes[i])));
      }
    } finally {
      st.acking--;
    }
  }

  /** Leaves the group: what the member holds goes to the others at once. */
  async stop(peer: TopicPeer, topic: string, group: string): Promise<void> {
    const member = this.byPeer.get(peer)?.get(keyOf(topic, group));
    if (member) await this.leave(member, topic, group);
  }

  /** The peer's connection closed. */
  close(peer: TopicPeer): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const [k, member] of [...mine]) {
      const [topic, group] = k.split('\n') as [string, string];
      void this.leave(member, topic, group);
    }
  }

  /** The peer's rights changed (a renewed token): each membership `allowed` refuses
   * ends with that refusal, its leases released to the others. */
  recheck(peer: TopicPeer, allowed: (topic: string) => ProtocolError | undefined): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const [k, member] of [...mine]) {
      const [topic, group] = k.split('\n') as [string, string];
      const refusal = allowed(topic);
      if (!refusal) continue;
      void this.leave(member, topic, group);
      if (!peer.closed) {
        peer.write(encodeTopicServerFrame({ type: 'subscription_ended', topic, group, code: refusal.code, message: refusal.message, ...(refusal.details ? { details: refusal.details } : {}) }), 'subscription_ended');
      }
    }
  }

  private async leave(member: Member, topic: string, group: string): Promise<void> {
    const k = keyOf(topic, group);
    const mine = this.byPeer.get(member.peer);
    mine?.delete(k);
    if (mine?.size === 0) this.byPeer.delete(member.peer);
    const st = this.states.get(k);
    if (st) {
      const i = st.members.indexOf(member);
      if (i >= 0) st.members.splice(i, 1);
      if (st.members.length === 0) {
        if (st.timer) clearTimeout(st.timer);
        this.states.delete(k);
      }
    }
    await this.release(topic, group, member.id);
  }

  /** Makes a departed member's leases due, and wakes the group's other members: here at
   * once, on other relays through a topic notice. */
  private async release(topic: string, group: string, memberId: string): Promise<void> {
    let released: Awaited<ReturnType<GroupStore['release']>>;
    try {
      released = await this.deps.groups.release(topic, group, memberId);
    } catch (err) {
      // Its leases then expire by themselves.
      this.deps.logger.warn({ topic, group, err: { message: (err as Error).message } }, 'releasing a departed member\'s leases failed (they expire with their visibility timeout)');
      return;
    }
    if (!released) return;
    const st = this.states.get(keyOf(topic, group));
    if (st) this.pump(st);
    this.deps.onReleased?.(topic, released.epoch, released.head);
  }

  /** The peer's socket drained: groups it waits on lease again. */
  drain(peer: TopicPeer): void {
    const mine = this.byPeer.get(peer);
    if (!mine) return;
    for (const k of mine.keys()) {
      const st = this.states.get(k);
      if (st) this.pump(st);
    }
  }

  /** Something was committed to `topic`, or it was reset to `epoch` (on this relay or another). */
  topicHead(topic: string, epoch: number): void {
    for (const st of this.states.values()) {
      if (st.topic !== topic) continue;
      this.noteEpoch(st, epoch);
      this.pump(st);
    }
  }

  /** At a newer epoch, the old one's leases no longer take the members' room. */
  private noteEpoch(st: GroupState, epoch: number): void {
    if (st.epoch !== undefined && epoch > st.epoch) for (const m of st.members) m.outstanding.clear();
    if (st.epoch === undefined || epoch > st.epoch) st.epoch = epoch;
  }

  /** Leases for the group's members while any has room and something is leasable. */
  private pump(st: GroupState): void {
    if (st.leasing) {
      st.again = true;
      return;
    }
    st.leasing = true;
    st.again = false;
    void this.leaseLoop(st).finally(() => {
      st.leasing = false;
      if (st.again && this.states.get(keyOf(st.topic, st.group)) === st) this.pump(st);
    });
  }

  private async leaseLoop(st: GroupState): Promise<void> {
    for (;;) {
      if (this.states.get(keyOf(st.topic, st.group)) !== st) return;
      const ready = this.membersWithRoom(st);
      if (ready.length === 0) return;
      // Everyone with room in one call, when the group is in its usual state.
      if (ready.length > 1) {
        let leases: Map<string, Lease> | undefined;
        try {
          leases = await this.deps.groups.leaseFresh(st.topic, st.group, ready.slice(0, MAX_MEMBERS_PER_LEASE_CALL).map((m) => ({ member: m.id, max: m.prefetch - m.outstanding.size })));
        } catch (err) {
          this.leaseFailed(st, err);
          return;
        }
        if (leases !== undefined) {
          for (const m of ready) {
            const lease = leases.get(m.id);
            if (lease) await this.deliver(st, m, lease);
          }
          continue;
        }
      }
      const member = ready[0]!;
      // It may have left while the call above ran: then look again.
      if (member.peer.closed || !st.members.includes(member)) continue;
      let lease: Lease;
      try {
        lease = await this.deps.groups.lease(st.topic, st.group, member.id, member.prefetch - member.outstanding.size, { avoidOwnFailures: st.members.length > 1 });
      } catch (err) {
        this.leaseFailed(st, err);
        return;
      }
      if (lease.deadLetterHead) this.deps.onDeadLettered(lease.deadLetterHead, lease.deadLettered);
      if (lease.skipped > 0) this.deps.onSkipped?.(lease.skipped);
      if (lease.messages.length > 0) {
        await this.deliver(st, member, lease);
        continue;
      }
      this.noteEpoch(st, lease.epoch);
      if (lease.deadLettered > 0 || lease.skipped > 0) continue;
      // Nothing leasable now: the next commit to the topic, or the next due time, wakes it.
      if (lease.nextDueMs !== undefined) this.wakeAt(st, lease.nextDueMs);
      return;
    }
  }

  /** A lease call failed: the group is gone (its members are told), or it is tried again shortly. */
  private leaseFailed(st: GroupState, err: unknown): void {
    if (err instanceof ProtocolError && (err.code === 'GROUP_NOT_FOUND' || err.code === 'TOPIC_NOT_FOUND')) {
      this.endGroup(st, err);
      return;
    }
    this.deps.logger.warn({ topic: st.topic, group: st.group, err: { message: (err as Error).message } }, 'leasing for a consumer group failed (tried again shortly)');
    this.wakeAt(st, Date.now() + 1000);
  }

  /** Sends a member what was leased to it; a member gone meanwhile has it released to the others. */
  private async deliver(st: GroupState, member: Member, lease: Lease): Promise<void> {
    this.noteEpoch(st, lease.epoch);
    if (lease.messages.length === 0) return;
    if (member.peer.closed || !st.members.includes(member)) {
      await this.release(st.topic, st.group, member.id);
      return;
    }
    member.peer.cork(() => {
      for (const m of lease.messages) {
        member.outstanding.set(m.offset, m.leaseUntilMs);
        const frame = encodeTopicServerFrame({
          type: 'leased',
          topic: st.topic,
          group: st.group,
          epoch: lease.epoch,
          deliveries: m.deliveries,
          leaseUntil: m.leaseUntilMs,
          ...wireMessage(m),
        });
        member.peer.write(frame, 'leased');
      }
    });
  }

  /** The members with room and a socket that drains, round robin from the group's turn
   * (which moves past the first of them). */
  private membersWithRoom(st: GroupState): Member[] {
    const n = st.members.length;
    const now = Date.now();
    const out: Member[] = [];
    const from = st.turn;
    for (let i = 0; i < n; i++) {
      const m = st.members[(from + i) % n]!;
      for (const [o, until] of m.outstanding) if (until <= now) m.outstanding.delete(o);
      // Refilled once half its prefetch is free (or it holds nothing): a member busy with
      // the other half loses nothing, and each lease carries a batch, not one message.
      const room = m.prefetch - m.outstanding.size;
      if (m.peer.closed || room <= 0 || (m.outstanding.size > 0 && room * 2 < m.prefetch) || m.peer.bufferedAmount() >= SOCKET_BUFFER_HIGH_WATER) continue;
      if (out.length === 0) st.turn = (from + i + 1) % n;
      out.push(m);
    }
    return out;
  }

  private wakeAt(st: GroupState, atMs: number): void {
    if (st.timer) clearTimeout(st.timer);
    st.timer = setTimeout(
      () => {
        st.timer = undefined;
        this.pump(st);
      },
      Math.max(0, atMs - Date.now()) + 5,
    );
    st.timer.unref();
  }

  private endGroup(st: GroupState, err: ProtocolError): void {
    for (const m of [...st.members]) {
      const mine = this.byPeer.get(m.peer);
      mine?.delete(keyOf(st.topic, st.group));
      if (mine?.size === 0) this.byPeer.delete(m.peer);
      if (!m.peer.closed) {
        m.peer.write(encodeTopicServerFrame({ type: 'subscription_ended', topic: st.topic, group: st.group, code: err.code, message: err.message }), 'subscription_ended');
      }
    }
    if (st.timer) clearTimeout(st.timer);
    this.states.delete(keyOf(st.topic, st.group));
  }

  /** Stops every timer (shutdown). */
  stopAll(): void {
    for (const st of this.states.values()) if (st.timer) clearTimeout(st.timer);
  }
}
