/**
 * The receipt log through a real relay, on each storage driver: receipts for envelopes
 * really sent and delivered are appended; inclusion proofs verify against checkpoints
 * signed by the log's key, consistency proofs between checkpoints verify, resubmission
 * keeps the index; every kind of refusal has its code; hash tiles recompute the
 * checkpoint's root; data tiles and the full receipt listing need the auditor claim.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jwkThumbprint } from '../../crypto/evidence/jws.js';
import { signReceipt } from '../../crypto/evidence/receipt.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { leafHash, rootOf, verifyConsistency, verifyInclusion } from '../../crypto/tlog/merkle.js';
import { verifyTlogProof } from '../../crypto/tlog/proof-format.js';
import { TileSet, formatTilePath, tilesForSize, verifyEntryBundle, verifyTiles } from '../../crypto/tlog/tiles.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import {
  MAX_LOG_ENTRY_BYTES,
  MAX_RECEIPTS_PER_SUBMIT,
  decodeCheckpointsAnswer,
  decodeConsistencyProofAnswer,
  decodeInclusionProofAnswer,
  decodeReceiptsAnswer,
} from '../../protocol/log.js';
import type { TestDevice } from '../helpers/device.js';
import { expectError, request } from '../helpers/http.js';
import { pgMissing } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import {
  type LogIdentity,
  fromB64,
  latestCheckpoint,
  logIdentity,
  receiptPayload,
  signedReceipt,
  submitOk,
  submitReceipts,
  verifyCheckpoint,
} from '../helpers/receipt-log.js';
import { DRIVERS, type TestUser, World, driverAvailable, firstDevice, metric, sendMany } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

const encoder = new TextEncoder();
const leafOf = (jws: string): Uint8Array => leafHash(encoder.encode(jws));

describe.each(DRIVERS)('receipt log on $name', (driver) => {
  if (!driverAvailable(driver)) {
    pgMissing(`receipt log on ${driver.name}`);
    return;
  }

  let world: World;
  let id: LogIdentity;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let bobPhone: TestDevice;
  let bobLaptop: TestDevice;
  /** Envelopes alice sent to bob's phone (before bob added his laptop). */
  let toBob: DeliverFrame[];
  /** One envelope alice sent to carol. */
  let toCarol: DeliverFrame[];
  let auditorToken: string;

  const url = (): string => world.relay.baseUrl;

  beforeAll(async () => {
    world = await World.start(driver, { env: { HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: '200' } });
    alice = await world.user('alice');
    bob = await world.user('bob');
    carol = await world.user('carol');
    bobPhone = firstDevice(bob);
    const sender = await world.connect(alice);
    await sendMany(sender, bob, 6, 'to bob');
    await sendMany(sender, carol, 1, 'to carol');
    const bobReader = await world.connect(bob, bobPhone);
    toBob = [...(await bobReader.waitDelivered(6))];
    const carolReader = await world.connect(carol);
    toCarol = [...(await carolReader.waitDelivered(1))];
    world.closeClients();
    // Added after the envelopes were sent: none of them was delivered to it.
    bobLaptop = await world.addDevice(bob);
    id = await logIdentity(url());
    auditorToken = await world.issuer.mint(`auditor-${driver.name}`, { claims: { hermetic_auditor: true } });
  });

  afterAll(async () => {
    await world?.stop();
  });

  it('appends a receipt for delivered envelopes; its inclusion proof verifies against a signed checkpoint; resubmission keeps its index', async () => {
    const receipt = signedReceipt(bobPhone, toBob.slice(0, 2));
    const first = await submitOk(url(), bob.token, [receipt], true);
    expect(first.entries).toHaveLength(1);
    const entry = first.entries[0]!;
    expect(entry.duplicate).toBe(false);
    expect(fromB64(entry.leafHash)).toEqual(leafOf(receipt));
    const cp = verifyCheckpoint(first.checkpoint!, id);
    expect(cp.size).toBeGreaterThan(entry.index);

    const res = await request(url(), 'GET', `/v1/log/proof/inclusion?index=${entry.index}&size=${cp.size}`);
    expect(res.status, res.text).toBe(200);
    const proof = decodeInclusionProofAnswer(res.body);
    expect(() => verifyInclusion(leafOf(receipt), entry.index, cp.size, proof.hashes.map(fromB64), cp.root)).not.toThrow();
    // The same proof does not verify another leaf.
    expect(() => verifyInclusion(leafOf(`${receipt}x`), entry.index, cp.size, proof.hashes.map(fromB64), cp.root)).toThrow();

    // The same, as a C2SP tlog-proof: verifies against the log's key for this leaf only.
    const tp = await fetch(`${url()}/v1/log/proof/tlog?index=${entry.index}`);
    expect(tp.status).toBe(200);
    expect(tp.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    const tlogProof = await tp.text();
    expect(verifyTlogProof(tlogProof, leafOf(receipt), id.origin, [id.verifier]).index).toBe(entry.index);
    expect(() => verifyTlogProof(tlogProof, leafOf(`${receipt}x`), id.origin, [id.verifier])).toThrow();

    // The sender is a party too; submitting again gives the same index.
    const again = await submitOk(url(), alice.token, [receipt]);
    expect(again.entries).toEqual([{ index: entry.index, leafHash: entry.leafHash, duplicate: true }]);
  });

  it('checkpoints grow consistently: a consistency proof between two checkpoints verifies', async () => {
    const before = await latestCheckpoint(url(), id);
    const r = await submitOk(url(), alice.token, [signedReceipt(bobPhone, toBob.slice(2, 3)), signedReceipt(bobPhone, toBob.slice(3, 4))], true);
    expect(r.entries.map((e) => e.index)).toEqual([r.entries[0]!.index, r.entries[0]!.index + 1]);
    const after = verifyCheckpoint(r.checkpoint!, id);
    expect(after.size).toBeGreaterThanOrEqual(before.size + 2);
    const res = await request(url(), 'GET', `/v1/log/proof/consistency?from=${before.size}&to=${after.size}`);
    expect(res.status, res.text).toBe(200);
    const proof = decodeConsistencyProofAnswer(res.body);
    expect(() => verifyConsistency(before.size, after.size, before.root, after.root, proof.hashes.map(fromB64))).not.toThrow();
    const flipped = proof.hashes.map(fromB64);
    flipped[0]![0]! ^= 1;
    expect(() => verifyConsistency(before.size, after.size, before.root, after.root, flipped)).toThrow();

    // Both checkpoints are in the history, with the same notes.
    const hist = decodeCheckpointsAnswer((await request(url(), 'GET', `/v1/log/checkpoints?from=${before.size}&limit=256`)).body);
    const sizes = hist.checkpoints.map((c) => c.size);
    expect(sizes).toContain(before.size);
    expect(sizes).toContain(after.size);
    for (const c of hist.checkpoints) expect(verifyCheckpoint(c.note, id).size).toBe(c.size);
  });

  it('refuses receipts not signed by the recipient device: another device key, a forged kid', async () => {
    // Signed by bob's laptop, claiming to be from his phone: kid is the laptop's thumbprint.
    const other = signReceipt(bobLaptop.identity, receiptPayload(bobPhone, toBob.slice(0, 1)));
    expectError(await submitReceipts(url(), bob.token, [other]), 400, 'RECEIPT_KEY_MISMATCH');
    // The phone's kid, the laptop's signature.
    const header = encodeBase64url(encoder.encode(JSON.stringify({ alg: 'EdDSA', typ: 'hermetic-receipt+jws', kid: jwkThumbprint(bobPhone.identityKey) })));
    const body = encodeBase64url(encoder.encode(JSON.stringify(receiptPayload(bobPhone, toBob.slice(0, 1)))));
    const forged = `${header}.${body}.${encodeBase64url(bobLaptop.identity.sign(encoder.encode(`${header}.${body}`)))}`;
    const res = await submitReceipts(url(), bob.token, [forged]);
    expectError(res, 400, 'RECEIPT_KEY_MISMATCH');
    expect(res.body.error.details).toEqual({ index: 0 });
  });

  it('refuses entries for envelopes the device did not receive: unknown envelope, wrong seq, another device, another user', async () => {
    const unknown = receiptPayload(bobPhone, toBob.slice(0, 1));
    const fake = { ...unknown, entries: [{ ...unknown.entries[0]!, envelopeId: encodeBase64url(defaultBackend.sha256(encoder.encode('never sent')).subarray(0, 16)) }] };
    expectError(await submitReceipts(url(), bob.token, [signReceipt(bobPhone.identity, fake)]), 403, 'RECEIPT_NOT_DELIVERED');

    const wrongSeq = signReceipt(bobPhone.identity, receiptPayload(bobPhone, toBob.slice(0, 2), { seq: (d) => d.seq + 100 }));
    const valid = signedReceipt(bobPhone, toBob.slice(4, 5));
    const res = await submitReceipts(url(), bob.token, [valid, wrongSeq]);
    expectError(res, 403, 'RECEIPT_NOT_DELIVERED');
    expect(res.body.error.details).toEqual({ index: 1, entry: 0 });

    // The laptop joined after these were sent: properly signed by it, but not delivered to it.
    expectError(await submitReceipts(url(), bob.token, [signedReceipt(bobLaptop, toBob.slice(0, 1))]), 403, 'RECEIPT_NOT_DELIVERED');
    // Carol's envelope, claimed by bob's phone.
    expectError(await submitReceipts(url(), bob.token, [signedReceipt(bobPhone, toCarol)]), 403, 'RECEIPT_NOT_DELIVERED');
    // Nothing of a refused submission is appended: the valid first receipt is not in the log.
    const listed = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts?limit=256', { token: auditorToken })).body);
    expect(listed.receipts.length).toBeGreaterThan(0);
    expect(listed.receipts.map((r) => r.receipt)).not.toContain(valid);
  });

  it('refuses a caller that is not a party, malformed receipts, too many receipts and oversize bodies', async () => {
    const mallory = await world.user('mallory');
    expectError(await submitReceipts(url(), mallory.token, [signedReceipt(bobPhone, toBob.slice(0, 1))]), 403, 'RECEIPT_NOT_PARTY');
    expectError(await submitReceipts(url(), bob.token, ['not a jws']), 400, 'RECEIPT_INVALID');
    expectError(await submitReceipts(url(), bob.token, [42]), 400, 'RECEIPT_INVALID');
    // Longer than an entry bundle can hold: refused before it is parsed.
    const long = await submitReceipts(url(), bob.token, [signedReceipt(bobPhone, toBob.slice(0, 1)), 'x'.repeat(MAX_LOG_ENTRY_BYTES + 1)]);
    expectError(long, 400, 'RECEIPT_INVALID');
    expect(long.body.error.details).toEqual({ index: 1 });
    // A well-formed JWS whose payload is not a receipt.
    const payload = encodeBase64url(encoder.encode('{"v":1}'));
    const header = encodeBase64url(encoder.encode(JSON.stringify({ alg: 'EdDSA', typ: 'hermetic-receipt+jws', kid: jwkThumbprint(bobPhone.identityKey) })));
    const sig = encodeBase64url(bobPhone.identity.sign(encoder.encode(`${header}.${payload}`)));
    expectError(await submitReceipts(url(), bob.token, [`${header}.${payload}.${sig}`]), 400, 'RECEIPT_INVALID');
    expectError(await submitReceipts(url(), bob.token, Array.from({ length: MAX_RECEIPTS_PER_SUBMIT + 1 }, () => 'x')), 400, 'TOO_MANY_RECEIPTS');
    expectError(await submitReceipts(url(), bob.token, []), 400, 'BAD_REQUEST');
    expectError(await submitReceipts(url(), bob.token, ['x'.repeat(600 * 1024)]), 413, 'BODY_TOO_LARGE');
    expectError(await request(url(), 'POST', '/v1/log/receipts', { json: { receipts: [] } }), 401, 'UNAUTHENTICATED');
    expectError(await request(url(), 'GET', '/v1/log/proof/inclusion?index=5&size=2'), 400, 'BAD_REQUEST');
    expectError(await request(url(), 'GET', '/v1/log/proof/inclusion?index=0&size=99999999'), 400, 'BAD_REQUEST');
    expectError(await request(url(), 'GET', '/v1/log/proof/consistency?from=-1&to=2'), 400, 'BAD_REQUEST');
    expectError(await request(url(), 'GET', '/v1/log/proof/tlog?index=99999999'), 400, 'BAD_REQUEST');
    expectError(await request(url(), 'GET', '/v1/log/checkpoints?limit=100000'), 400, 'BAD_REQUEST');
    expectError(await request(url(), 'GET', '/v1/log/tile/0/x1/001'), 404, 'NOT_FOUND');
    expectError(await request(url(), 'GET', '/v1/log/tile/0/000.p/256'), 404, 'NOT_FOUND');
    await world.expectRelaysUp();
  });

  it('hash tiles for the current size recompute the checkpoint root; data tiles need the auditor claim', async () => {
    await submitOk(url(), bob.token, [signedReceipt(bobPhone, toBob.slice(5, 6))], true);
    const cp = await latestCheckpoint(url(), id);
    expect(cp.size).toBeGreaterThan(0);
    expect(cp.size).toBeLessThan(256);
    const tiles = new TileSet();
    const needed = tilesForSize(cp.size);
    expect(needed.length).toBeGreaterThan(0);
    for (const t of needed) {
      const res = await fetch(`${url()}/v1/log/${formatTilePath(t)}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/octet-stream');
      tiles.add(t, new Uint8Array(await res.arrayBuffer()));
    }
    await expect(verifyTiles(cp.size, cp.root, tiles)).resolves.toBeUndefined();
    const hashes = [...(tiles.hashes(0, 0) ?? [])];
    expect(hashes).toHaveLength(cp.size);
    expect(rootOf(hashes)).toEqual(cp.root);
    // A full tile does not exist yet.
    expectError(await request(url(), 'GET', '/v1/log/tile/0/000'), 404, 'NOT_FOUND');

    const path = `/v1/log/tile/entries/000.p/${cp.size}`;
    expectError(await request(url(), 'GET', path), 401, 'UNAUTHENTICATED');
    expectError(await request(url(), 'GET', path, { token: bob.token }), 403, 'AUDITOR_ONLY');
    const notQuite = await world.issuer.mint('not-auditor', { claims: { hermetic_auditor: 'true' } });
    expectError(await request(url(), 'GET', path, { token: notQuite }), 403, 'AUDITOR_ONLY');
    const data = await fetch(`${url()}${path}`, { headers: { authorization: `Bearer ${auditorToken}` } });
    expect(data.status).toBe(200);
    expect(data.headers.get('cache-control')).toMatch(/^private/);
    const entries = verifyEntryBundle({ kind: 'data', level: 0, index: 0, width: cp.size }, new Uint8Array(await data.arrayBuffer()), tiles);
    expect(entries.map((e) => leafHash(e))).toEqual(hashes);
  });

  it('lists receipts to their parties, and all of them to an auditor', async () => {
    const all = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts?limit=256', { token: auditorToken })).body).receipts;
    const cp = await latestCheckpoint(url(), id);
    expect(all.map((r) => r.index)).toEqual(Array.from({ length: cp.size }, (_, i) => i));
    for (const r of all) expect(fromB64(r.leafHash)).toEqual(leafOf(r.receipt));
    const ofBob = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts', { token: bob.token })).body).receipts;
    const ofAlice = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts', { token: alice.token })).body).receipts;
    const ofCarol = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts', { token: carol.token })).body).receipts;
    // Every receipt so far is about bob's phone and envelopes from alice.
    expect(ofBob.length).toBeGreaterThan(0);
    expect(ofBob).toEqual(all);
    expect(ofAlice).toEqual(all);
    expect(ofCarol).toEqual([]);
    // Paging: `next` continues where a full page stopped.
    const page = decodeReceiptsAnswer((await request(url(), 'GET', '/v1/log/receipts?limit=1&from=1', { token: bob.token })).body);
    expect(page.receipts.map((r) => r.index)).toEqual([1]);
    expect(page.next).toBe(2);
    expectError(await request(url(), 'GET', '/v1/log/receipts'), 401, 'UNAUTHENTICATED');

    // Metrics: appended receipts, refusals by code, the tree size, the checkpoint's age.
    expect(await metric(world.relay, 'hermetic_log_receipts_appended_total')).toBe(all.length);
    expect(await metric(world.relay, 'hermetic_log_tree_size')).toBe(all.length);
    expect(await metric(world.relay, 'hermetic_log_submissions_refused_total{code="RECEIPT_NOT_PARTY"}')).toBeGreaterThanOrEqual(1);
    expect(await metric(world.relay, 'hermetic_log_submissions_refused_total{code="TOO_MANY_RECEIPTS"}')).toBeGreaterThanOrEqual(1);
    const age = await metric(world.relay, 'hermetic_log_checkpoint_age_seconds');
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(600);
  });

  it('serves device identity keys as JWKs with their RFC 7638 thumbprint', async () => {
    const res = await request(url(), 'GET', `/v1/users/${encodeURIComponent(bob.userId)}/devices/${bobPhone.deviceId}/jwk`, { token: carol.token });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ kty: 'OKP', crv: 'Ed25519', x: encodeBase64url(bobPhone.identityKey), kid: jwkThumbprint(bobPhone.identityKey) });
    const set = await request(url(), 'GET', `/v1/users/${encodeURIComponent(bob.userId)}/jwks`, { token: carol.token });
    expect(set.status, set.text).toBe(200);
    expect(set.body.keys.map((k: { kid: string }) => k.kid).sort()).toEqual([jwkThumbprint(bobPhone.identityKey), jwkThumbprint(bobLaptop.identityKey)].sort());
    expectError(await request(url(), 'GET', `/v1/users/${encodeURIComponent(bob.userId)}/devices/nope/jwk`, { token: carol.token }), 404, 'DEVICE_NOT_FOUND');
    expectError(await request(url(), 'GET', `/v1/users/${encodeURIComponent(bob.userId)}/jwks`), 401, 'UNAUTHENTICATED');
  });

  it('serves full tiles (immutable) once the tree covers them, and tiles of several levels that recompute the root', async () => {
    // Distinct receipts (each issued at another time) about one delivered envelope.
    const receipts = Array.from({ length: 5 * 64 }, (_, i) => signReceipt(bobPhone.identity, { ...receiptPayload(bobPhone, toBob.slice(0, 1)), issuedAt: 1_000_000 + i }));
    let last: Awaited<ReturnType<typeof submitOk>> | undefined;
    for (let i = 0; i < receipts.length; i += 64) last = await submitOk(url(), bob.token, receipts.slice(i, i + 64), i + 64 >= receipts.length);
    const cp = verifyCheckpoint(last!.checkpoint!, id);
    expect(cp.size).toBeGreaterThan(256);
    const tiles = new TileSet();
    const needed = tilesForSize(cp.size);
    expect(needed.some((t) => t.level === 1)).toBe(true);
    for (const t of needed) {
      const res = await fetch(`${url()}/v1/log/${formatTilePath(t)}`);
      expect(res.status, formatTilePath(t)).toBe(200);
      expect(res.headers.get('cache-control')).toBe(t.width === 256 ? 'public, max-age=31536000, immutable' : 'public, max-age=60');
      tiles.add(t, new Uint8Array(await res.arrayBuffer()));
    }
    await verifyTiles(cp.size, cp.root, tiles);
    const full = await fetch(`${url()}/v1/log/tile/entries/000`, { headers: { authorization: `Bearer ${auditorToken}` } });
    expect(full.status).toBe(200);
    const entries = verifyEntryBundle({ kind: 'data', level: 0, index: 0, width: 256 }, new Uint8Array(await full.arrayBuffer()), tiles);
    expect(entries).toHaveLength(256);
    // Beyond the tree: no such tile.
    expectError(await request(url(), 'GET', '/v1/log/tile/0/001'), 404, 'NOT_FOUND');
    expectError(await request(url(), 'GET', '/v1/log/tile/2/000.p/1'), 404, 'NOT_FOUND');
  });

  it('rate limits submissions per user', async () => {
    const eager = await world.user('eager');
    const codes: string[] = [];
    for (let i = 0; i < 100; i++) {
      const res = await submitReceipts(url(), eager.token, ['not a jws']);
      codes.push(res.body.error.code);
      if (res.body.error.code === 'RATE_LIMITED') {
        expect(res.status).toBe(429);
        expect(res.body.error.details.retryAfterMs).toBeGreaterThan(0);
        break;
      }
    }
    expect(codes.at(-1)).toBe('RATE_LIMITED');
    expect(codes.slice(0, -1).every((c) => c === 'RECEIPT_INVALID')).toBe(true);
  });
});
