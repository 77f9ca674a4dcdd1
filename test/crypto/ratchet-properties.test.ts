/**
 * Properties of the Double Ratchet over generated conversations: any delivery order
 * (within the skip limit) decrypts every message exactly once, any single bit flip is
 * rejected without changing state, and state survives serialization at any point.
 */
import { fc, test } from '@fast-check/vitest';
import { beforeAll, describe, expect } from 'vitest';
import type { CryptoErrorCode } from '../../crypto/errors.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { INITIAL_HANDSHAKE_BYTES } from '../../crypto/handshake/index.js';
import { Session, sessionMessageType } from '../../crypto/ratchet/index.js';
import { makeSessionPair, SESSION_BACKENDS, seededRandom, cryptoCodeOf } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

type Side = 'alice' | 'bob';
type Action =
  | { readonly op: 'send'; readonly from: Side }
  | { readonly op: 'deliver'; readonly to: Side; readonly pick: number }
  | { readonly op: 'replay'; readonly pick: number }
  | { readonly op: 'restore'; readonly side: Side };

const side = fc.constantFrom<Side>('alice', 'bob');
const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('send' as const), from: side }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('deliver' as const), to: side, pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('replay' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('restore' as const), side }) },
);

interface InFlight {
  readonly bytes: Uint8Array;
  readonly text: string;
  readonly to: Side;
}

const codeOf = cryptoCodeOf;

/** Runs a conversation script; returns what is still in flight and what was delivered. */
class Conversation {
  readonly sessions: Record<Side, Session>;
  readonly pending: Record<Side, InFlight[]> = { alice: [], bob: [] };
  readonly delivered: InFlight[] = [];
  #counter = 0;

  constructor(
    readonly backend: CryptoBackend,
    base: { alice: Uint8Array; bob: Uint8Array },
    seed: number,
  ) {
    this.sessions = {
      alice: Session.deserialize(base.alice, { backend, random: seededRandom(`alice-${seed}`) }),
      bob: Session.deserialize(base.bob, { backend, random: seededRandom(`bob-${seed}`) }),
    };
  }

  send(from: Side): void {
    const to: Side = from === 'alice' ? 'bob' : 'alice';
    const text = `${from} #${this.#counter++}`;
    this.pending[to].push({ bytes: this.sessions[from].encrypt(enc(text)), text, to });
  }

  deliver(to: Side, pick: number): void {
    const queue = this.pending[to];
    if (queue.length === 0) return;
    const [m] = queue.splice(pick % queue.length, 1) as [InFlight];
    expect(dec(this.sessions[to].decrypt(m.bytes))).toBe(m.text);
    this.delivered.push(m);
  }

  replay(pick: number): void {
    if (this.delivered.length === 0) return;
    const m = this.delivered[pick % this.delivered.length] as InFlight;
    const before = this.sessions[m.to].serialize();
    expect(codeOf(() => this.sessions[m.to].decrypt(m.bytes))).toBe('REPLAYED_MESSAGE');
    expect(this.sessions[m.to].serialize()).toEqual(before);
  }

  restore(s: Side): void {
    const random = seededRandom(`restored-${s}-${this.#counter}`);
    this.sessions[s] = Session.deserialize(this.sessions[s].serialize(), { backend: this.backend, random });
  }

  run(actions: readonly Action[]): void {
    for (const a of actions) {
      if (a.op === 'send') this.send(a.from);
      else if (a.op === 'deliver') this.deliver(a.to, a.pick);
      else if (a.op === 'replay') this.replay(a.pick);
      else this.restore(a.side);
    }
  }

  /** Delivers everything still in flight, in an order driven by `picks`. */
  drain(picks: readonly number[]): void {
    let i = 0;
    while (this.pending.alice.length + this.pending.bob.length > 0) {
      const pick = picks.length === 0 ? 0 : (picks[i++ % picks.length] as number);
      const to: Side = this.pending.alice.length === 0 ? 'bob' : this.pending.bob.length === 0 ? 'alice' : pick % 2 === 0 ? 'alice' : 'bob';
      this.deliver(to, pick >>> 1);
    }
  }
}

/** Codes a damaged message may legitimately get; which one depends on the field hit. */
const REJECTION_CODES: readonly (CryptoErrorCode | 'no error')[] = [
  'DECRYPT_FAILED',
  'REPLAYED_MESSAGE',
  'TOO_MANY_SKIPPED',
  'INVALID_MESSAGE',
  'UNSUPPORTED_VERSION',
  'INVALID_STATE',
];

