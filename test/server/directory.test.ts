/**
 * The key directory over HTTP, against a real relay process on each storage driver:
 * device registration, prekey uploads (every signature checked, a refused upload stores
 * nothing), bundle fetches (one-time keys consumed once, last-resort fallback, rate
 * limit), and the request-level guards (body size, content type, JSON, routes). After
 * every test the relay must still be up.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { BUNDLE_FETCH_BURST, BUNDLE_FETCH_PER_SECOND, KEY_UPLOAD_BURST, KEY_UPLOADS_PER_SECOND, MAX_HTTP_BODY_BYTES, MAX_KEYS_PER_UPLOAD } from '../../protocol/limits.js';
import { type PublishedKeyKind, verifyPublishedKey } from '../../crypto/published-key.js';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { TestDevice, type WireKey, range, verifiedChain } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { WsClient } from '../helpers/ws.js';
import { createLinkRequest, linkEntry } from '../../crypto/devices/link.js';
import { decodeDeviceListAnswer } from '../../protocol/directory.js';
import { expectError, postChunkedUntilAnswered, postDeclaredLength, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, pgMissing, pgServer } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';

interface Driver {
  readonly name: string;
  readonly needsPg: boolean;
}

const DRIVERS: Driver[] = [
  { name: 'PGlite', needsPg: false },
  { name: 'PostgreSQL', needsPg: true },
];

let issuer: TestIssuer;

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
});

afterAll(async () => {
  await killAllRelays();
});

function flipBit(b64: string): string {
  const bytes = decodeBase64url(b64)!;
  bytes[0]! ^= 0x01;
  return encodeBase64url(bytes);
}

function verifyWire(identityKey: Uint8Array, kind: PublishedKeyKind, k: WireKey): boolean {
  return verifyPublishedKey(defaultBackend, identityKey, kind, k.keyId, decodeBase64url(k.publicKey)!, decodeBase64url(k.signature)!);
}

describe.each(DRIVERS)('key directory over HTTP on $name', (driver) => {
  if (driver.needsPg && !pgServer) {
    pgMissing(`key directory over HTTP on ${driver.name}`);
    return;
  }

  let relay: RelayProcess;
  let db: TestDatabase | undefined;
  let base: string;
  // Distinct users per driver, so the two suites never share rate-limit buckets or rows.
  const u = (name: string): string => `${name}-${driver.name}`;
  const token = (user: string): Promise<string> => issuer.mint(user);

  beforeAll(async () => {
    if (driver.needsPg) db = await createTestDatabase();
    relay = await startRelay({ env: issuer.env, ...(db ? { databaseUrl: db.url } : {}) });
    base = relay.baseUrl;
  });

  afterAll(async () => {
    await relay?.stop('SIGTERM');
    await db?.drop();
  });

  afterEach(async () => {
    const health = await request(base, 'GET', '/healthz');
    expect(health.status, 'the relay must survive every request').toBe(200);
    expect(relay.proc.exitCode).toBeNull();
  });

  async function counts(user: string, deviceId: string): Promise<Record<string, unknown>> {
    const res = await request(base, 'GET', `/v1/devices/${deviceId}/keys`, { token: await token(user) });
    expect(res.status, res.text).toBe(200);
    return res.body;
  }

  describe('device list', () => {
    const post = (t: string, entry: Uint8Array | string) =>
      request(base, 'POST', '/v1/devices', { token: t, json: { entry: typeof entry === 'string' ? entry : encodeBase64url(entry) } });
    const list = async (user: string, t: string, after?: number) => {
      const res = await request(base, 'GET', `/v1/users/${user}/devices${after === undefined ? '' : `?after=${after}`}`, { token: t });
      expect(res.status, res.text).toBe(200);
      return decodeDeviceListAnswer(res.body);
    };

    it('enrols the root (201), answers 200 for the same entry, and serves the list', async () => {
      const d = new TestDevice(u('reg'));
      const t = await token(d.userId);
      const entry = d.enrolEntry(verifiedChain(d.userId, []));
      const first = await post(t, entry);
      expect(first.status, first.text).toBe(201);
      expect(first.body).toEqual({ userId: d.userId, seq: 0, kind: 'root', deviceId: d.deviceId, created: true });
      const again = await post(t, entry);
      expect(again.status, again.text).toBe(200);
      expect(again.body).toEqual({ userId: d.userId, seq: 0, kind: 'root', deviceId: d.deviceId, created: false });
      const l = await list(d.userId, t);
      expect(l.entries).toEqual([entry]);
      expect(l.length).toBe(1);
      expect(l.head).toEqual(verifiedChain(d.userId, l.entries).head);
    });

    it('links a second device with a signature of the first; serves only newer entries after a position', async () => {
      const user = u('linker');
      const t = await token(user);
      const phone = new TestDevice(user, 'phone');
      const laptop = new TestDevice(user, 'laptop');
      await registerDevice(base, t, phone);
      await registerDevice(base, t, laptop, phone);
      const whole = await list(user, t);
      expect(whole.length).toBe(2);
      expect(verifiedChain(user, whole.entries).devices.map((x) => x.deviceId)).toEqual(['laptop', 'phone']);
      const newer = await list(user, t, 0);
      expect(newer.entries).toEqual([whole.entries[1]]);
      expect(newer.length).toBe(2);
      expect((await list(user, t, 1)).entries).toEqual([]);
      for (const bad of ['-2', 'x', '1.5', '99999999999']) {
        expectError(await request(base, 'GET', `/v1/users/${user}/devices?after=${bad}`, { token: t }), 400, 'BAD_REQUEST');
      }
    });

    it('a token alone cannot add a device (INVALID_SIGNATURE, DEVICE_NOT_AUTHORIZED) and nothing is stored', async () => {
      const user = u('victim');
      const t = await token(user);
      const phone = new TestDevice(user, 'phone');
      await registerDevice(base, t, phone);
      const before = await list(user, t);
      const chain = verifiedChain(user, before.entries);
      // The thief holds Alice's token and his own key, not a key of one of her devices.
      const thief = new TestDevice(user, 'thief-device');
      expectError(
        await post(t, linkEntry(chain, phone.deviceId, thief.identity, createLinkRequest(thief.identity, user, thief.deviceId))),
        400,
        'INVALID_SIGNATURE',
      );
      expectError(await post(t, thief.enrolEntry(verifiedChain(user, []))), 403, 'DEVICE_NOT_AUTHORIZED');
      // An entry for one user posted with another user's token.
      const other = new TestDevice(u('victim-2'));
      expectError(await post(t, other.enrolEntry(verifiedChain(other.userId, []))), 403, 'DEVICE_NOT_AUTHORIZED');
      const after = await list(user, t);
      expect(after.entries).toEqual(before.entries);
      expect(after.devices.map((x) => x.deviceId)).toEqual(['phone']);
    });

    it('refuses a device id or key already in the list (DEVICE_EXISTS) and a stale entry (DEVICE_LIST_CONFLICT)', async () => {
      const d = new TestDevice(u('reg-exists'));
      const t = await token(d.userId);
      await registerDevice(base, t, d);
      const chain = verifiedChain(d.userId, (await list(d.userId, t)).entries);
      const impostor = new TestDevice(d.userId, d.deviceId);
      expectError(await post(t, impostor.enrolEntry(chain, d)), 409, 'DEVICE_EXISTS');
      await registerDevice(base, t, new TestDevice(d.userId), d);
      const res = await post(t, new TestDevice(d.userId).enrolEntry(chain, d));
      expectError(res, 409, 'DEVICE_LIST_CONFLICT');
    });

    it('refuses malformed bodies and entries (BAD_REQUEST)', async () => {
      const d = new TestDevice(u('reg-fields'));
      const t = await token(d.userId);
      const good = encodeBase64url(d.enrolEntry(verifiedChain(d.userId, [])));
      for (const body of [{}, { entry: '' }, { entry: `${good}==` }, { entry: 5 }, { entry: encodeBase64url(new Uint8Array(513)) }, { entry: encodeBase64url(new Uint8Array(40)) }]) {
        expectError(await request(base, 'POST', '/v1/devices', { token: t, json: body }), 400, 'BAD_REQUEST');
      }
      expect((await list(d.userId, t)).entries).toEqual([]);
    });

    it("lists a user's devices to other users without when they were added", async () => {
      const user = u('lister');
      const t = await token(user);
      const a = new TestDevice(user, 'a-phone');
      const b = new TestDevice(user, 'b-laptop');
      await registerDevice(base, t, b);
      await registerDevice(base, t, a);
      // Any authenticated user may read another user's list.
      const res = await request(base, 'GET', `/v1/users/${user}/devices`, { token: await token(u('someone-else')) });
      expect(res.status).toBe(200);
      expect(res.body.userId).toBe(user);
      expect(res.body.devices).toEqual([
        { deviceId: 'a-phone', identityKey: encodeBase64url(a.identityKey) },
        { deviceId: 'b-laptop', identityKey: encodeBase64url(b.identityKey) },
      ]);
    });

    it('revocation closes the device\'s connection (4003); it can no longer connect, upload or be sent to', async () => {
      const user = u('revoker');
      const t = await token(user);
      const phone = new TestDevice(user, 'phone');
      const laptop = new TestDevice(user, 'laptop');
      await registerDevice(base, t, phone);
      await registerDevice(base, t, laptop);
      const ws = await connectAuthenticated(relay.wsUrl, t, laptop);
      const chain = verifiedChain(user, (await list(user, t)).entries);
      const res = await post(t, phone.revokeEntry(chain, laptop.deviceId));
      expect(res.status, res.text).toBe(201);
      expect(res.body).toMatchObject({ kind: 'revoke', deviceId: 'laptop', seq: 2 });
      expect((await ws.waitClosed()).code).toBe(4003);
      expect((await list(user, t)).devices.map((x) => x.deviceId)).toEqual(['phone']);
      expectError(await request(base, 'GET', `/v1/devices/laptop/keys`, { token: t }), 404, 'DEVICE_NOT_FOUND');
      const { ws: again, challenge } = await WsClient.connectWithChallenge(relay.wsUrl);
      again.send(laptop.authFrame(challenge, t, relay.wsUrl));
      expect(await again.reply()).toMatchObject({ type: 'error', code: 'DEVICE_NOT_FOUND' });
      expect((await again.waitClosed()).code).toBe(4001);
    });
  });

  describe('key upload', () => {
    const owner = new TestDevice(u('uploader'));
    let t: string;

    beforeAll(async () => {
      t = await token(owner.userId);
      await registerDevice(base, t, owner);
      const res = await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: t, json: owner.fullUpload({ oneTime: 3, oneTimeKem: 2 }) });
      expect(res.status, res.text).toBe(200);
      expect(res.body).toEqual({ oneTimePrekeys: 3, oneTimeKemPrekeys: 2, hasSignedPrekey: true, hasLastResortKemPrekey: true });
    });

    const put = (json: unknown) => request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: t, json });

    it('counts stored keys for the owner', async () => {
      expect(await counts(owner.userId, owner.deviceId)).toEqual({ oneTimePrekeys: 3, oneTimeKemPrekeys: 2, hasSignedPrekey: true, hasLastResortKemPrekey: true });
    });

    it('refuses a forged prekey signature (INVALID_SIGNATURE) and stores nothing of the upload', async () => {
      const before = await counts(owner.userId, owner.deviceId);
      const stranger = new TestDevice(owner.userId);
      const valid = range(100, 3).map((id) => owner.wireKey('one-time-prekey', id));
      // Signed by another key.
      expectError(await put({ oneTimePrekeys: [...valid, stranger.wireKey('one-time-prekey', 103)] }), 400, 'INVALID_SIGNATURE');
      // A bit flipped in the public key after signing.
      const tampered = owner.wireKey('one-time-kem-prekey', 104);
      expectError(await put({ oneTimePrekeys: valid, oneTimeKemPrekeys: [{ ...tampered, publicKey: flipBit(tampered.publicKey) }] }), 400, 'INVALID_SIGNATURE');
      // A bit flipped in the signature of the signed prekey.
      const spk = owner.wireKey('signed-prekey', 50);
      expectError(await put({ signedPrekey: { ...spk, signature: flipBit(spk.signature) }, oneTimePrekeys: valid }), 400, 'INVALID_SIGNATURE');
      // The signature binds the key id.
      expectError(await put({ oneTimePrekeys: [{ ...owner.wireKey('one-time-prekey', 105), keyId: 106 }] }), 400, 'INVALID_SIGNATURE');
      expect(await counts(owner.userId, owner.deviceId)).toEqual(before);
    });

    it('refuses a key signed for another role (INVALID_SIGNATURE)', async () => {
      const before = await counts(owner.userId, owner.deviceId);
      // A one-time prekey's signature presented as the signed prekey.
      expectError(await put({ signedPrekey: owner.wireKey('one-time-prekey', 60) }), 400, 'INVALID_SIGNATURE');
      // The last-resort KEM key's signature presented as a one-time KEM key, and back.
      expectError(await put({ oneTimeKemPrekeys: [owner.wireKey('last-resort-kem-prekey', 61)] }), 400, 'INVALID_SIGNATURE');
      expectError(await put({ lastResortKemPrekey: owner.wireKey('one-time-kem-prekey', 62) }), 400, 'INVALID_SIGNATURE');
      expect(await counts(owner.userId, owner.deviceId)).toEqual(before);
      // The signed prekey was not replaced: a bundle still carries the original (key id 1).
      const bundle = await request(base, 'POST', `/v1/users/${owner.userId}/devices/${owner.deviceId}/bundle`, { token: t });
      expect(bundle.body.signedPrekey.keyId).toBe(1);
    });

    it(`refuses more than ${MAX_KEYS_PER_UPLOAD} one-time keys in one upload (TOO_MANY_KEYS)`, async () => {
      const before = await counts(owner.userId, owner.deviceId);
      const keys = range(1000, MAX_KEYS_PER_UPLOAD + 1).map((id) => owner.wireKey('one-time-prekey', id));
      expectError(await put({ oneTimePrekeys: keys }), 400, 'TOO_MANY_KEYS');
      expect(await counts(owner.userId, owner.deviceId)).toEqual(before);
      // Exactly the limit is fine.
      const ok = await put({ oneTimePrekeys: keys.slice(0, MAX_KEYS_PER_UPLOAD) });
      expect(ok.status, ok.text).toBe(200);
      expect(ok.body.oneTimePrekeys).toBe((before.oneTimePrekeys as number) + MAX_KEYS_PER_UPLOAD);
    });

    it('treats a retried upload as a no-op and refuses a reused key id with other bytes (KEY_ID_CONFLICT)', async () => {
      const upload = { oneTimePrekeys: range(2000, 2).map((id) => owner.wireKey('one-time-prekey', id)) };
      const first = await put(upload);
      expect(first.status).toBe(200);
      const retry = await put(upload);
      expect(retry.status).toBe(200);
      expect(retry.body).toEqual(first.body);
      expectError(await put({ oneTimePrekeys: [owner.wireKey('one-time-prekey', 2000)] }), 409, 'KEY_ID_CONFLICT');
      expect(await counts(owner.userId, owner.deviceId)).toEqual(first.body);
    });

    it("refuses uploads to a device the caller doesn't own (DEVICE_NOT_FOUND)", async () => {
      const mallory = await token(u('mallory'));
      const res = await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: mallory, json: { oneTimePrekeys: [owner.wireKey('one-time-prekey', 3000)] } });
      expectError(res, 404, 'DEVICE_NOT_FOUND');
      expectError(await request(base, 'GET', `/v1/devices/${owner.deviceId}/keys`, { token: mallory }), 404, 'DEVICE_NOT_FOUND');
    });

    it('refuses an oversized body by its Content-Length without reading it (BODY_TOO_LARGE, 413)', async () => {
      // Only the start of the body is sent, and it is not JSON: a 413 (not a 400) shows
      // the relay refused on the declared size alone.
      for (const [method, path] of [
        ['PUT', `/v1/devices/${owner.deviceId}/keys`],
        ['POST', '/v1/devices'],
      ] as const) {
        const res = await postDeclaredLength(base, path, { method, token: t, declaredLength: MAX_HTTP_BODY_BYTES + 1, body: '{"not json'.padEnd(1024, '!') });
        expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status: 413, code: 'BODY_TOO_LARGE' });
      }
    });

    it('refuses a chunked body once it grows past the cap (BODY_TOO_LARGE, 413)', async () => {
      const before = await counts(owner.userId, owner.deviceId);
      const res = await postChunkedUntilAnswered(base, `/v1/devices/${owner.deviceId}/keys`, {
        method: 'PUT',
        token: t,
        chunk: '!'.repeat(64 * 1024), // invalid JSON all the way
        maxBytes: 4 * MAX_HTTP_BODY_BYTES,
      });
      expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status: 413, code: 'BODY_TOO_LARGE' });
      expect(res.bytesSent).toBeGreaterThan(MAX_HTTP_BODY_BYTES);
      expect(await counts(owner.userId, owner.deviceId)).toEqual(before);
    });

    it('refuses malformed JSON (BAD_REQUEST) and other content types (UNSUPPORTED_MEDIA_TYPE)', async () => {
      const path = `/v1/devices/${owner.deviceId}/keys`;
      expectError(await request(base, 'PUT', path, { token: t, body: '{"oneTimePrekeys": [' }), 400, 'BAD_REQUEST');
      expectError(await request(base, 'PUT', path, { token: t, body: '[]' }), 400, 'BAD_REQUEST');
      expectError(await request(base, 'PUT', path, { token: t, json: {} }), 400, 'BAD_REQUEST');
      const json = JSON.stringify({ oneTimePrekeys: [owner.wireKey('one-time-prekey', 4000)] });
      expectError(await request(base, 'PUT', path, { token: t, body: json, contentType: 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
      expectError(await request(base, 'POST', '/v1/devices', { token: t, body: 'deviceId=x', contentType: 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
      const noType = await fetch(`${base}${path}`, { method: 'PUT', headers: { authorization: `Bearer ${t}` }, body: new Uint8Array(Buffer.from(json)) });
      expect(noType.status).toBe(415);
      expect(((await noType.json()) as { error: { code: string } }).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    });

    it('refuses bad path parameters (BAD_REQUEST)', async () => {
      expectError(await request(base, 'GET', '/v1/devices/bad%20id/keys', { token: t }), 400, 'BAD_REQUEST');
      expectError(await request(base, 'GET', '/v1/devices/%E0%A4%A/keys', { token: t }), 400, 'BAD_REQUEST');
      expectError(await request(base, 'GET', `/v1/users/${'u'.repeat(129)}/devices`, { token: t }), 400, 'BAD_REQUEST');
    });
  });

  describe('bundles', () => {
    it('answers NO_SIGNED_PREKEY before the signed keys are published, consuming nothing', async () => {
      const d = new TestDevice(u('early'));
      const t = await token(d.userId);
      await registerDevice(base, t, d);
      const upload = await request(base, 'PUT', `/v1/devices/${d.deviceId}/keys`, { token: t, json: { oneTimePrekeys: [d.wireKey('one-time-prekey', 1)] } });
      expect(upload.status).toBe(200);
      const res = await request(base, 'POST', `/v1/users/${d.userId}/devices/${d.deviceId}/bundle`, { token: await token(u('early-peer')) });
      expectError(res, 404, 'NO_SIGNED_PREKEY');
      expect((await counts(d.userId, d.deviceId)).oneTimePrekeys).toBe(1);
    });

    it('answers DEVICE_NOT_FOUND for an unknown device', async () => {
      expectError(await request(base, 'POST', `/v1/users/${u('ghost')}/devices/nothing/bundle`, { token: await token(u('peer')) }), 404, 'DEVICE_NOT_FOUND');
    });

    it('hands out each one-time key once, counts down, then falls back to the last-resort KEM key', async () => {
      const owner = new TestDevice(u('bundle-owner'));
      const ownerToken = await token(owner.userId);
      await registerDevice(base, ownerToken, owner);
      const upload = owner.fullUpload({ oneTime: 2, oneTimeKem: 1 });
      expect((await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json: upload })).status).toBe(200);

      const peer = await token(u('bundle-peer'));
      const fetchBundle = async () => {
        const res = await request(base, 'POST', `/v1/users/${owner.userId}/devices/${owner.deviceId}/bundle`, { token: peer });
        expect(res.status, res.text).toBe(200);
        return res.body;
      };

      const b1 = await fetchBundle();
      expect(b1.userId).toBe(owner.userId);
      expect(b1.deviceId).toBe(owner.deviceId);
      expect(b1.identityKey).toBe(encodeBase64url(owner.identityKey));
      expect(b1.signedPrekey).toEqual(upload.signedPrekey);
      expect(b1.kemLastResort).toBe(false);
      expect(b1.kemPrekey).toEqual(upload.oneTimeKemPrekeys[0]);
      expect(upload.oneTimePrekeys).toContainEqual(b1.oneTimePrekey);
      // The initiator can check every key against the identity key (the relay isn't trusted).
      expect(verifyWire(owner.identityKey, 'signed-prekey', b1.signedPrekey)).toBe(true);
      expect(verifyWire(owner.identityKey, 'one-time-prekey', b1.oneTimePrekey)).toBe(true);
      expect(verifyWire(owner.identityKey, 'one-time-kem-prekey', b1.kemPrekey)).toBe(true);
      expect(await counts(owner.userId, owner.deviceId)).toMatchObject({ oneTimePrekeys: 1, oneTimeKemPrekeys: 0 });

      const b2 = await fetchBundle();
      expect(upload.oneTimePrekeys).toContainEqual(b2.oneTimePrekey);
      expect(b2.oneTimePrekey.keyId).not.toBe(b1.oneTimePrekey.keyId);
      expect(b2.kemLastResort).toBe(true);
      expect(b2.kemPrekey).toEqual(upload.lastResortKemPrekey);
      expect(verifyWire(owner.identityKey, 'last-resort-kem-prekey', b2.kemPrekey)).toBe(true);
      expect(await counts(owner.userId, owner.deviceId)).toMatchObject({ oneTimePrekeys: 0, oneTimeKemPrekeys: 0 });

      const b3 = await fetchBundle();
      expect(b3).not.toHaveProperty('oneTimePrekey');
      expect(b3.kemLastResort).toBe(true);
      expect(b3.kemPrekey).toEqual(upload.lastResortKemPrekey);
      expect(b3.signedPrekey).toEqual(upload.signedPrekey);

      // Rotation: the next bundle carries the new signed prekey.
      const rotated = owner.wireKey('signed-prekey', 2);
      expect((await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json: { signedPrekey: rotated } })).status).toBe(200);
      expect((await fetchBundle()).signedPrekey).toEqual(rotated);

      // The old signed prekey, with its valid old signature, cannot come back; nor can a
      // one-time key that was handed out.
      const put = (json: unknown) => request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json });
      expect(verifyWire(owner.identityKey, 'signed-prekey', upload.signedPrekey)).toBe(true);
      const old = await put({ signedPrekey: upload.signedPrekey });
      expectError(old, 409, 'KEY_ID_REUSED');
      expect(old.body.error.details.highestKeyId).toBe(2);
      expectError(await put({ lastResortKemPrekey: owner.wireKey('last-resort-kem-prekey', 1) }), 409, 'KEY_ID_REUSED');
      expectError(await put({ oneTimePrekeys: [b1.oneTimePrekey] }), 409, 'KEY_ID_REUSED');
      expect((await fetchBundle()).signedPrekey).toEqual(rotated);
      // The current key sent again is a retried request.
      expect((await put({ signedPrekey: rotated })).status).toBe(200);
    });

    it(`rate-limits bundle fetches per requesting user (RATE_LIMITED with retryAfterMs)`, async () => {
      const owner = new TestDevice(u('popular'));
      const ownerToken = await token(owner.userId);
      await registerDevice(base, ownerToken, owner);
      await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json: owner.fullUpload({ oneTime: 0, oneTimeKem: 0 }) });
      const greedy = await token(u('greedy'));
      const path = `/v1/users/${owner.userId}/devices/${owner.deviceId}/bundle`;

      // The bucket starts full: a whole burst at once is served...
      const burst = await Promise.all(range(0, BUNDLE_FETCH_BURST).map(() => request(base, 'POST', path, { token: greedy })));
      expect(burst.map((r) => r.status)).toEqual(burst.map(() => 200));
      // ...and then it refills at a bounded rate, so fetching on must hit the limit.
      let limited: Awaited<ReturnType<typeof request>> | undefined;
      for (let i = 0; i < 500 && !limited; i++) {
        const res = await request(base, 'POST', path, { token: greedy });
        if (res.status !== 200) limited = res;
      }
      expect(limited, 'never rate limited').toBeDefined();
      expectError(limited!, 429, 'RATE_LIMITED');
      const retryAfterMs = limited!.body.error.details.retryAfterMs;
      expect(Number.isInteger(retryAfterMs)).toBe(true);
      expect(retryAfterMs).toBeGreaterThan(0);
      expect(retryAfterMs).toBeLessThanOrEqual(Math.ceil(1000 / BUNDLE_FETCH_PER_SECOND));

      // Another requester is unaffected, and the hint is truthful.
      expect((await request(base, 'POST', path, { token: await token(u('patient')) })).status).toBe(200);
      await new Promise((r) => setTimeout(r, retryAfterMs + 20));
      const after = await request(base, 'POST', path, { token: greedy });
      expect(after.status, after.text).toBe(200);
    });
  });

  describe('key upload rate limit', () => {
    it(`rate-limits key uploads per user before checking signatures (RATE_LIMITED with retryAfterMs)`, async () => {
      const owner = new TestDevice(u('eager-uploader'));
      const ownerToken = await token(owner.userId);
      await registerDevice(base, ownerToken, owner);
      // The same signed prekey each time: the first is stored, the others are retries.
      const json = { signedPrekey: owner.wireKey('signed-prekey', 1) };
      const put = () => request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json });
      // The bucket starts full: a whole burst is served, then it refills at a bounded
      // rate, so uploading on must hit the limit.
      let served = 0;
      let limited: Awaited<ReturnType<typeof request>> | undefined;
      for (let i = 0; i < 3 * KEY_UPLOAD_BURST && !limited; i++) {
        const res = await put();
        if (res.status === 200) served++;
        else limited = res;
      }
      expect(served).toBeGreaterThanOrEqual(KEY_UPLOAD_BURST);
      expect(limited, 'never rate limited').toBeDefined();
      expectError(limited!, 429, 'RATE_LIMITED');
      const retryAfterMs = limited!.body.error.details.retryAfterMs;
      expect(Number.isInteger(retryAfterMs)).toBe(true);
      expect(retryAfterMs).toBeGreaterThan(0);
      expect(retryAfterMs).toBeLessThanOrEqual(Math.ceil(1000 / KEY_UPLOADS_PER_SECOND));
      // Refused before any signature is checked: a forged key gets the same answer.
      const stranger = new TestDevice(owner.userId);
      const forged = await request(base, 'PUT', `/v1/devices/${owner.deviceId}/keys`, { token: ownerToken, json: { oneTimePrekeys: [stranger.wireKey('one-time-prekey', 1)] } });
      expectError(forged, 429, 'RATE_LIMITED');
      // Another user is unaffected.
      const other = new TestDevice(u('calm-uploader'));
      const otherToken = await token(other.userId);
      await registerDevice(base, otherToken, other);
      expect((await request(base, 'PUT', `/v1/devices/${other.deviceId}/keys`, { token: otherToken, json: { signedPrekey: other.wireKey('signed-prekey', 1) } })).status).toBe(200);
    });
  });

  describe('routes', () => {
    it('answers NOT_FOUND for unknown routes and methods', async () => {
      const t = await token(u('wanderer'));
      expectError(await request(base, 'GET', '/v1/nothing-here', { token: t }), 404, 'NOT_FOUND');
      expectError(await request(base, 'GET', '/'), 404, 'NOT_FOUND');
      expectError(await request(base, 'DELETE', '/v1/devices', { token: t }), 404, 'NOT_FOUND');
    });

    it('refuses control characters in path parameters (BAD_REQUEST), logging no internal error', async () => {
      const t = await token(u('nul-sender'));
      const paths = [
        '/v1/users/a%00b/devices',
        '/v1/users/%00/devices',
        '/v1/users/tab%09user/devices',
        '/v1/users/del%7Fuser/devices',
        '/v1/users/a%00b/devices/dev-1/bundle',
        '/v1/devices/a%00b/keys',
      ];
      for (const path of paths) {
        const res = await request(base, path.endsWith('/bundle') ? 'POST' : 'GET', path, { token: t });
        expectError(res, 400, 'BAD_REQUEST');
      }
      const internal = relay.logs().filter((l) => l.msg === 'internal error');
      expect(internal, JSON.stringify(internal)).toEqual([]);
    });

    it('requires a token on every directory route (UNAUTHENTICATED)', async () => {
      expectError(await request(base, 'GET', '/v1/users/x/devices'), 401, 'UNAUTHENTICATED');
      expectError(await request(base, 'POST', '/v1/devices', { json: {} }), 401, 'UNAUTHENTICATED');
      expectError(await request(base, 'PUT', '/v1/devices/x/keys', { json: {} }), 401, 'UNAUTHENTICATED');
      expectError(await request(base, 'GET', '/v1/devices/x/keys'), 401, 'UNAUTHENTICATED');
      expectError(await request(base, 'POST', '/v1/users/x/devices/y/bundle'), 401, 'UNAUTHENTICATED');
    });
  });
});
