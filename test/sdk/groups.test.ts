/**
 * Groups on sender keys through a real relay: every member device (and the sender's other
 * devices) reads a group message; a member removed from the group cannot read what is
 * sent afterwards — not even given the ciphertext the relay carried to the others.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeSend, encodeDeliver } from '../../protocol/envelopes.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, newClient, observe, startWorld, tappedTransport, waitFor } from './helpers.js';

let world: SdkWorld;

beforeAll(async () => {
  world = await startWorld();
});

afterAll(async () => {
  await killAllRelays();
});

describe('SDK groups', () => {
  it('delivers to every member device; a removed member cannot read later messages', async () => {
    const tap = tappedTransport();
    const alice = observe(await newClient(world, 'g-alice', { transport: tap.transport }));
    const bobTap = tappedTransport();
    const bob = observe(await newClient(world, 'g-bob', { transport: bobTap.transport }));
    const carol = observe(await newClient(world, 'g-carol'));
    const carol2Client = await newClient(world, 'g-carol');
    await carol.client.linkDevice(carol2Client.linkCode!);
    await carol2Client.linked;
    const carol2 = observe(carol2Client);
    await waitFor('everyone online', () => ([alice, bob, carol, carol2].every((c) => c.client.state.state === 'online') ? true : undefined));

    const team = alice.client.group('team', ['g-alice', 'g-bob', 'g-carol']);
    const stored = await team.send('hello team');
    expect(stored.map((s) => s.recipient).sort()).toEqual(['g-bob', 'g-carol']);
    for (const c of [bob, carol, carol2]) {
      const [m] = await c.received(1);
      expect(m).toMatchObject({ body: 'hello team', groupId: 'team', from: { userId: 'g-alice', deviceId: alice.client.deviceId } });
    }
    // Bob replies to the group with his own sender key.
    await bob.client.group('team', ['g-alice', 'g-bob', 'g-carol']).send('hi from bob');
    expect((await alice.received(1))[0]).toMatchObject({ body: 'hi from bob', groupId: 'team' });
    expect((await carol2.received(2))[1]!.body).toBe('hi from bob');

    // Bob leaves. Alice's next message is sent under a new sender key, to Carol only.
    team.setMembers(['g-alice', 'g-carol']);
    const sentBefore = tap.sent.length;
    await team.send('bob is gone');
    expect((await carol.received(3))[2]!.body).toBe('bob is gone');
    expect((await carol2.received(3))[2]!.body).toBe('bob is gone');
    await new Promise((r) => setTimeout(r, 300));
    expect(bob.messages.map((m) => m.body)).toEqual(['hello team']);

    // Give Bob the ciphertext the relay carried to Carol, as if the relay delivered it to him.
    const groupSend = tap.sent.slice(sentBefore).map((f) => decodeSend(f)).find((f) => f.recipientUserId === 'g-carol' && f.targets[0]!.payload[0] === 0x14);
    expect(groupSend).toBeDefined();
    const lastSeq = Math.max(...bobTap.received.map((f) => new DataView(f.buffer, f.byteOffset).getUint32(5)));
    bobTap.inject(
      encodeDeliver({
        seq: lastSeq + 1,
        envelopeId: groupSend!.envelopeId,
        senderUserId: 'g-alice',
        senderDeviceId: alice.client.deviceId,
        storedAtMs: Date.now(),
        expiresAtMs: Date.now() + 60_000,
        payload: groupSend!.targets[0]!.payload,
      }),
    );
    const flag = await bob.flagged('DECRYPT_FAILED');
    expect(flag).toMatchObject({ userId: 'g-alice', deviceId: alice.client.deviceId });
    expect(bob.messages.map((m) => m.body)).toEqual(['hello team']);
    for (const c of [alice, bob, carol, carol2]) await c.client.close();
  });
});
