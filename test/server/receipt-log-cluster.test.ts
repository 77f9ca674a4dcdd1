/**
 * Two relay processes on one PostgreSQL database appending to the receipt log at once:
 * one tree, every index given once with none missing, a receipt submitted through both
 * relays at once logged once, every inclusion proof and every consistency proof between
 * the checkpoints (signed by either relay with the shared key) verifying.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leafHash, verifyConsistency, verifyInclusion } from '../../crypto/tlog/merkle.js';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { TileSet, formatTilePath, tilesForSize, verifyTiles } from '../../crypto/tlog/tiles.js';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import { decodeCheckpointsAnswer, decodeConsistencyProofAnswer, decodeInclusionProofAnswer } from '../../protocol/log.js';
import { request } from '../helpers/http.js';
import { describePg } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { type LogIdentity, fromB64, latestCheckpoint, logIdentity, signedReceipt, submitOk, verifyCheckpoint } from '../helpers/receipt-log.js';
import { POSTGRES, type TestUser, World, firstDevice, metric, sendMany, sleep } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

const RECEIPTS = 40;
const encoder = new TextEncoder();

describePg('receipt log on two relays sharing PostgreSQL', () => {
  let world: World;
  let bob: TestUser;
  let alice: TestUser;
  let delivered: DeliverFrame[];
  let id: LogIdentity;

  beforeAll(async () => {
    const key = NoteSigner.generate('cluster.hermetic.test/log');
    world = await World.start(POSTGRES, { relays: 2, env: { HERMETIC_LOG_KEY: key.exportSignerKey(), HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: '100' } });
    alice = await world.user('alice');
    bob = await world.user('bob');
    await sendMany(await world.connect(alice), bob, RECEIPTS, 'cluster');
    delivered = [...(await (await world.connect(bob, firstDevice(bob), { relay: 1 })).waitDelivered(RECEIPTS))];
    world.closeClients();
    id = await logIdentity(world.relays[0]!.baseUrl);
    // Both relays present the same key and origin.
    expect((await logIdentity(world.relays[1]!.baseUrl)).verifier.toString()).toBe(id.verifier.toString());
  });

  afterAll(async () => {
    await world?.stop();
  });

  it('appends concurrently into one consistent tree', async () => {
    const receipts = delivered.map((d) => signedReceipt(firstDevice(bob), [d]));
    // Every receipt through both relays at once, bob and alice alternating.
    const answers = await Promise.all(
      receipts.flatMap((r, i) => [
        submitOk(world.relays[i % 2]!.baseUrl, i % 3 === 0 ? alice.token : bob.token, [r]),
        submitOk(world.relays[(i + 1) % 2]!.baseUrl, bob.token, [r]),
      ]),
    );
    const indexOf = new Map<string, number>();
    answers.forEach((a, k) => {
      const receipt = receipts[Math.floor(k / 2)]!;
      const e = a.entries[0]!;
      expect(fromB64(e.leafHash)).toEqual(leafHash(encoder.encode(receipt)));
      const prior = indexOf.get(receipt);
      if (prior === undefined) indexOf.set(receipt, e.index);
      else expect(e.index).toBe(prior);
    });
    // Each receipt was logged once: exactly one of its two answers is not a duplicate.
    for (let i = 0; i < RECEIPTS; i++) expect([answers[2 * i]!.entries[0]!.duplicate, answers[2 * i + 1]!.entries[0]!.duplicate].sort()).toEqual([false, true]);
    expect([...indexOf.values()].sort((a, b) => a - b)).toEqual(Array.from({ length: RECEIPTS }, (_, i) => i));

    // The interval checkpoint catches up with the tree.
    let cp = await latestCheckpoint(world.relays[1]!.baseUrl, id);
    for (let i = 0; i < 100 && cp.size < RECEIPTS; i++) {
      await sleep(50);
      cp = await latestCheckpoint(world.relays[1]!.baseUrl, id);
    }
    expect(cp.size).toBe(RECEIPTS);

    for (const [receipt, index] of indexOf) {
      const res = await request(world.relays[index % 2]!.baseUrl, 'GET', `/v1/log/proof/inclusion?index=${index}&size=${cp.size}`);
      const proof = decodeInclusionProofAnswer(res.body);
      expect(() => verifyInclusion(leafHash(encoder.encode(receipt)), index, cp.size, proof.hashes.map(fromB64), cp.root)).not.toThrow();
    }

    const tiles = new TileSet();
    for (const t of tilesForSize(cp.size)) {
      const res = await fetch(`${world.relays[0]!.baseUrl}/v1/log/${formatTilePath(t)}`);
      expect(res.status).toBe(200);
      tiles.add(t, new Uint8Array(await res.arrayBuffer()));
    }
    await verifyTiles(cp.size, cp.root, tiles);

    // Every checkpoint either relay signed verifies, and each is consistent with the next.
    const history = decodeCheckpointsAnswer((await request(world.relays[0]!.baseUrl, 'GET', '/v1/log/checkpoints?limit=256')).body).checkpoints;
    expect(history.length).toBeGreaterThan(1);
    expect(history.map((c) => c.size)).toEqual([...new Set(history.map((c) => c.size))].sort((a, b) => a - b));
    for (let i = 1; i < history.length; i++) {
      const a = verifyCheckpoint(history[i - 1]!.note, id);
      const b = verifyCheckpoint(history[i]!.note, id);
      const res = await request(world.relays[i % 2]!.baseUrl, 'GET', `/v1/log/proof/consistency?from=${a.size}&to=${b.size}`);
      expect(() => verifyConsistency(a.size, b.size, a.root, b.root, decodeConsistencyProofAnswer(res.body).hashes.map(fromB64))).not.toThrow();
    }
    // Between them the relays appended each receipt once.
    const appended = await Promise.all(world.relays.map((r) => metric(r, 'hermetic_log_receipts_appended_total')));
    expect((appended[0] ?? 0) + (appended[1] ?? 0)).toBe(RECEIPTS);
    await world.expectRelaysUp();
  });
});
