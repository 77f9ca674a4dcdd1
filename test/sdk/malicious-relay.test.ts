/**
 * A malicious relay (a proxy in front of a real relay process, that clients authenticate
 * through) drops, duplicates, delays, reorders, replays and alters DELIVERs and withholds
 * receipts; for each, the right party raises the right flag, naming the right envelope.
 * An honest run through the same proxy raises no flag at all.
 *
 * Clocks: where a window or a deadline matters, the parties share a ManualClock with
 * small policy windows. Receipts are signed and sent on the recipient's clock, so the
 * test advances it to send them, and waits for them before it advances past a deadline.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ClientOptions, type Flag, type ReceiptInfo, type SentInfo, ManualClock, MemoryStore, createClient } from '../../client-sdk/node.js';
import { EvilRelay } from '../helpers/evil-relay.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { killAllRelays, makeTempDir } from '../helpers/relay.js';
import { type TestClient, observe, waitFor } from './helpers.js';

let evil: EvilRelay;
let issuer: TestIssuer;
let db: TestDatabase;

interface Party extends TestClient {
  readonly receipts: ReceiptInfo[];
}

async function party(userId: string, extra: Partial<ClientOptions> = {}): Promise<Party> {
  const client = await createClient({ url: evil.url, userId, token: () => issuer.mint(userId), store: new MemoryStore(), ...extra });
  const t = observe(client);
  const receipts: ReceiptInfo[] = [];
  client.on('receipt', (r) => receipts.push(r));
  await waitFor(`${userId} online`, () => (client.state.state === 'online' ? true : undefined));
  return { ...t, receipts };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Moves a shared manual clock in steps, letting the sockets breathe between them (a ping
 * sent on the way is answered before the heartbeat would give up on the line). */
async function advance(clock: ManualClock, ms: number, step = 10_000): Promise<void> {
  for (let left = ms; left > 0; left -= step) {
    clock.advance(Math.min(step, left));
    await sleep(50);
  }
}

const receiptFor = (p: Party, envelopeId: string) => waitFor(`the receipt for ${envelopeId} at ${p.client.userId}`, () => p.receipts.find((r) => r.envelopeId === envelopeId));

/** The real relay's acknowledged sequence for a device, from its database. */
async function relayCursor(userId: string, deviceId: string): Promise<number> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    const r = await c.query<{ acked_seq: string }>('SELECT acked_seq FROM mailbox_cursors WHERE user_id = $1 AND device_id = $2', [userId, deviceId]);
    return Number(r.rows[0]?.acked_seq ?? 0);
  } finally {
    await c.end();
  }
}

/** Waits until the real relay stored `seq` as the device's acknowledged sequence. */
async function relayAcked(userId: string, deviceId: string, seq: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((await relayCursor(userId, deviceId)) !== seq) {
    if (Date.now() > deadline) throw new Error(`the relay's cursor for ${userId}/${deviceId} is ${await relayCursor(userId, deviceId)}, not ${seq}`);
    await sleep(50);
  }
}

const codes = (flags: readonly Flag[]) => flags.map((f) => f.code);

async function closeAll(...ps: Party[]): Promise<void> {
  for (const p of ps) await p.client.close();
}

/** A pairwise session both ways (so that later envelopes are plain ratchet messages). */
async function converse(a: Party, b: Party): Promise<void> {
  const na = a.messages.length;
  const nb = b.messages.length;
  await a.client.send(b.client.userId, 'hello');
  await b.received(nb + 1);
  await b.client.send(a.client.userId, 'hello back');
  await a.received(na + 1);
}

