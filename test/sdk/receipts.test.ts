/**
 * Signed delivery receipts and signed events end to end, through a real relay: an honest
 * run raises no flag; the sender verifies each receipt (and jose verifies it too); a
 * relay that alters an envelope is caught by the hash (TAMPERED), one that withholds it
 * by the deadline (MISSING_RECEIPT) and by the recipient (GAP).
 */
import { compactVerify, importJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ReceiptInfo, ManualClock, MemoryStore } from '../../client-sdk/node.js';
import { identityJwk, jwkThumbprint } from '../../crypto/evidence/jws.js';
import { NoteVerifier, leafHash, openCheckpoint, verifyInclusion } from '../../crypto/tlog/index.js';
import { IdentityKey } from '../../crypto/identity/identity-key.js';
import { decodeDeliver, encodeDeliver } from '../../protocol/envelopes.js';
import { killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, type TestClient, newClient, observe, startWorld, tappedTransport, waitFor } from './helpers.js';

/** Polls an async check until it gives a value (or times out). */
async function waitForAsync<T>(get: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

// One relay serves both blocks.
let world: SdkWorld;
beforeAll(async () => {
  world = await startWorld();
}, 60_000);
afterAll(async () => {
  await world?.relay.stop();
  killAllRelays();
});

describe('SDK receipts', () => {

  const receiptsOf = (t: TestClient) => {
    const got: ReceiptInfo[] = [];
    t.client.on('receipt', (r) => got.push(r));
    return got;
  };
  const online = (t: TestClient) => waitFor('online', () => (t.client.state.state === 'online' ? true : undefined));

  it('an honest exchange: every envelope gets a verified receipt back, jose verifies it, and no flag is raised', async () => {
    const alice = observe(await newClient(world, 'rc-alice'));
    const bob = observe(await newClient(world, 'rc-bob'));
    const got = receiptsOf(alice);
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.client.send('rc-bob', `hello ${i}`));
    await bob.received(5);
    expect(bob.messages.map((m) => m.number)).toEqual([1, 2, 3, 4, 5]);
    await waitFor('5 receipts', () => (got.length >= 5 ? true : undefined));
    expect(got.map((r) => r.envelopeId).sort()).toEqual(sent.map((s) => s.envelopeId).sort());
    for (const r of got) {
      expect(r).toMatchObject({ disposition: 'processed', flags: [], intact: true, recipient: { userId: 'rc-bob', deviceId: bob.client.deviceId } });
      expect(r.entry.messageNumber).toBeGreaterThanOrEqual(1);
    }
    // Any JOSE library verifies the receipt with the recipient device's public JWK.
    const [bobDevice] = await alice.client.devices('rc-bob');
    const jwk = identityJwk(bobDevice!.identityKey);
    const verified = await compactVerify(got[0]!.jws, await importJWK(jwk, 'EdDSA'));
    expect(verified.protectedHeader).toMatchObject({ alg: 'EdDSA', typ: 'hermetic-receipt+jws', kid: jwkThumbprint(IdentityKey.fromBytes(bobDevice!.identityKey)) });
    // Kept: the receipts of one message can be read back.
    expect((await alice.client.receipts({ messageId: sent[0]!.messageId })).map((r) => r.envelopeId)).toEqual([sent[0]!.envelopeId]);
    // Receipts go one way: none comes back for a receipt, and nothing is flagged.
    await new Promise((r) => setTimeout(r, 500));
    expect(alice.flags).toEqual([]);
    expect(bob.flags).toEqual([]);
    expect(bob.messages.every((m) => m.flags.length === 0)).toBe(true);
    await alice.client.close();
    await bob.client.close();
  });

  it('splits a batch whose receipt would not fit one log entry: every envelope still gets its receipt', async () => {
    // The longest ids make each entry large: 128 of them do not fit in 65,535 bytes. The
    // recipient's clock is manual, so all 130 entries are pending when it first flushes.
    const clock = new ManualClock(Date.now());
    const longUser = `rc-${'u'.repeat(124)}`;
    const sender = observe(await newClient(world, longUser, { deviceId: 'd'.repeat(64) }));
    const recipient = observe(await newClient(world, 'rc-batch', { clock }));
    const got = receiptsOf(sender);
    const sent = await Promise.all(Array.from({ length: 130 }, (_, i) => sender.client.send('rc-batch', `m${i}`)));
    await recipient.received(130, 60_000);
    await waitFor('130 receipts', () => {
      clock.advance(1_000);
      return got.length >= 130 ? true : undefined;
    }, 60_000);
    expect(new Set(got.map((r) => r.envelopeId))).toEqual(new Set(sent.map((x) => x.envelopeId)));
    const perJws = new Map<string, number>();
    for (const r of got) perJws.set(r.jws, (perJws.get(r.jws) ?? 0) + 1);
    for (const jws of perJws.keys()) expect(jws.length).toBeLessThanOrEqual(65_535);
    // The first flush had 128 entries (the most per receipt), which did not fit: it was split.
    expect(Math.max(...perJws.values())).toBeLessThan(128);
    expect(perJws.size).toBeGreaterThanOrEqual(2);
    expect(sender.flags).toEqual([]);
    await sender.client.close();
    await recipient.client.close();
  }, 120_000);

  it('receipts go to the relay log when the sender asks (logReceipt) or the recipient logs all; each is provably in a signed checkpoint', async () => {
    const gina = observe(await newClient(world, 'rc-gina'));
    const hugo = observe(await newClient(world, 'rc-hugo', { receipts: { log: 'all' } }));
    const ivan = observe(await newClient(world, 'rc-ivan'));
    const logged = (t: TestClient) => {
      const got: number[] = [];
      t.client.on('logged', (l) => got.push(...l.indexes));
      return got;
    };
    const ginaLogged = logged(gina);
    const hugoLogged = logged(hugo);
    const ivanLogged = logged(ivan);
    // Gina asks for the receipts of one message; Hugo logs every receipt he signs.
    const asked = await gina.client.send('rc-ivan', 'log this one', { logReceipt: true });
    await gina.client.send('rc-ivan', 'not this one');
    await gina.client.send('rc-hugo', 'hugo logs this');
    await ivan.received(2);
    await hugo.received(1);
    await waitFor('gina submitted', () => (ginaLogged.length >= 1 ? true : undefined));
    await waitFor('hugo submitted', () => (hugoLogged.length >= 1 ? true : undefined));
    expect(ivanLogged).toEqual([]);
    // What the log holds for Gina (a party of both): the receipts, verifiable offline.
    const token = await world.issuer.mint('rc-gina');
    const get = async (path: string) => {
      const res = await fetch(`${world.relay.baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status, path).toBe(200);
      return res;
    };
    const { receipts } = (await (await get('/v1/log/receipts?from=0&limit=256')).json()) as { receipts: Array<{ index: number; receipt: string }> };
    const ivanReceipt = (await gina.client.receipts({ messageId: asked.messageId }))[0]!;
    const inLog = receipts.find((r) => r.receipt === ivanReceipt.jws);
    expect(inLog).toBeDefined();
    const { origin, verifierKey } = (await (await get('/v1/log/key')).json()) as { origin: string; verifierKey: string };
    const verifier = NoteVerifier.parse(verifierKey);
    const checkpoint = await waitForAsync(async () => {
      const cp = openCheckpoint(await (await get('/v1/log/checkpoint')).text(), origin, [verifier]).checkpoint;
      return cp.size > inLog!.index ? cp : undefined;
    });
    const { hashes } = (await (await get(`/v1/log/proof/inclusion?index=${inLog!.index}&size=${checkpoint.size}`)).json()) as { hashes: string[] };
    verifyInclusion(leafHash(new TextEncoder().encode(inLog!.receipt)), inLog!.index, checkpoint.size, hashes.map((h) => new Uint8Array(Buffer.from(h, 'base64'))), checkpoint.rootHash);
    await gina.client.close();
    await hugo.client.close();
    await ivan.client.close();
  });

  it('a relay that alters an envelope: the recipient cannot decrypt it, and the sender sees TAMPERED from the hash in the receipt', async () => {
    const tap = tappedTransport();
    const carol = observe(await newClient(world, 'rc-carol'));
    const dave = observe(await newClient(world, 'rc-dave', { transport: tap.transport }));
    const got = receiptsOf(carol);
    await online(dave);
    await carol.client.send('rc-dave', 'first');
    await dave.received(1);
    tap.tamper = (frame) => {
      const d = decodeDeliver(frame);
      const payload = d.payload.slice();
      payload[payload.length - 1]! ^= 1;
      return encodeDeliver({ ...d, payload });
    };
    const second = await carol.client.send('rc-dave', 'second');
    const tampered = await carol.flagged('TAMPERED');
    expect(tampered.envelopeId).toBe(second.envelopeId);
    expect(tampered.evidence).toMatchObject({ envelopeId: second.envelopeId });
    expect((tampered.evidence as { sentSha256: string; receivedSha256: string }).sentSha256).not.toBe((tampered.evidence as { receivedSha256: string }).receivedSha256);
    await dave.flagged('DECRYPT_FAILED');
    const r = await waitFor('the receipt', () => got.find((x) => x.envelopeId === second.envelopeId));
    expect(r).toMatchObject({ disposition: 'rejected', reason: 'DECRYPT_FAILED', intact: false });
    expect(r.flags).toContain('TAMPERED');
    await carol.client.close();
    await dave.client.close();
  });

  it('a relay that withholds an envelope: MISSING_RECEIPT at the sender after the deadline, GAP at the recipient after the window', async () => {
    const clock = new ManualClock(Date.now());
    const tap = tappedTransport();
    const erin = observe(await newClient(world, 'rc-erin', { clock, receipts: { deadlineMs: 60_000 } }));
    const got = receiptsOf(erin);
    const frank = observe(await newClient(world, 'rc-frank', { transport: tap.transport, clock, receipts: { gapWindowMs: 5_000 } }));
    await online(frank);
    await erin.client.send('rc-frank', 'one');
    await frank.received(1);
    // The relay keeps the second envelope from Frank (it delivers the third under the
    // second's sequence: the mailbox looks whole, the sender's numbers do not).
    let dropped: string | undefined;
    tap.tamper = (frame) => {
      const d = decodeDeliver(frame);
      if (dropped === undefined) {
        dropped = Buffer.from(d.envelopeId).toString('base64url');
        return new Uint8Array(0);
      }
      return encodeDeliver({ ...d, seq: d.seq - 1 });
    };
    const two = await erin.client.send('rc-frank', 'two');
    await erin.client.send('rc-frank', 'three');
    await frank.received(2);
    expect(dropped).toBe(two.envelopeId);
    // (Frank's receipts go out on his clock's timer: the advance sends them.)
    clock.advance(6_000);
    const gap = await frank.flagged('GAP');
    expect(gap.evidence).toMatchObject({ kind: 'conversation', from: 2, to: 2, senderUserId: 'rc-erin' });
    await waitFor('receipts for one and three', () => (got.length >= 2 ? true : undefined));
    expect(got.map((r) => r.entry.messageNumber).sort()).toEqual([1, 3]);
    clock.advance(60_000);
    const missing = await erin.flagged('MISSING_RECEIPT');
    expect(missing.envelopeId).toBe(two.envelopeId);
    expect(erin.flags.filter((f) => f.code === 'MISSING_RECEIPT').map((f) => f.envelopeId)).toEqual([two.envelopeId]);
    await erin.client.close();
    await frank.client.close();
  });
});

describe('SDK signed events', () => {
  it('signs a hash chain of events; the receiver verifies, keeps the JWS, deduplicates by (source, id), and flags a reused id', async () => {
    const bank = observe(await newClient(world, 'ev-bank-a'));
    const other = observe(await newClient(world, 'ev-bank-b', { store: new MemoryStore() }));
    const first = await bank.client.sendEvent('ev-bank-b', { id: 'pay-1', type: 'com.example.payment', source: 'urn:bank-a:payments', data: { amount: '10.00' } });
    const second = await bank.client.sendEvent('ev-bank-b', { id: 'pay-2', type: 'com.example.payment', source: 'urn:bank-a:payments', data: { amount: '20.00' } });
    expect(second.event.sequence).toBe(first.event.sequence + 1);
    expect(second.event.previoushash).toBeDefined();
    const got = await other.received(2);
    expect(got.map((m) => (m.event?.event.data as { amount: string }).amount)).toEqual(['10.00', '20.00']);
    expect(got[0]!.event!.jws).toBe(first.jws);
    expect(got[0]!.kind).toBe('event');
    // A third party (here: the receiver's client) verifies the kept JWS offline.
    expect((await other.client.verifyEvent(got[1]!.event!.jws)).signer).toEqual({ userId: 'ev-bank-a', deviceId: bank.client.deviceId });
    // The same idempotency key again: not offered twice. With other content: flagged.
    await bank.client.sendEvent('ev-bank-b', { id: 'pay-2', type: 'com.example.payment', source: 'urn:bank-a:payments', data: { amount: '20.00' } });
    await bank.client.sendEvent('ev-bank-b', { id: 'pay-2', type: 'com.example.payment', source: 'urn:bank-a:payments', data: { amount: '99.00' } });
    const reused = await other.flagged('EVENT_ID_REUSED');
    expect(reused.evidence).toMatchObject({ source: 'urn:bank-a:payments', id: 'pay-2' });
    await bank.client.sendEvent('ev-bank-b', { id: 'pay-3', type: 'com.example.payment', source: 'urn:bank-a:payments', data: { amount: '30.00' } });
    await other.received(3);
    expect(other.messages.map((m) => m.event?.event.id)).toEqual(['pay-1', 'pay-2', 'pay-3']);
    expect(other.flags.map((f) => f.code)).toEqual(['EVENT_ID_REUSED']);
    // A forged JWS does not verify.
    const forged = got[0]!.event!.jws.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    await expect(other.client.verifyEvent(forged)).rejects.toMatchObject({ code: 'EVIDENCE_INVALID' });
    await bank.client.close();
    await other.client.close();
  });
});
