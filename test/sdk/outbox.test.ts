/**
 * The outbox sends each envelope once per connection: many SENDs pipelined at once, the
 * STORED answers arriving while earlier entries' deletions are still committing, and no
 * envelope goes out twice. Counted at the transport, through a real relay process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeSend } from '../../protocol/envelopes.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, startWorld, tappedTransport, waitFor } from './helpers.js';

let world: SdkWorld;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await killAllRelays();
});

describe('SDK outbox', () => {
  it('sends every envelope exactly once per connection when many sends are pipelined', async () => {
    const tap = tappedTransport();
    const alice = await newClient(world, 'ob-alice', { transport: tap.transport });
    const bob = observe(await newClient(world, 'ob-bob'));
    await waitFor('both online', () => (alice.state.state === 'online' && bob.client.state.state === 'online' ? true : undefined));
    const n = 150;
    const sent = await Promise.all(Array.from({ length: n }, (_, i) => alice.send('ob-bob', `pipelined ${i}`)));
    await bob.received(n);
    // Let any late resend reach the transport before counting.
    await alice.send('ob-bob', 'last');
    await bob.received(n + 1);

    expect(tap.connections()).toBe(1);
    const perEnvelope = new Map<string, number>();
    for (const frame of tap.sent) {
      const id = encodeBase64url(decodeSend(frame).envelopeId);
      perEnvelope.set(id, (perEnvelope.get(id) ?? 0) + 1);
    }
    const twice = [...perEnvelope.entries()].filter(([, c]) => c !== 1);
    expect(twice).toEqual([]);
    expect(perEnvelope.size).toBe(n + 1);
    for (const s of sent) expect(perEnvelope.get(s.envelopeId)).toBe(1);
    expect(bob.messages.map((m) => m.body).slice(0, n).sort()).toEqual(Array.from({ length: n }, (_, i) => `pipelined ${i}`).sort());
    await alice.close();
    await bob.client.close();
  });
});
