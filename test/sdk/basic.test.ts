/**
 * The SDK end to end through a real relay process: enrolment, 1:1 messages both ways,
 * each body kind, multi-device fan-out, linking a second device.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../client-sdk/node.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, startWorld, waitFor } from './helpers.js';

let world: SdkWorld;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await killAllRelays();
});

describe('SDK, one device each', () => {
  it('enrols roots, sends each body kind both ways, and the receiver sees sender, times and ids', async () => {
    const alice = observe(await newClient(world, 'sdk-alice'));
    const bob = observe(await newClient(world, 'sdk-bob'));
    await waitFor('both online', () => (alice.client.state.state === 'online' && bob.client.state.state === 'online' ? true : undefined));
    const sent = await alice.client.send('sdk-bob', 'hello bob');
    expect(sent.recipient).toBe('sdk-bob');
    await alice.client.send('sdk-bob', new Uint8Array([1, 2, 3]));
    await alice.client.send('sdk-bob', { amount: 12, currency: 'EUR' });
    const got = await bob.received(3);
    expect(got.map((m) => [m.kind, m.body])).toEqual([
      ['text', 'hello bob'],
      ['bytes', new Uint8Array([1, 2, 3])],
      ['json', { amount: 12, currency: 'EUR' }],
    ]);
    expect(got[0]!.from).toEqual({ userId: 'sdk-alice', deviceId: alice.client.deviceId });
    expect(got[0]!.envelopeId).toBe(sent.envelopeId);
    expect(got[0]!.id).toBe(sent.messageId);
    expect(got[0]!.flags).toEqual([]);
    expect(got[0]!.storedAt).toBeGreaterThanOrEqual(got[0]!.sentAt - 60_000);
    await bob.client.send('sdk-alice', 'hi alice');
    expect((await alice.received(1))[0]!.body).toBe('hi alice');
    await alice.client.close();
    await bob.client.close();
  });

  it('links a second device with a link code; messages reach every device of both users', async () => {
    const carol1 = observe(await newClient(world, 'sdk-carol'));
    const carol2Client = await newClient(world, 'sdk-carol');
    expect(carol2Client.state.state).toBe('awaiting-link');
    const code = carol2Client.linkCode!;
    const linked = await carol1.client.linkDevice(code);
    expect(linked).toEqual({ deviceId: carol2Client.deviceId, fingerprint: carol2Client.fingerprint });
    await carol2Client.linked;
    const carol2 = observe(carol2Client);
    const dave = observe(await newClient(world, 'sdk-dave'));
    await waitFor('carol2 online', () => (carol2.client.state.state === 'online' ? true : undefined));
    await dave.client.send('sdk-carol', 'to both of you');
    expect((await carol1.received(1))[0]!.body).toBe('to both of you');
    expect((await carol2.received(1))[0]!.body).toBe('to both of you');
    // A message from carol1 reaches dave and carol's other device.
    await carol1.client.send('sdk-dave', 'from carol');
    expect((await dave.received(1))[0]!.body).toBe('from carol');
    const copy = (await carol2.received(2))[1]!;
    expect(copy.body).toBe('from carol');
    expect(copy.from).toEqual({ userId: 'sdk-carol', deviceId: carol1.client.deviceId });
    // carol1 saw her second device being added.
    expect((await carol1.flagged('DEVICE_ADDED')).deviceId).toBe(carol2.client.deviceId);
    for (const c of [carol1, carol2, dave]) await c.client.close();
  });

  it('corrects a send the relay refused for a stale device list, from the verified list', async () => {
    const ann = observe(await newClient(world, 'sdk-ann'));
    const ben1 = observe(await newClient(world, 'sdk-ben'));
    await ann.client.send('sdk-ben', 'before');
    await ben1.received(1);
    // Ben links a second device; Ann's list of Ben's devices is now stale.
    const ben2Client = await newClient(world, 'sdk-ben');
    await ben1.client.linkDevice(ben2Client.linkCode!);
    await ben2Client.linked;
    const ben2 = observe(ben2Client);
    const sent = await ann.client.send('sdk-ben', 'after');
    expect(sent.recipient).toBe('sdk-ben');
    expect((await ben1.received(2))[1]!.body).toBe('after');
    expect((await ben2.received(1))[0]!.body).toBe('after');
    expect((await ann.flagged('DEVICE_ADDED')).deviceId).toBe(ben2Client.deviceId);
    for (const c of [ann, ben1, ben2]) await c.client.close();
  });

  it('keeps one store per device: reopening it resumes the same device and sessions', async () => {
    const store = new MemoryStore();
    const erin1 = await newClient(world, 'sdk-erin', { store });
    const deviceId = erin1.deviceId;
    const frank = observe(await newClient(world, 'sdk-frank'));
    await erin1.send('sdk-frank', 'first');
    await erin1.close();
    const erin2 = await newClient(world, 'sdk-erin', { store: reopened(store) });
    expect(erin2.deviceId).toBe(deviceId);
    await erin2.send('sdk-frank', 'second');
    expect((await frank.received(2)).map((m) => m.body)).toEqual(['first', 'second']);
    expect(frank.flags).toEqual([]);
    await erin2.close();
    await frank.client.close();
  });

  it('ends a messages() iterator that is waiting when the client closes', async () => {
    const gil = await newClient(world, 'sdk-gil', { connect: false });
    const waiting = gil.messages().next();
    await gil.close();
    expect(await waiting).toEqual({ value: undefined, done: true });
  });
});

/** The same memory, as a store that can be opened again after close. */
function reopened(store: MemoryStore): MemoryStore {
  return store;
}