describe.each(SESSION_BACKENDS)('ratchet properties ($name)', (backend: CryptoBackend) => {
  // One handshake per backend; each run starts from copies of these states.
  const bases: Record<'replied' | 'fresh', { alice: Uint8Array; bob: Uint8Array }> = {
    replied: { alice: new Uint8Array(0), bob: new Uint8Array(0) },
    fresh: { alice: new Uint8Array(0), bob: new Uint8Array(0) },
  };
  beforeAll(async () => {
    for (const kind of ['replied', 'fresh'] as const) {
      const { alice, bob } = await makeSessionPair(backend, `props-${kind}`, { reply: kind === 'replied' });
      bases[kind] = { alice: alice.serialize(), bob: bob.serialize() };
    }
  });
  const runs = backend.name === 'noble' ? 20 : 40;

  test.prop(
    [fc.boolean(), fc.integer(), fc.array(action, { maxLength: 40 }), fc.array(fc.nat(), { maxLength: 20 })],
    { numRuns: runs },
  )('any delivery order decrypts every message exactly once; replays are REPLAYED_MESSAGE', (replied, seed, actions, order) => {
    const c = new Conversation(backend, replied ? bases.replied : bases.fresh, seed);
    c.run(actions);
    c.drain(order);
    const sent = actions.filter((a) => a.op === 'send').length;
    expect(c.delivered.length).toBe(sent);
    expect(new Set(c.delivered.map((m) => m.text)).size).toBe(sent);
    for (let i = 0; i < Math.min(3, c.delivered.length); i++) c.replay(i * 7);
  });

  test.prop(
    [fc.boolean(), fc.integer(), fc.array(action, { maxLength: 24 }), side, fc.boolean(), fc.nat(), fc.nat()],
    { numRuns: runs * 2 },
  )('any single bit flip in any message is rejected and leaves the state unchanged', (replied, seed, actions, to, fromPending, pick, bitPick) => {
    const c = new Conversation(backend, replied ? bases.replied : bases.fresh, seed);
    c.run(actions);
    // Make sure there is something in flight to `to`.
    c.send(to === 'alice' ? 'bob' : 'alice');
    const pool = fromPending || c.delivered.length === 0 ? c.pending[to] : c.delivered.filter((m) => m.to === to);
    const target = (pool.length > 0 ? pool[pick % pool.length] : c.pending[to][0]) as InFlight;
    const bit = bitPick % (target.bytes.length * 8);
    const forged = target.bytes.slice();
    forged[bit >>> 3] = (forged[bit >>> 3] as number) ^ (1 << (bit & 7));

    const session = c.sessions[target.to];
    const before = session.serialize();
    const code = codeOf(() => session.decrypt(forged));
    expect(REJECTION_CODES).toContain(code);
    expect(session.serialize()).toEqual(before);
    // A damaged ciphertext or tag of a message not yet received has one answer:
    // authentication failed. (For a delivered one the header already names a used
    // message number, which is REPLAYED_MESSAGE whatever the body says: its key is gone.)
    const ratchetStart = sessionMessageType(target.bytes) === 'initial' ? INITIAL_HANDSHAKE_BYTES : 0;
    const wasPending = c.pending[target.to].includes(target);
    if (bit >>> 3 >= ratchetStart + 41) expect(code).toBe(wasPending ? 'DECRYPT_FAILED' : 'REPLAYED_MESSAGE');
    // The genuine message is unaffected (unless it was already delivered).
    if (wasPending) {
      c.deliver(target.to, c.pending[target.to].indexOf(target));
    }
    c.drain([]);
  });

  test.prop([fc.integer(), fc.array(action, { minLength: 1, maxLength: 40 }), fc.array(fc.nat(), { maxLength: 10 })], {
    numRuns: runs,
  })('serializing and restoring either side at any point continues the conversation', (seed, actions, order) => {
    const c = new Conversation(backend, bases.replied, seed);
    for (const a of actions) {
      c.run([a]);
      // Every state round-trips byte for byte...
      for (const s of ['alice', 'bob'] as const) {
        const bytes = c.sessions[s].serialize();
        expect(Session.deserialize(bytes, { backend }).serialize()).toEqual(bytes);
      }
      // ...and the restored sessions are the ones that carry on.
      c.restore('alice');
      c.restore('bob');
    }
    c.drain(order);
    c.send('alice');
    c.send('bob');
    c.drain([]);
  });
});