describePg('through a malicious relay', (server) => {
  beforeAll(async () => {
    db = await createTestDatabase(server);
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    evil = await EvilRelay.start({ databaseUrl: db.url, env: issuer.env });
  }, 60_000);

  afterAll(async () => {
    await evil?.stop();
    await killAllRelays();
    await db?.drop();
  });

  it('an honest run (messages both ways, a group message, a signed event) raises no flag on any party', async () => {
    const alice = await party('hr-alice');
    const bob = await party('hr-bob');
    const carol = await party('hr-carol');
    const sent: SentInfo[] = [];
    for (let i = 0; i < 8; i++) {
      sent.push(await alice.client.send('hr-bob', `a->b ${i}`));
      await bob.client.send('hr-alice', `b->a ${i}`);
    }
    const team = alice.client.group('hr-team', ['hr-alice', 'hr-bob', 'hr-carol']);
    const groupSent = await team.send('hello team');
    expect(groupSent.map((g) => g.recipient).sort()).toEqual(['hr-bob', 'hr-carol']);
    const ev = await alice.client.sendEvent('hr-bob', { id: 'ev-1', type: 'com.example.note', source: 'urn:hr:notes', data: { n: 1 } });
    await bob.received(10);
    await alice.received(8);
    await carol.received(1);
    expect(bob.messages.filter((m) => m.from.userId === 'hr-alice' && m.groupId === undefined && m.kind === 'text').map((m) => m.body)).toEqual(sent.map((_, i) => `a->b ${i}`));
    expect(bob.messages.map((m) => m.seq)).toEqual([...bob.messages.map((m) => m.seq)].sort((x, y) => x - y));
    expect(carol.messages[0]).toMatchObject({ body: 'hello team', groupId: 'hr-team' });
    expect(bob.messages.at(-1)!.event?.jws).toBe(ev.jws);
    // Every envelope alice sent to bob (8 messages, the group message, the event) and to
    // carol comes back with an intact receipt.
    for (const s of [...sent, ...groupSent, ev]) expect(await receiptFor(alice, s.envelopeId)).toMatchObject({ intact: true, flags: [], disposition: 'processed' });
    await waitFor('receipts at bob', () => (bob.receipts.length >= 8 ? true : undefined));
    await sleep(500);
    for (const p of [alice, bob, carol]) {
      expect(p.flags).toEqual([]);
      expect(p.messages.every((m) => m.flags.length === 0)).toBe(true);
      expect(p.receipts.every((r) => r.intact === true && r.flags.length === 0)).toBe(true);
    }
    expect(evil.undecoded).toBe(0);
    // Passed through: the numbering is the relay's, and the relay was told of every ACK.
    for (const p of [alice, bob, carol]) {
      const m = evil.mailbox(p.client.userId, p.client.deviceId)!;
      expect(m).toMatchObject({ offset: 0, relayAck: m.deviceAck, unacknowledged: 0 });
    }
    const bobBox = evil.mailbox('hr-bob', bob.client.deviceId)!;
    expect(bobBox.deviceAck).toBeGreaterThanOrEqual(Math.max(...bob.messages.map((m) => m.seq)));
    await relayAcked('hr-bob', bob.client.deviceId, bobBox.deviceAck);
    await closeAll(alice, bob, carol);
  });

  it('drop (hidden by renumbering): GAP at the recipient after its window, MISSING_RECEIPT for that envelope at the sender after its deadline', async () => {
    const clock = new ManualClock(Date.now());
    const erin = await party('dr-erin', { clock, receipts: { deadlineMs: 60_000 } });
    const frank = await party('dr-frank', { clock, receipts: { gapWindowMs: 5_000 } });
    await erin.client.send('dr-frank', 'one');
    await frank.received(1);
    const rule = evil.drop({ to: { userId: 'dr-frank' }, from: { userId: 'dr-erin' } });
    const two = await erin.client.send('dr-frank', 'two');
    const three = await erin.client.send('dr-frank', 'three');
    await frank.received(2);
    const [dropped] = await rule.acted();
    expect(dropped).toMatchObject({ kind: 'drop', envelopeId: two.envelopeId, to: { userId: 'dr-frank', deviceId: frank.client.deviceId } });
    // Hidden: three came at the sequence two would have had; the mailbox shows no hole.
    expect(frank.messages.map((m) => m.body)).toEqual(['one', 'three']);
    expect(frank.messages[1]!.seq).toBe(dropped!.seq);
    expect(frank.messages[1]!.seq).toBe(frank.messages[0]!.seq + 1);
    expect(frank.flags).toEqual([]);
    // The relay was told of the acknowledgement through the dropped envelope too.
    const box = await waitFor('the ACK through three', () => {
      const m = evil.mailbox('dr-frank', frank.client.deviceId)!;
      return m.deviceAck === frank.messages[1]!.seq ? m : undefined;
    });
    expect(box).toMatchObject({ offset: -1, relayAck: box.deviceAck + 1, unacknowledged: 0 });
    // ... and the real relay removed all three (its cursor is past the one it never delivered).
    await relayAcked('dr-frank', frank.client.deviceId, box.relayAck);
    await advance(clock, 6_000, 1_000);
    const gap = await frank.flagged('GAP');
    expect(gap.evidence).toMatchObject({ kind: 'conversation', from: 2, to: 2, senderUserId: 'dr-erin', senderDeviceId: erin.client.deviceId });
    expect(codes(frank.flags)).toEqual(['GAP']);
    await receiptFor(erin, three.envelopeId);
    expect(erin.receipts.map((r) => r.entry.messageNumber).sort()).toEqual([1, 3]);
    expect(erin.flags).toEqual([]);
    await advance(clock, 60_000);
    const missing = await erin.flagged('MISSING_RECEIPT');
    expect(missing).toMatchObject({ envelopeId: two.envelopeId, userId: 'dr-frank', deviceId: frank.client.deviceId });
    expect(missing.evidence).toMatchObject({ envelopeId: two.envelopeId, messageId: two.messageId });
    expect(codes(erin.flags)).toEqual(['MISSING_RECEIPT']);
    await closeAll(erin, frank);
  });

  it('drop of one member device copy of a group message: MISSING_RECEIPT for that device only (numbers in a group may skip, so no GAP)', async () => {
    const clock = new ManualClock(Date.now());
    const uma = await party('dg-uma', { clock, receipts: { deadlineMs: 60_000 } });
    const vic = await party('dg-vic', { clock, receipts: { gapWindowMs: 5_000, flushDelayMs: 0 } });
    const wes = await party('dg-wes', { clock, receipts: { flushDelayMs: 0 } });
    const team = uma.client.group('dg-team', ['dg-uma', 'dg-vic', 'dg-wes']);
    await team.send('one');
    await vic.received(1);
    await wes.received(1);
    const rule = evil.drop({ to: { userId: 'dg-vic' } });
    const second = await team.send('two');
    await team.send('three');
    await vic.received(2);
    await wes.received(3);
    const [dropped] = await rule.acted();
    expect(dropped!.envelopeId).toBe(second.find((s) => s.recipient === 'dg-vic')!.envelopeId);
    await advance(clock, 6_000, 1_000);
    await waitFor('receipts from wes for all three', () => (uma.receipts.filter((r) => r.recipient.userId === 'dg-wes').length >= 3 ? true : undefined));
    await advance(clock, 60_000);
    const missing = await uma.flagged('MISSING_RECEIPT');
    expect(missing).toMatchObject({ envelopeId: dropped!.envelopeId, userId: 'dg-vic', deviceId: vic.client.deviceId });
    await sleep(200);
    expect(codes(uma.flags)).toEqual(['MISSING_RECEIPT']);
    expect(vic.flags).toEqual([]);
    expect(wes.flags).toEqual([]);
    await closeAll(uma, vic, wes);
  });

  it('drop (not hidden): GAP for the mailbox sequence and for the message number', async () => {
    const clock = new ManualClock(Date.now());
    const gina = await party('dn-gina', { clock });
    const hank = await party('dn-hank', { clock, receipts: { gapWindowMs: 5_000 } });
    await gina.client.send('dn-hank', 'one');
    await hank.received(1);
    const rule = evil.drop({ to: { userId: 'dn-hank' } }, { hide: false });
    await gina.client.send('dn-hank', 'two');
    await gina.client.send('dn-hank', 'three');
    await hank.received(2);
    const [dropped] = await rule.acted();
    expect(hank.messages[1]!.seq).toBe(dropped!.seq! + 1);
    await advance(clock, 6_000, 1_000);
    await waitFor('two GAPs', () => (hank.flags.length >= 2 ? true : undefined));
    const gaps = hank.flags.filter((f) => f.code === 'GAP').map((f) => f.evidence);
    expect(gaps).toHaveLength(2);
    expect(gaps).toContainEqual(expect.objectContaining({ kind: 'mailbox', from: dropped!.seq, to: dropped!.seq }));
    expect(gaps).toContainEqual(expect.objectContaining({ kind: 'conversation', from: 2, to: 2, senderUserId: 'dn-gina' }));
    await closeAll(gina, hank);
  });

  it('duplicate: the same envelope again at a new sequence is DUPLICATE at the recipient, offered once, and reported to the sender', async () => {
    const ida = await party('du-ida');
    const jack = await party('du-jack');
    const rule = evil.duplicate({ to: { userId: 'du-jack' } });
    const sent = await ida.client.send('du-jack', 'once');
    await jack.received(1);
    const [dup] = await rule.acted();
    const flag = await jack.flagged('DUPLICATE');
    expect(flag).toMatchObject({ envelopeId: sent.envelopeId, seq: dup!.seq, userId: 'du-ida', deviceId: ida.client.deviceId });
    expect(flag.evidence).toMatchObject({ firstSeq: jack.messages[0]!.seq });
    expect(dup!.seq).toBe(jack.messages[0]!.seq + 1);
    // The sender: the receipt for the delivery (processed, intact), and DUPLICATE from
    // the entry about the second delivery, signed by jack's device.
    expect(await receiptFor(ida, sent.envelopeId)).toMatchObject({ disposition: 'processed', intact: true, flags: [], entry: { seq: jack.messages[0]!.seq } });
    const reported = await ida.flagged('DUPLICATE');
    expect(reported).toMatchObject({ envelopeId: sent.envelopeId, seq: dup!.seq, userId: 'du-jack', deviceId: jack.client.deviceId });
    expect(reported.evidence).toMatchObject({ firstSeq: jack.messages[0]!.seq, entry: { disposition: 'rejected', reason: 'DUPLICATE', seq: dup!.seq } });
    // Receipts keep coming after it.
    const next = await ida.client.send('du-jack', 'twice?');
    expect(await receiptFor(ida, next.envelopeId)).toMatchObject({ disposition: 'processed', intact: true, flags: [] });
    await sleep(300);
    expect(jack.messages.map((m) => m.body)).toEqual(['once', 'twice?']);
    expect(codes(jack.flags)).toEqual(['DUPLICATE']);
    expect(codes(ida.flags)).toEqual(['DUPLICATE']);
    expect(ida.receipts.map((r) => r.envelopeId)).toEqual([sent.envelopeId, next.envelopeId]);
    await closeAll(ida, jack);
  });

  it('replay: an old envelope again (same bytes, new sequence) is REPLAY under a fresh id, DUPLICATE under its own', async () => {
    const kate = await party('rp-kate');
    const liam = await party('rp-liam');
    await converse(kate, liam);
    const old = await kate.client.send('rp-liam', 'pay 10');
    await liam.received(2);
    const original = await receiptFor(kate, old.envelopeId);
    const replay = evil.replay(old.envelopeId, { userId: 'rp-liam' });
    const flag = await liam.flagged('REPLAY');
    expect(flag).toMatchObject({ envelopeId: replay.deliveredAs, seq: replay.seq, userId: 'rp-kate', deviceId: kate.client.deviceId });
    // The sender hears of it in the signed receipt; its hash is that of the old envelope.
    const reported = await kate.flagged('REPLAY');
    expect(reported).toMatchObject({ envelopeId: replay.deliveredAs, userId: 'rp-liam', deviceId: liam.client.deviceId });
    expect((reported.evidence as { entry: { sha256: string } }).entry.sha256).toBe(original.entry.sha256);
    const again = evil.replay(old.envelopeId, { userId: 'rp-liam' }, { freshEnvelopeId: false });
    const dup = await liam.flagged('DUPLICATE');
    expect(dup).toMatchObject({ envelopeId: old.envelopeId, seq: again.seq });
    expect(await kate.flagged('DUPLICATE')).toMatchObject({ envelopeId: old.envelopeId, seq: again.seq, userId: 'rp-liam' });
    await sleep(300);
    expect(liam.messages.map((m) => m.body)).toEqual(['hello', 'pay 10']);
    expect(codes(liam.flags)).toEqual(['REPLAY', 'DUPLICATE']);
    await closeAll(kate, liam);
  });

  for (const hide of [false, true]) {
    it(`reorder${hide ? ' (sequences swapped too)' : ''}: the one that came late is REORDERED, at both ends, and no GAP once filled`, async () => {
      const clock = new ManualClock(Date.now());
      const u = hide ? 'rh' : 'ro';
      const mia = await party(`${u}-mia`, { clock });
      const ned = await party(`${u}-ned`, { clock, receipts: { gapWindowMs: 5_000, flushDelayMs: 0 } });
      await mia.client.send(ned.client.userId, 'first');
      await ned.received(1);
      const rule = evil.reorder({ to: { userId: ned.client.userId } }, { hide });
      const a = await mia.client.send(ned.client.userId, 'a');
      const b = await mia.client.send(ned.client.userId, 'b');
      await ned.received(3);
      const [heldA, wentFirst] = await rule.acted(2);
      expect([heldA!.envelopeId, wentFirst!.envelopeId]).toEqual([a.envelopeId, b.envelopeId]);
      expect(ned.messages.map((m) => m.body)).toEqual(['first', 'b', 'a']);
      const late = ned.messages[2]!;
      expect(late).toMatchObject({ envelopeId: a.envelopeId, number: 2, flags: ['REORDERED'] });
      // In the mailbox's numbering: out of order, or (swapped) in order.
      expect(late.seq).toBe(hide ? ned.messages[1]!.seq + 1 : ned.messages[1]!.seq - 1);
      const flag = await ned.flagged('REORDERED');
      expect(flag).toMatchObject({ envelopeId: a.envelopeId, seq: late.seq, userId: mia.client.userId });
      expect(flag.evidence).toMatchObject({ number: 2 });
      await advance(clock, 6_000, 1_000);
      expect(await receiptFor(mia, a.envelopeId)).toMatchObject({ flags: ['REORDERED'], intact: true });
      expect(await mia.flagged('REORDERED')).toMatchObject({ envelopeId: a.envelopeId, userId: ned.client.userId });
      expect(codes(ned.flags)).toEqual(['REORDERED']);
      expect(codes(mia.flags)).toEqual(['REORDERED']);
      await closeAll(mia, ned);
    });
  }

  it('delay beyond lateAfterMs: LATE at the recipient, and at the sender from the signed receipt', async () => {
    const clock = new ManualClock(Date.now());
    const olga = await party('dl-olga', { clock });
    const pete = await party('dl-pete', { clock, receipts: { lateAfterMs: 5_000, flushDelayMs: 0 } });
    const rule = evil.delay({ to: { userId: 'dl-pete' }, from: { userId: 'dl-olga' } });
    const sent = await olga.client.send('dl-pete', 'slow');
    await rule.acted();
    await sleep(100);
    expect(pete.messages).toHaveLength(0);
    await advance(clock, 6_000, 1_000);
    rule.release();
    const [m] = await pete.received(1);
    expect(m).toMatchObject({ envelopeId: sent.envelopeId, flags: ['LATE'] });
    expect(m!.receivedAt - m!.sentAt).toBeGreaterThan(5_000);
    const flag = await pete.flagged('LATE');
    expect(flag).toMatchObject({ envelopeId: sent.envelopeId, userId: 'dl-olga' });
    await advance(clock, 1_000, 1_000);
    expect(await receiptFor(olga, sent.envelopeId)).toMatchObject({ flags: ['LATE'], intact: true, disposition: 'processed' });
    const reported = await olga.flagged('LATE');
    expect(reported).toMatchObject({ envelopeId: sent.envelopeId, userId: 'dl-pete', deviceId: pete.client.deviceId });
    expect(codes(pete.flags)).toEqual(['LATE']);
    expect(codes(olga.flags)).toEqual(['LATE']);
    await closeAll(olga, pete);
  });

  it('alter: DECRYPT_FAILED at the recipient, TAMPERED at the sender (the hashes differ)', async () => {
    const quinn = await party('al-quinn');
    const rosa = await party('al-rosa');
    await converse(quinn, rosa);
    const rule = evil.alter({ to: { userId: 'al-rosa' }, from: { userId: 'al-quinn' } });
    const sent = await quinn.client.send('al-rosa', 'pay 10');
    const [altered] = await rule.acted();
    expect(altered!.envelopeId).toBe(sent.envelopeId);
    const failed = await rosa.flagged('DECRYPT_FAILED');
    expect(failed).toMatchObject({ envelopeId: sent.envelopeId, seq: altered!.seq, userId: 'al-quinn' });
    const tampered = await quinn.flagged('TAMPERED');
    expect(tampered).toMatchObject({ envelopeId: sent.envelopeId, userId: 'al-rosa', deviceId: rosa.client.deviceId });
    const ev = tampered.evidence as { sentSha256: string; receivedSha256: string };
    expect(ev.sentSha256).not.toBe(ev.receivedSha256);
    expect(await receiptFor(quinn, sent.envelopeId)).toMatchObject({ disposition: 'rejected', reason: 'DECRYPT_FAILED', intact: false });
    expect(rosa.messages.map((m) => m.body)).toEqual(['hello']);
    await closeAll(quinn, rosa);
  });

  it('withheld receipts: MISSING_RECEIPT for each envelope, and nothing else on either side', async () => {
    const clock = new ManualClock(Date.now());
    const sara = await party('wr-sara', { clock, receipts: { deadlineMs: 60_000 } });
    const tom = await party('wr-tom', { clock, receipts: { flushDelayMs: 0 } });
    const rule = evil.withhold({ userId: 'wr-tom' }, { toUser: 'wr-sara' });
    const sent = [await sara.client.send('wr-tom', 'one'), await sara.client.send('wr-tom', 'two')];
    await tom.received(2);
    await advance(clock, 1_000, 1_000);
    await rule.acted();
    await advance(clock, 61_000);
    await waitFor('two MISSING_RECEIPT', () => (sara.flags.length >= 2 ? true : undefined));
    await sleep(200);
    expect(codes(sara.flags)).toEqual(['MISSING_RECEIPT', 'MISSING_RECEIPT']);
    expect(sara.flags.map((f) => f.envelopeId).sort()).toEqual(sent.map((s) => s.envelopeId).sort());
    expect(sara.flags.every((f) => f.userId === 'wr-tom' && f.deviceId === tom.client.deviceId)).toBe(true);
    expect(sara.receipts).toEqual([]);
    expect(tom.flags).toEqual([]);
    expect(tom.messages.map((m) => m.flags)).toEqual([[], []]);
    await closeAll(sara, tom);
  });
});
