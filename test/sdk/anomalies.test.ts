/**
 * The recipient's anomaly tracking, the sender's receipt matching and signed-event
 * receiving, on a real store without a relay: the cases an attack review found, each
 * with the behaviour it must have.
 */
import { describe, expect, it } from 'vitest';
import { Anomalies } from '../../client-sdk/anomalies.js';
import { FlagQueue, type Flag } from '../../client-sdk/flags.js';
import { RECEIPT_DEFAULTS, Receipts } from '../../client-sdk/receipts.js';
import { SignedEvents } from '../../client-sdk/signed-events.js';
import { MemoryStore } from '../../client-sdk/stores/memory.js';
import { Transactor } from '../../client-sdk/stores/store.js';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { signEvent } from '../../crypto/evidence/event.js';
import { signReceipt } from '../../crypto/evidence/receipt.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { defaultBackend } from '../../crypto/primitives/index.js';

const policy = { ...RECEIPT_DEFAULTS, gapWindowMs: 1_000, lateAfterMs: 60_000, clockSkewMs: 10_000 };
const db = () => new Transactor(new MemoryStore());

describe('anomalies', () => {
  const msg = (number: number, seq: number, now: number, extra: Partial<Parameters<Anomalies['message']>[1]> = {}) => ({
    senderUserId: 'alice',
    senderDeviceId: 'a1',
    conversation: 'u:bob',
    group: false,
    number,
    seq,
    senderKey: 'k1',
    sentAt: now,
    storedAt: now,
    expiresAt: now + 3600_000,
    connectedAt: 0,
    now,
    ...extra,
  });

  it('a hole is a GAP once after the window; what fills it later is REORDERED, never REPLAY; a number seen twice is REPLAY', async () => {
    const a = new Anomalies(policy);
    const t = db();
    expect(await t.run((tx) => a.message(tx, msg(1, 1, 0)))).toEqual([]);
    expect(await t.run((tx) => a.message(tx, msg(3, 2, 10)))).toEqual([]);
    expect(await t.run((tx) => a.dueGaps(tx, 500))).toEqual([]);
    const gaps = await t.run((tx) => a.dueGaps(tx, 2_000));
    expect(gaps).toEqual([expect.objectContaining({ kind: 'conversation', from: 2, to: 2, senderUserId: 'alice' })]);
    expect(await t.run((tx) => a.dueGaps(tx, 10_000))).toEqual([]);
    expect(await t.run((tx) => a.message(tx, msg(2, 3, 20_000)))).toEqual(['REORDERED']);
    expect(await t.run((tx) => a.message(tx, msg(2, 4, 20_001)))).toEqual(['REPLAY']);
  });

  it('LATE counts the delivery leg only: not the time this device was offline', async () => {
    const a = new Anomalies(policy);
    const t = db();
    // Stored an hour before this device connected, delivered right after: not late.
    expect(await t.run((tx) => a.message(tx, msg(1, 1, 3_610_000, { sentAt: 0, storedAt: 0, connectedAt: 3_600_000 })))).toEqual([]);
    // Stored while connected, held back two minutes by the relay: late.
    expect(await t.run((tx) => a.message(tx, msg(2, 2, 3_820_000, { sentAt: 3_700_000, storedAt: 3_700_000, connectedAt: 3_600_000 })))).toEqual(['LATE']);
  });

  it('an expiry announcement explains a mailbox hole; an unexplained one is a GAP', async () => {
    const a = new Anomalies(policy);
    const t = db();
    await t.run((tx) => a.mailboxSeq(tx, 1, 0));
    await t.run((tx) => a.mailboxSeq(tx, 4, 0));
    await t.run((tx) => a.mailboxExpired(tx, 5, 6, 0));
    await t.run((tx) => a.mailboxSeq(tx, 9, 0));
    const gaps = await t.run((tx) => a.dueGaps(tx, 5_000));
    expect(gaps.map((g) => [g.kind, g.from, g.to])).toEqual([
      ['mailbox', 2, 3],
      ['mailbox', 7, 8],
    ]);
    expect(await t.run((tx) => a.mailboxSeq(tx, 2, 6_000))).toEqual(['REORDERED']);
    expect(await t.run((tx) => a.mailboxSeq(tx, 1, 6_000))).toEqual(['DUPLICATE']);
  });
});

