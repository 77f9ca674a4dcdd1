/**
 * The SDK with STORED_BATCH, end to end through a real relay process: the client asks for
 * it at authentication, the relay answers its sends in binary STORED_BATCH frames (seen
 * on the wire), and every send resolves once stored while the messages arrive.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BINARY_FRAME } from '../../protocol/envelopes.js';
import { decodeStoredBatch } from '../../protocol/stored-batch.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, startWorld, tappedTransport, waitFor } from './helpers.js';

let world: SdkWorld;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await killAllRelays();
});

describe('SDK and STORED_BATCH', () => {
  it('has its sends answered in STORED_BATCH frames and resolves each of them', async () => {
    const tap = tappedTransport();
    const alice = await newClient(world, 'sb-alice', { transport: tap.transport });
    const bob = observe(await newClient(world, 'sb-bob'));
    await waitFor('both online', () => (alice.state.state === 'online' && bob.client.state.state === 'online' ? true : undefined));
    const sent = await Promise.all(Array.from({ length: 40 }, (_, i) => alice.send('sb-bob', `message ${i}`)));
    const got = await bob.received(40);
    expect(new Set(got.map((m) => m.body))).toEqual(new Set(sent.map((_, i) => `message ${i}`)));
    expect(new Set(got.map((m) => m.envelopeId))).toEqual(new Set(sent.map((s) => s.envelopeId)));
    // Every SEND the client made was answered in a STORED_BATCH (no JSON stored frame is
    // taped as binary, so the count would fall short if any had been).
    const batches = tap.received.filter((f) => f[0] === BINARY_FRAME.STORED_BATCH).map((f) => decodeStoredBatch(f));
    const answered = new Set(batches.flatMap((b) => b.answers.map((a) => a.id)));
    const sentIds = new Set(tap.sent.map((f) => new DataView(f.buffer, f.byteOffset, f.byteLength).getUint32(1)));
    expect(answered).toEqual(sentIds);
    await alice.close();
    await bob.client.close();
  });
});
