/**
 * The cache of decoded sessions (client-sdk/sessions.ts) never lets a session run ahead
 * of what the store holds: after a failed commit the next message is sealed, or opened,
 * from the stored state, exactly as by a client that never cached anything.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../client-sdk/node.js';
import { Sessions } from '../../client-sdk/sessions.js';
import { StoreTx, Transactor } from '../../client-sdk/stores/store.js';
import { nobleBackend } from '../../crypto/primitives/index.js';
import { bundleOf, makeIdentity, makeResponder, seededRandom } from '../crypto/session-fixtures.js';

/** A memory store whose next commit fails on demand. */
class FailingStore extends MemoryStore {
  failNext = false;
  override async commit(writes: Parameters<MemoryStore['commit']>[0]): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('disk full');
    }
    return super.commit(writes);
  }
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function setup() {
  const backend = nobleBackend;
  const random = seededRandom('sessions-cache');
  const bob = makeResponder(backend, random);
  const aliceIdentity = makeIdentity(backend, random);
  const aliceStore = new FailingStore();
  const bobStore = new FailingStore();
  return {
    bob,
    aliceIdentity,
    aliceStore,
    bobStore,
    alice: { sessions: new Sessions(aliceIdentity, backend, random), db: new Transactor(aliceStore) },
    bobSide: { sessions: new Sessions(bob.identity, backend, random), db: new Transactor(bobStore) },
    fresh: (identity: typeof aliceIdentity) => new Sessions(identity, backend, random),
  };
}

describe('session cache', () => {
  it('a seal whose commit failed is forgotten: the next seal starts from the stored state', async () => {
    const t = setup();
    const { sessions, db } = t.alice;
    await db.run((tx) => sessions.start(tx, 'bob', 'd1', bundleOf(t.bob)));
    await db.run((tx) => sessions.seal(tx, 'bob', 'd1', text('one')));
    t.aliceStore.failNext = true;
    await expect(db.run((tx) => sessions.seal(tx, 'bob', 'd1', text('two')))).rejects.toThrow('disk full');
    // Sealed over the store without committing: by the caching instance and by one that
    // never saw the failed seal. Equal ciphertexts mean equal states (same message key).
    const cached = await sessions.seal(new StoreTx(t.aliceStore), 'bob', 'd1', text('three'));
    const uncached = await t.fresh(t.aliceIdentity).seal(new StoreTx(t.aliceStore), 'bob', 'd1', text('three'));
    expect(cached).toEqual(uncached);
  });

  it('a message whose opening failed to commit opens again (not a replay)', async () => {
    const t = setup();
    const alice = t.alice;
    await alice.db.run((tx) => alice.sessions.start(tx, 'bob', 'd1', bundleOf(t.bob)));
    const m1 = await alice.db.run((tx) => alice.sessions.seal(tx, 'bob', 'd1', text('one')));
    const m2 = await alice.db.run((tx) => alice.sessions.seal(tx, 'bob', 'd1', text('two')));
    const { sessions, db } = t.bobSide;
    const open = (m: Uint8Array) => db.run((tx) => sessions.open(tx, 'alice', 'a1', t.aliceIdentity.publicKey.bytes, m, t.bob.store));
    expect(await open(m1)).toEqual(text('one'));
    t.bobStore.failNext = true;
    await expect(open(m2)).rejects.toThrow('disk full');
    // Delivered again (its ACK never went): it decrypts from the stored state.
    expect(await open(m2)).toEqual(text('two'));
    // And is a replay once that is committed.
    await expect(open(m2)).rejects.toMatchObject({ code: 'REPLAYED_MESSAGE' });
  });
});