describe('receipts at the sender', () => {
  const me = { user: 'alice', device: 'a1' };
  const bob = IdentityKeyPair.generate();
  const env = encodeBase64url(new Uint8Array(16).fill(1));
  const sent = new Uint8Array([1, 2, 3]);
  const entry = (envelopeId: string, sha256: string) => ({
    envelopeId,
    sha256,
    seq: 1,
    sender: me,
    storedAt: 1,
    receivedAt: 2,
    disposition: 'processed' as const,
    flags: ['LATE' as const],
  });
  const setup = () => {
    const flags: Flag[] = [];
    const q = new FlagQueue(() => 1_000);
    const r = new Receipts({ ...policy, deadlineMs: 1_000 }, defaultBackend, q, me.user, me.device);
    return { r, q, flags };
  };

  it('ignores entries about envelopes it did not send (no flag, nothing kept); checks a late receipt against the kept hash', async () => {
    const t = db();
    const { r } = setup();
    await t.run(async (tx) => r.awaitReceipts(tx, { envelopeId: new Uint8Array(16).fill(1), recipient: 'bob', messageId: new Uint8Array(16), targets: [{ deviceId: 'b1', payload: sent }], log: false, ttlSeconds: 3600 }, 0, 0));
    // A receipt naming 100 envelopes never sent: nothing.
    const unknown = Array.from({ length: 100 }, (_, i) => entry(encodeBase64url(new Uint8Array(16).fill(i + 2)), encodeBase64url(new Uint8Array(32))));
    const forged = signReceipt(bob, { v: 1, recipient: { user: 'bob', device: 'b1' }, issuedAt: 3, entries: unknown });
    expect(await t.run((tx) => r.received(tx, forged, { userId: 'bob', deviceId: 'b1' }, bob.publicKey, 5))).toEqual([]);
    expect((await t.run((tx) => FlagQueue.pending(tx))).length).toBe(0);
    // Past the deadline: MISSING_RECEIPT, once; the hash is kept.
    expect(await t.run((tx) => r.sweepMissing(tx, 2_000))).toBe(1);
    expect(await t.run((tx) => r.sweepMissing(tx, 3_000))).toBe(0);
    // The receipt comes late, naming other bytes: still TAMPERED.
    const late = signReceipt(bob, { v: 1, recipient: { user: 'bob', device: 'b1' }, issuedAt: 3, entries: [entry(env, encodeBase64url(new Uint8Array(32).fill(9)))] });
    const infos = await t.run((tx) => r.received(tx, late, { userId: 'bob', deviceId: 'b1' }, bob.publicKey, 4_000));
    expect(infos).toEqual([expect.objectContaining({ envelopeId: env, intact: false, late: true })]);
    const codes = (await t.run((tx) => FlagQueue.pending(tx))).map((p) => p.flag.code);
    expect(codes.sort()).toEqual(['LATE', 'MISSING_RECEIPT', 'TAMPERED']);
    // Read back: the recipient as signed, whatever characters its id has.
    expect((await t.run((tx) => r.list(tx)))[0]!.recipient).toEqual({ userId: 'bob', deviceId: 'b1' });
  });

  it('keeps every flag when many are raised in one millisecond', async () => {
    const t = db();
    const q = new FlagQueue(() => 42);
    await t.run((tx) => {
      for (let i = 0; i < 2_500; i++) q.add(tx, { code: 'GAP', userId: 'x', at: 42, detail: String(i) });
    });
    const pending = await t.run((tx) => FlagQueue.pending(tx));
    expect(pending.map((p) => Number(p.flag.detail))).toEqual(Array.from({ length: 2_500 }, (_, i) => i));
  });
});

describe('signed events at the receiver', () => {
  const bank = IdentityKeyPair.generate();
  const mallory = IdentityKeyPair.generate();
  const event = (signeruser: string, signerdevice: string, id: string, sequence: number, data: unknown, previoushash?: string) => ({
    specversion: '1.0' as const,
    id,
    source: 'urn:bank-a:payments',
    type: 'payment',
    time: '2026-11-30T00:00:00Z',
    datacontenttype: 'application/json' as const,
    data,
    sequence,
    ...(previoushash === undefined ? {} : { previoushash }),
    signeruser,
    signerdevice,
  });

  it("another user's event with the same source and id does not suppress the real one; key order does not make content differ", async () => {
    const t = db();
    const ev = new SignedEvents(defaultBackend, IdentityKeyPair.generate(), 'bob', 'b1');
    const fake = signEvent(mallory, event('mallory', 'm1', 'pay-1', 1, { amount: '1' }));
    const real = signEvent(bank, event('bank-a', 'g1', 'pay-1', 1, { amount: '100', currency: 'EUR' }));
    const r1 = await t.run((tx) => ev.receive(tx, fake, { userId: 'mallory', deviceId: 'm1' }, 'u:bob', mallory.publicKey, 1));
    const r2 = await t.run((tx) => ev.receive(tx, real, { userId: 'bank-a', deviceId: 'g1' }, 'u:bob', bank.publicKey, 2));
    expect(r1).toMatchObject({ ok: true, duplicate: false, flags: [] });
    expect(r2).toMatchObject({ ok: true, duplicate: false, flags: [] });
    // The bank retries with the same content, members in another order: a duplicate, not a reuse.
    const again = signEvent(bank, event('bank-a', 'g1', 'pay-1', 2, { currency: 'EUR', amount: '100' }, (r2 as { hash: string }).hash));
    expect(await t.run((tx) => ev.receive(tx, again, { userId: 'bank-a', deviceId: 'g1' }, 'u:bob', bank.publicKey, 3))).toMatchObject({ ok: true, duplicate: true, flags: [] });
  });

  it('data nested too deep is refused as input (an EvidenceError), never a stack overflow', async () => {
    const t = db();
    const ev = new SignedEvents(defaultBackend, IdentityKeyPair.generate(), 'bob', 'b1');
    let deep: unknown = 1;
    for (let i = 0; i < 20_000; i++) deep = [deep];
    expect(() => signEvent(bank, event('bank-a', 'g1', 'x', 1, deep))).toThrow(EvidenceError);
    // Signed by hand, as a hostile peer would.
    const enc = (o: unknown) => encodeBase64url(new TextEncoder().encode(typeof o === 'string' ? o : JSON.stringify(o)));
    const header = enc({ alg: 'EdDSA', typ: 'hermetic-event+jws', kid: (await import('../../crypto/evidence/jws.js')).jwkThumbprint(bank.publicKey) });
    const body = enc(`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2026-11-30T00:00:00Z","datacontenttype":"application/json","data":${'['.repeat(20_000)}${']'.repeat(20_000)},"sequence":1,"signeruser":"bank-a","signerdevice":"g1"}`);
    const jws = `${header}.${body}.${encodeBase64url(bank.sign(new TextEncoder().encode(`${header}.${body}`)))}`;
    const r = await t.run((tx) => ev.receive(tx, jws, { userId: 'bank-a', deviceId: 'g1' }, 'u:bob', bank.publicKey, 1));
    expect(r).toMatchObject({ ok: false, error: 'INVALID_EVENT' });
  });
});
