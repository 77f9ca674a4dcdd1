/**
 * SEND through a real relay, on each storage driver: idempotent resends answer with the
 * original STORED and store nothing new, until the TTL, after which a resend is new; a reused envelope id with other bytes is refused
 * and the original kept; the target list must be exactly the recipient's current
 * devices (minus the sending device when writing to one's own user); one SEND fans out
 * to several devices, each with its own mailbox sequence.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64url } from '../../protocol/base64url.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { DRIVERS, World, driverAvailable, firstDevice, hex, payload, targetsFor, text } from './world.js';

afterAll(async () => {
  await killAllRelays();
});

describe.each(DRIVERS)('SEND on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`SEND on ${driver.name}`);
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(driver);
  });

  afterAll(async () => {
    await world?.stop();
  });

  afterEach(async () => {
    world.closeClients();
    await world.expectRelaysUp();
  });

  it('a resend of the same envelope id and bytes returns the original STORED and stores nothing new', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const body = targetsFor(bob, () => payload('hello bob'));

    const first = await sender.sendAndWait(bob.userId, body);
    expect(first).toMatchObject({ type: 'stored', duplicate: false, recipients: [{ deviceId: 'd1', seq: 1 }] });
    const envelopeId = first.envelopeId as string;

    // The same envelope id again, twice: once on its own, once racing a fresh SEND.
    const idBytes = Buffer.from(envelopeId, 'base64url');
    const again = await sender.sendAndWait(bob.userId, body, { envelopeId: idBytes });
    expect(again).toMatchObject({ type: 'stored', envelopeId, duplicate: true, recipients: first.recipients, expiresAt: first.expiresAt });
    const a = sender.send(bob.userId, body, { envelopeId: idBytes });
    const b = sender.send(bob.userId, targetsFor(bob, () => payload('second')));
    const [againRacing, second] = await Promise.all([sender.answer(a.id), sender.answer(b.id)]);
    expect(againRacing).toMatchObject({ type: 'stored', duplicate: true, recipients: [{ deviceId: 'd1', seq: 1 }] });
    // The mailbox tail moved by one for the fresh SEND only.
    expect(second).toMatchObject({ type: 'stored', duplicate: false, recipients: [{ deviceId: 'd1', seq: 2 }] });

    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.delivered.map((d) => [d.seq, text(d.payload)])).toEqual([
      [1, 'hello bob'],
      [2, 'second'],
    ]);
    expect(encodeBase64url(reader.delivered[0]!.envelopeId)).toBe(envelopeId);
    expect(reader.json.find((f) => f.type === 'queue_empty')).toEqual({ type: 'queue_empty', through: 2 });
  });

  it('a resend at or after its expiresAt is a new SEND: stored anew, duplicate false, whatever the sweeper has done', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const body = targetsFor(bob, () => payload('short-lived'));
    const first = await sender.sendAndWait(bob.userId, body, { ttlSeconds: 1 });
    expect(first).toMatchObject({ type: 'stored', duplicate: false, recipients: [{ deviceId: 'd1', seq: 1 }] });
    const idBytes = Buffer.from(first.envelopeId as string, 'base64url');
    // The relay runs on this machine's clock: wait until the first one has expired.
    const expiresAt = first.expiresAt as number;
    while (Date.now() < expiresAt + 5) await new Promise((r) => setTimeout(r, expiresAt + 5 - Date.now()));

    const again = await sender.sendAndWait(bob.userId, body, { envelopeId: idBytes, ttlSeconds: 60 });
    expect(again).toMatchObject({ type: 'stored', envelopeId: first.envelopeId, duplicate: false, recipients: [{ deviceId: 'd1', seq: 2 }] });
    expect(again.expiresAt as number).toBeGreaterThan(expiresAt);
    // And from now on it answers as a resend of the new one.
    expect(await sender.sendAndWait(bob.userId, body, { envelopeId: idBytes, ttlSeconds: 60 })).toMatchObject({ duplicate: true, recipients: [{ deviceId: 'd1', seq: 2 }], expiresAt: again.expiresAt });

    // The reader is told the first one expired, and gets the second.
    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.stream()).toEqual(['expired 1-1', 'deliver 2', 'queue_empty 2']);
  });

  it('a resend inside one batch (same id sent twice back to back) stores once', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const envelopeId = new Uint8Array(16).fill(7);
    const body = targetsFor(bob, () => payload('once'));
    const ids = [1, 2, 3].map(() => sender.send(bob.userId, body, { envelopeId }).id);
    const answers = await Promise.all(ids.map((id) => sender.answer(id)));
    expect(answers.map((f) => f.type)).toEqual(['stored', 'stored', 'stored']);
    expect(answers.filter((f) => f.duplicate === false)).toHaveLength(1);
    for (const f of answers) expect(f.recipients).toEqual([{ deviceId: 'd1', seq: 1 }]);

    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.delivered.map((d) => d.seq)).toEqual([1]);
  });

  it('the same envelope id with different bytes is ENVELOPE_ID_CONFLICT and the original is kept', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob');
    const sender = await world.connect(alice);
    const envelopeId = new Uint8Array(16).fill(0xab);

    const first = await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('original')), { envelopeId });
    expect(first).toMatchObject({ type: 'stored', duplicate: false });
    const conflict = await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('forgery')), { envelopeId });
    expect(conflict).toMatchObject({ type: 'error', code: 'ENVELOPE_ID_CONFLICT', id: expect.any(Number) });
    // A different TTL with the same bytes is the same SEND: answered as a resend.
    const sameBytes = await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('original')), { envelopeId, ttlSeconds: 60 });
    expect(sameBytes).toMatchObject({ type: 'stored', duplicate: true, recipients: first.recipients });

    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.delivered.map((d) => [d.seq, hex(d.envelopeId), text(d.payload)])).toEqual([[1, hex(envelopeId), 'original']]);
    expect(reader.delivered[0]!.senderUserId).toBe(alice.userId);
    expect(reader.delivered[0]!.senderDeviceId).toBe(firstDevice(alice).deviceId);
  });

  it('envelope ids are scoped to the sending device: two devices may use the same id', async () => {
    const alice = await world.user('alice', 2);
    const bob = await world.user('bob');
    const envelopeId = new Uint8Array(16).fill(0x11);
    const s1 = await world.connect(alice, alice.devices[0]);
    const s2 = await world.connect(alice, alice.devices[1]);
    const r1 = await s1.sendAndWait(bob.userId, targetsFor(bob, () => payload('from d1')), { envelopeId });
    const r2 = await s2.sendAndWait(bob.userId, targetsFor(bob, () => payload('from d2')), { envelopeId });
    expect([r1.duplicate, r2.duplicate]).toEqual([false, false]);
    const reader = await world.connect(bob);
    await reader.waitJson((f) => f.type === 'queue_empty');
    expect(reader.delivered.map((d) => [d.senderDeviceId, text(d.payload)])).toEqual([
      ['d1', 'from d1'],
      ['d2', 'from d2'],
    ]);
  });

  it('targets must be exactly the recipient\'s current devices: DEVICE_LIST_MISMATCH lists them', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 2);
    const sender = await world.connect(alice);
    const p = (): Uint8Array => payload('x');

    // A device bob doesn't have.
    const extra = await sender.sendAndWait(bob.userId, [
      { deviceId: 'd1', payload: p() },
      { deviceId: 'd2', payload: p() },
      { deviceId: 'ghost', payload: p() },
    ]);
    expect(extra).toMatchObject({
      type: 'error',
      code: 'DEVICE_LIST_MISMATCH',
      details: { userId: bob.userId, missing: [], extra: ['ghost'] },
    });
    expect([...(extra.details.devices as string[])].sort()).toEqual(['d1', 'd2']);

    // Leaving one of bob's devices out.
    const missing = await sender.sendAndWait(bob.userId, [{ deviceId: 'd1', payload: p() }]);
    expect(missing).toMatchObject({ type: 'error', code: 'DEVICE_LIST_MISMATCH', details: { missing: ['d2'], extra: [] } });

    // Bob adds a device: the sender's old list is now stale; correcting it succeeds.
    await world.addDevice(bob);
    const stale = await sender.sendAndWait(bob.userId, targetsFor(bob, p, bob.devices.slice(0, 2)));
    expect(stale).toMatchObject({ type: 'error', code: 'DEVICE_LIST_MISMATCH', details: { missing: ['d3'], extra: [] } });
    expect([...(stale.details.devices as string[])].sort()).toEqual(['d1', 'd2', 'd3']);
    const fixed = await sender.sendAndWait(bob.userId, targetsFor(bob, p, bob.devices));
    expect(fixed).toMatchObject({ type: 'stored', duplicate: false });

    // A user with no devices at all, and a user id nobody has.
    const nobody = await sender.sendAndWait(`nobody-${bob.userId}`, [{ deviceId: 'd1', payload: p() }]);
    expect(nobody).toMatchObject({ type: 'error', code: 'DEVICE_LIST_MISMATCH', details: { devices: [], extra: ['d1'] } });

    // None of the refused SENDs stored anything: each device's first envelope is seq 1.
    expect(fixed.recipients).toEqual(bob.devices.map((d) => ({ deviceId: d.deviceId, seq: 1 })));
  });

  it('a refused SEND leaves the envelope id free: the corrected SEND with the same id is stored', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 2);
    const sender = await world.connect(alice);
    const envelopeId = new Uint8Array(16).fill(0x42);
    const wrong = await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('x'), bob.devices.slice(0, 1)), { envelopeId });
    expect(wrong.code).toBe('DEVICE_LIST_MISMATCH');
    const right = await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('x')), { envelopeId });
    expect(right).toMatchObject({ type: 'stored', duplicate: false });
  });

  it('sending to one\'s own user targets every other device and never the sending device', async () => {
    const alice = await world.user('alice', 3);
    const [d1, d2, d3] = alice.devices as [typeof alice.devices[0], typeof alice.devices[0], typeof alice.devices[0]];
    const sender = await world.connect(alice, d1);

    const withSelf = await sender.sendAndWait(alice.userId, targetsFor(alice, () => payload('sync')));
    expect(withSelf).toMatchObject({ code: 'DEVICE_LIST_MISMATCH', details: { missing: [], extra: ['d1'] } });
    expect([...(withSelf.details.devices as string[])].sort()).toEqual(['d2', 'd3']);

    const ok = await sender.sendAndWait(alice.userId, targetsFor(alice, (d) => payload(`sync for ${d.deviceId}`), [d2, d3]));
    expect(ok).toMatchObject({ type: 'stored', recipients: [{ deviceId: 'd2', seq: 1 }, { deviceId: 'd3', seq: 1 }] });

    // A user's only device writing to its own user has nobody to send to.
    const solo = await world.user('solo');
    const soloClient = await world.connect(solo);
    const none = await soloClient.sendAndWait(solo.userId, targetsFor(solo, () => payload('x')));
    expect(none).toMatchObject({ code: 'DEVICE_LIST_MISMATCH', details: { devices: [], extra: ['d1'] } });

    for (const d of [d2, d3]) {
      const r = await world.connect(alice, d);
      await r.waitJson((f) => f.type === 'queue_empty');
      expect(r.delivered.map((e) => [e.seq, text(e.payload)])).toEqual([[1, `sync for ${d.deviceId}`]]);
    }
  });

  it('one SEND to 3 devices gives each device its own sequence and its own bytes', async () => {
    const alice = await world.user('alice');
    const bob = await world.user('bob', 1);
    const sender = await world.connect(alice);
    // Bob's devices join one by one, so their mailboxes are at different tails.
    for (const label of ['one', 'two']) expect((await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload(label)))).type).toBe('stored');
    await world.addDevice(bob);
    expect((await sender.sendAndWait(bob.userId, targetsFor(bob, () => payload('three')))).recipients).toEqual([
      { deviceId: 'd1', seq: 3 },
      { deviceId: 'd2', seq: 1 },
    ]);
    await world.addDevice(bob);

    const fan = await sender.sendAndWait(bob.userId, targetsFor(bob, (d) => payload(`for ${d.deviceId}`)));
    expect(fan).toMatchObject({ type: 'stored', duplicate: false });
    expect(fan.recipients).toEqual([
      { deviceId: 'd1', seq: 4 },
      { deviceId: 'd2', seq: 2 },
      { deviceId: 'd3', seq: 1 },
    ]);

    const expected: Record<string, Array<[number, string]>> = {
      d1: [[1, 'one'], [2, 'two'], [3, 'three'], [4, 'for d1']],
      d2: [[1, 'three'], [2, 'for d2']],
      d3: [[1, 'for d3']],
    };
    for (const d of bob.devices) {
      const r = await world.connect(bob, d);
      await r.waitJson((f) => f.type === 'queue_empty');
      expect(r.delivered.map((e) => [e.seq, text(e.payload)])).toEqual(expected[d.deviceId]);
      expect(hex(r.delivered.at(-1)!.envelopeId)).toBe(hex(Buffer.from(fan.envelopeId as string, 'base64url')));
    }
  });
});
