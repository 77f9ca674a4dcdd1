/**
 * Fuzz targets of the wire protocol: the decoders the relay runs on every WebSocket
 * message and HTTP body, and the codecs they share with clients.
 */
import fc from 'fast-check';
import { decodeBase64url, encodeBase64url } from '../../../protocol/base64url.js';
import { parseJsonObject } from '../../../protocol/decode.js';
import {
  type DeviceEntryRequest,
  type KeyUploadRequest,
  MAX_DEVICE_ENTRY_WIRE_BYTES,
  type WireSignedKey,
  decodeDeviceEntryRequest,
  decodeKeyUpload,
  encodeSignedKey,
} from '../../../protocol/directory.js';
import {
  type DeliverFrame,
  type SendFrame,
  decodeDeliver,
  decodeSend,
  encodeDeliver,
  encodeSend,
  peekSendId,
  sendContent,
} from '../../../protocol/envelopes.js';
import type { ProtocolError } from '../../../protocol/errors.js';
import { type ClientFrame, decodeClientFrame, encodeClientFrame } from '../../../protocol/frames.js';
import {
  DEVICE_ID_PATTERN,
  ENVELOPE_ID_BYTES,
  MAX_DEVICE_ID_LENGTH,
  MAX_ENVELOPE_BYTES,
  MAX_FRAME_BYTES,
  MAX_KEYS_PER_UPLOAD,
  MAX_ORIGIN_LENGTH,
  MAX_TARGETS_PER_SEND,
  MAX_TOKEN_BYTES,
  MAX_TTL_SECONDS,
  MAX_USER_ID_LENGTH,
  MIN_TTL_SECONDS,
  USER_ID_PATTERN,
} from '../../../protocol/limits.js';
import { seededRandom } from '../../crypto/session-fixtures.js';
import { type FuzzTarget, decodeDetached, defineTarget, must, sameBytes } from '../harness.js';
import { bytesFrom, edgyString, jsonTextFrom, stringsFrom } from '../mutate.js';

const MAX_REQUEST_ID = 0xffff_ffff;

const isSafeNat = (n: unknown, min = 0): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= min;

/** A request id echoed on an error must be the one the frame carried. */
function checkEchoedId(id: unknown, expected: number | undefined): void {
  if (id === undefined) return;
  must(isSafeNat(id) && (id as number) <= MAX_REQUEST_ID, `echoed request id ${String(id)} is not a u32`);
  if (expected !== undefined) must(id === expected, `echoed request id ${String(id)} is not the frame's ${expected}`);
}

// ---------------------------------------------------------------------------------------
// Generators of valid values (the corpus comes from these and from fixed examples)
// ---------------------------------------------------------------------------------------

const deviceIdArb = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
const userIdArb = fc.stringMatching(/^[\x21-\x7e]{1,128}$/);
const u32Arb = fc.nat({ max: MAX_REQUEST_ID });

const validClientFrame: fc.Arbitrary<ClientFrame> = fc.oneof(
  fc.record({
    type: fc.constant('auth' as const),
    token: fc.string({ unit: 'binary', minLength: 1, maxLength: 300 }),
    deviceId: deviceIdArb,
    origin: fc.string({ unit: 'binary', minLength: 1, maxLength: MAX_ORIGIN_LENGTH / 2 }),
    signature: fc.uint8Array({ minLength: 64, maxLength: 64 }),
  }),
  fc.record({ type: fc.constant('token' as const), token: fc.string({ unit: 'binary', minLength: 1, maxLength: 300 }) }),
  fc.record({ type: fc.constant('ping' as const), id: fc.option(u32Arb, { nil: undefined }) }),
  fc.record({ type: fc.constant('ack' as const), seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }) }),
);

const validSend: fc.Arbitrary<Omit<SendFrame, 'type'>> = fc.record({
  id: u32Arb,
  envelopeId: fc.uint8Array({ minLength: ENVELOPE_ID_BYTES, maxLength: ENVELOPE_ID_BYTES }),
  ttlSeconds: fc.integer({ min: MIN_TTL_SECONDS, max: MAX_TTL_SECONDS }),
  recipientUserId: userIdArb,
  targets: fc.uniqueArray(fc.record({ deviceId: deviceIdArb, payload: fc.uint8Array({ minLength: 1, maxLength: 300 }) }), {
    minLength: 1,
    maxLength: MAX_TARGETS_PER_SEND,
    selector: (t) => t.deviceId,
  }),
});

const validDeliver: fc.Arbitrary<Omit<DeliverFrame, 'type'>> = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  envelopeId: fc.uint8Array({ minLength: ENVELOPE_ID_BYTES, maxLength: ENVELOPE_ID_BYTES }),
  senderUserId: userIdArb,
  senderDeviceId: deviceIdArb,
  storedAtMs: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  expiresAtMs: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  payload: fc.uint8Array({ maxLength: 300 }),
});

function corpusRandom(label: string): (n: number) => Uint8Array {
  return seededRandom(`fuzz-corpus/${label}`);
}

// ---------------------------------------------------------------------------------------
// WebSocket text frames
// ---------------------------------------------------------------------------------------

function checkClientFrame(f: ClientFrame): void {
  switch (f.type) {
    case 'auth':
      must(f.token.length >= 1 && f.token.length <= MAX_TOKEN_BYTES, 'auth token length out of bounds');
      must(f.deviceId.length <= MAX_DEVICE_ID_LENGTH && DEVICE_ID_PATTERN.test(f.deviceId), 'auth deviceId outside its pattern');
      must(f.origin.length >= 1 && f.origin.length <= MAX_ORIGIN_LENGTH, 'auth origin length out of bounds');
      must(f.signature.length === 64, 'auth signature is not 64 bytes');
      break;
    case 'token':
      must(f.token.length >= 1 && f.token.length <= MAX_TOKEN_BYTES, 'token length out of bounds');
      break;
    case 'ping':
      must(f.id === undefined || (isSafeNat(f.id) && f.id <= MAX_REQUEST_ID), 'ping id is not a u32');
      break;
    case 'ack':
      must(isSafeNat(f.seq, 1), 'ack seq is not a positive safe integer');
      break;
  }
  // JSON is not canonical (spacing, key order), so the property is on values: what was
  // accepted encodes to a frame that decodes to the same thing.
  const again = decodeClientFrame(encodeClientFrame(f));
  must(JSON.stringify(again, bytesAsHex) === JSON.stringify(f, bytesAsHex), 'decode(encode(frame)) differs from frame');
}

function bytesAsHex(_key: string, v: unknown): unknown {
  return v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v;
}

const nearLimit = new Map<string, Uint8Array | string>();

/** A ping frame `delta` bytes (or UTF-16 units) away from MAX_FRAME_BYTES. */
function frameNearLimit(delta: number, asBytes: boolean): Uint8Array | string {
  const key = `${delta}/${asBytes}`;
  let frame = nearLimit.get(key);
  if (frame === undefined) {
    const head = '{"type":"ping","pad":"';
    const text = `${head}${'x'.repeat(MAX_FRAME_BYTES + delta - head.length - 2)}"}`;
    frame = asBytes ? new TextEncoder().encode(text) : text;
    nearLimit.set(key, frame);
  }
  return frame;
}

const clientFrame = defineTarget({
  name: 'protocol/client-frame',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'UNKNOWN_FRAME', 'FRAME_TOO_LARGE'],
  runs: 100_000,
  testRuns: 1500,
  setup() {
    const random = corpusRandom('client-frame');
    const corpus: object[] = [
      {
        type: 'auth',
        token: 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln',
        deviceId: 'phone-1',
        origin: 'https://relay.example',
        signature: encodeBase64url(random(64)),
      },
      { type: 'token', token: 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJib2IifQ.c2ln' },
      { type: 'ping', id: 7 },
      { type: 'ping' },
      { type: 'ack', seq: 42 },
      { type: 'ack', seq: 1, id: 3 },
    ];
    return { corpus };
  },
  inputs: ({ corpus }) =>
    fc.oneof(
      // The relay passes a text message's bytes; strings are accepted too.
      { weight: 30, arbitrary: jsonTextFrom(corpus).map((s) => new TextEncoder().encode(s) as Uint8Array | string) },
      { weight: 10, arbitrary: jsonTextFrom(corpus) },
      { weight: 10, arbitrary: bytesFrom(corpus.map((o) => new TextEncoder().encode(JSON.stringify(o)))) },
      { weight: 10, arbitrary: validClientFrame.map((f) => encodeClientFrame(f)) },
      // Frames around MAX_FRAME_BYTES, in bytes and in UTF-16 units (made once each).
      { weight: 1, arbitrary: fc.tuple(fc.integer({ min: -4, max: 4 }), fc.boolean()).map(([delta, asBytes]) => frameNearLimit(delta, asBytes)) },
    ),
  check(input) {
    const frame = decodeClientFrame(input);
    const size = typeof input === 'string' ? input.length : input.byteLength;
    must(size <= MAX_FRAME_BYTES, `a ${size}-byte frame was accepted`);
    checkClientFrame(frame);
  },
  onRejected(err, input) {
    const id = (err as ProtocolError).details?.id;
    // Only a frame that parsed as a JSON object has an id to echo: the one it carried.
    if (id !== undefined) {
      const text = typeof input === 'string' ? input : new TextDecoder().decode(input);
      checkEchoedId(id, (JSON.parse(text) as { id: number }).id);
    }
    if (err.code === 'FRAME_TOO_LARGE') {
      const size = typeof input === 'string' ? input.length : input.byteLength;
      must(size > MAX_FRAME_BYTES, `FRAME_TOO_LARGE for a ${size}-byte frame`);
    }
  },
});

// ---------------------------------------------------------------------------------------
// Binary SEND and DELIVER
// ---------------------------------------------------------------------------------------

function sendCorpus(): Uint8Array[] {
  const random = corpusRandom('send');
  const targets = (n: number, size: number) =>
    Array.from({ length: n }, (_, i) => ({ deviceId: `device-${i}`, payload: random(size + i) }));
  return [
    encodeSend({ id: 1, envelopeId: random(16), ttlSeconds: 3600, recipientUserId: 'alice', targets: targets(1, 40) }),
    encodeSend({ id: 0xffff_ffff, envelopeId: random(16), ttlSeconds: MAX_TTL_SECONDS, recipientUserId: 'bob@example.com', targets: targets(3, 20) }),
    encodeSend({ id: 9, envelopeId: random(16), ttlSeconds: MIN_TTL_SECONDS, recipientUserId: '~', targets: targets(MAX_TARGETS_PER_SEND, 8) }),
    encodeSend({ id: 77, envelopeId: random(16), ttlSeconds: 60, recipientUserId: 'u'.repeat(MAX_USER_ID_LENGTH), targets: [{ deviceId: 'd'.repeat(64), payload: random(300) }] }),
  ].map((b) => b.slice());
}

const send = defineTarget({
  name: 'protocol/send',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'UNKNOWN_FRAME', 'TOO_MANY_TARGETS', 'ENVELOPE_TOO_LARGE'],
  runs: 100_000,
  setup: () => ({ corpus: sendCorpus() }),
  inputs: ({ corpus }) =>
    fc.oneof(
      { weight: 6, arbitrary: bytesFrom(corpus) },
      { weight: 1, arbitrary: validSend.map((f) => encodeSend(f).slice()) },
    ),
  check(input) {
    const peek = peekSendId(input);
    must(
      peek === (input.length >= 5 && input[0] === 0x01 ? Buffer.from(input.buffer, input.byteOffset, input.byteLength).readUInt32BE(1) : undefined),
      'peekSendId disagrees with the header',
    );
    const f = decodeDetached(input, decodeSend, encodeSend);
    must(f.id === peek, 'decoded id differs from peekSendId');
    must(f.envelopeId.length === ENVELOPE_ID_BYTES, 'envelope id length');
    must(f.ttlSeconds >= MIN_TTL_SECONDS && f.ttlSeconds <= MAX_TTL_SECONDS, 'ttl out of bounds');
    must(f.recipientUserId.length <= MAX_USER_ID_LENGTH && USER_ID_PATTERN.test(f.recipientUserId), 'recipient outside its pattern');
    must(f.targets.length >= 1 && f.targets.length <= MAX_TARGETS_PER_SEND, 'target count out of bounds');
    must(new Set(f.targets.map((t) => t.deviceId)).size === f.targets.length, 'a target device repeats');
    for (const t of f.targets) {
      must(DEVICE_ID_PATTERN.test(t.deviceId), 'target device id outside its pattern');
      must(t.payload.length >= 1 && t.payload.length <= MAX_ENVELOPE_BYTES, 'payload size out of bounds');
    }
    must(sameBytes(encodeSend(f), input), 'SEND does not re-encode to the same bytes');
    must(sameBytes(sendContent(input), input.subarray(1 + 4 + ENVELOPE_ID_BYTES + 4)), 'sendContent is not the bytes after the TTL');
  },
  onRejected(err, input) {
    checkEchoedId((err as ProtocolError).details?.id, peekSendId(input));
  },
});

const deliver = defineTarget({
  name: 'protocol/deliver',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'UNKNOWN_FRAME', 'ENVELOPE_TOO_LARGE'],
  runs: 60_000,
  setup() {
    const random = corpusRandom('deliver');
    const corpus = [
      encodeDeliver({ seq: 1, envelopeId: random(16), senderUserId: 'alice', senderDeviceId: 'phone', storedAtMs: 1_700_000_000_000, expiresAtMs: 1_700_000_360_000, payload: random(64) }),
      encodeDeliver({ seq: Number.MAX_SAFE_INTEGER, envelopeId: random(16), senderUserId: 'x'.repeat(128), senderDeviceId: '_'.repeat(64), storedAtMs: 0, expiresAtMs: Number.MAX_SAFE_INTEGER, payload: new Uint8Array(0) }),
    ].map((b) => b.slice());
    return { corpus };
  },
  inputs: ({ corpus }) =>
    fc.oneof(
      { weight: 6, arbitrary: bytesFrom(corpus) },
      { weight: 1, arbitrary: validDeliver.map((f) => encodeDeliver(f).slice()) },
    ),
  check(input) {
    const f = decodeDetached(input, decodeDeliver, (d) => encodeDeliver(d));
    must(isSafeNat(f.seq) && isSafeNat(f.storedAtMs) && isSafeNat(f.expiresAtMs), 'an integer field is not a safe integer');
    must(f.senderUserId.length <= MAX_USER_ID_LENGTH && USER_ID_PATTERN.test(f.senderUserId), 'sender outside its pattern');
    must(DEVICE_ID_PATTERN.test(f.senderDeviceId), 'sender device outside its pattern');
    must(f.payload.length <= MAX_ENVELOPE_BYTES, 'payload over MAX_ENVELOPE_BYTES');
    must(sameBytes(encodeDeliver(f), input), 'DELIVER does not re-encode to the same bytes');
  },
});

// ---------------------------------------------------------------------------------------
// HTTP bodies of the key directory (read as UTF-8 text, then parseJsonObject, as the relay does)
// ---------------------------------------------------------------------------------------

function checkSignedKey(k: WireSignedKey, publicKeyBytes: number): void {
  must(isSafeNat(k.keyId) && k.keyId <= 0xffff_ffff, 'keyId is not a u32');
  must(k.publicKey.length === publicKeyBytes, `public key is not ${publicKeyBytes} bytes`);
  must(k.signature.length === 64, 'signature is not 64 bytes');
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a, bytesAsHex) === JSON.stringify(b, bytesAsHex);
}

const deviceEntry = defineTarget({
  name: 'protocol/device-entry-request',
  layer: 'protocol',
  codes: ['BAD_REQUEST'],
  runs: 60_000,
  setup() {
    const random = corpusRandom('device-entry-request');
    const corpus = [{ entry: encodeBase64url(random(200)) }, { entry: encodeBase64url(random(MAX_DEVICE_ENTRY_WIRE_BYTES)), extra: [1, 2] }, { entry: 'AA' }];
    return { corpus };
  },
  inputs: ({ corpus }) => bodyText(jsonTextFrom(corpus)),
  check(text) {
    const r: DeviceEntryRequest = decodeDeviceEntryRequest(parseJsonObject(text));
    must(r.entry.length >= 1 && r.entry.length <= MAX_DEVICE_ENTRY_WIRE_BYTES, 'entry size out of bounds');
    const again = decodeDeviceEntryRequest(parseJsonObject(JSON.stringify({ entry: encodeBase64url(r.entry) })));
    must(sameJson(again, r), 'decode(encode(request)) differs from request');
  },
});

/** HTTP bodies arrive as bytes and are read as UTF-8 (invalid sequences replaced). */
function bodyText(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const decoder = new TextDecoder();
  return fc.oneof(
    { weight: 4, arbitrary: text },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map((b) => decoder.decode(b)) },
  );
}

const keyUpload = defineTarget({
  name: 'protocol/key-upload',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'TOO_MANY_KEYS'],
  runs: 40_000,
  testRuns: 1000,
  setup() {
    const random = corpusRandom('key-upload');
    const key = (id: number, size: number) => ({ keyId: id, publicKey: encodeBase64url(random(size)), signature: encodeBase64url(random(64)) });
    const corpus = [
      { signedPrekey: key(1, 32), lastResortKemPrekey: key(2, 1184), oneTimePrekeys: [key(10, 32), key(11, 32)], oneTimeKemPrekeys: [key(20, 1184)] },
      { oneTimePrekeys: Array.from({ length: MAX_KEYS_PER_UPLOAD }, (_, i) => key(100 + i, 32)) },
      { oneTimePrekeys: Array.from({ length: MAX_KEYS_PER_UPLOAD / 2 }, (_, i) => key(i, 32)), oneTimeKemPrekeys: [key(0xffff_ffff, 1184)] },
      { signedPrekey: key(0, 32) },
    ];
    return { corpus };
  },
  inputs: ({ corpus }) => bodyText(jsonTextFrom(corpus)),
  check(text) {
    const u: KeyUploadRequest = decodeKeyUpload(parseJsonObject(text));
    const total = u.oneTimePrekeys.length + u.oneTimeKemPrekeys.length;
    must(total <= MAX_KEYS_PER_UPLOAD, `${total} one-time keys accepted`);
    must(u.signedPrekey !== undefined || u.lastResortKemPrekey !== undefined || total > 0, 'an upload without keys was accepted');
    if (u.signedPrekey) checkSignedKey(u.signedPrekey, 32);
    if (u.lastResortKemPrekey) checkSignedKey(u.lastResortKemPrekey, 1184);
    for (const k of u.oneTimePrekeys) checkSignedKey(k, 32);
    for (const k of u.oneTimeKemPrekeys) checkSignedKey(k, 1184);
    const encoded = {
      ...(u.signedPrekey ? { signedPrekey: encodeSignedKey(u.signedPrekey) } : {}),
      ...(u.lastResortKemPrekey ? { lastResortKemPrekey: encodeSignedKey(u.lastResortKemPrekey) } : {}),
      oneTimePrekeys: u.oneTimePrekeys.map(encodeSignedKey),
      oneTimeKemPrekeys: u.oneTimeKemPrekeys.map(encodeSignedKey),
    };
    must(sameJson(decodeKeyUpload(parseJsonObject(JSON.stringify(encoded))), u), 'decode(encode(upload)) differs from upload');
  },
});

// ---------------------------------------------------------------------------------------
// base64url
// ---------------------------------------------------------------------------------------

const base64url = defineTarget({
  name: 'protocol/base64url',
  layer: 'protocol',
  codes: [],
  runs: 100_000,
  setup() {
    const random = corpusRandom('base64url');
    return { corpus: [0, 1, 2, 3, 4, 31, 32, 33, 64, 100].map((n) => encodeBase64url(random(n))) };
  },
  inputs: ({ corpus }) =>
    fc.oneof(
      { weight: 4, arbitrary: stringsFrom(corpus) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 100 }).map(encodeBase64url) },
      { weight: 1, arbitrary: edgyString(16) },
    ),
  check(s) {
    const b = decodeBase64url(s);
    if (b === undefined) return { rejected: 'undefined' };
    must(encodeBase64url(b) === s, 'an accepted string is not the canonical encoding of its bytes');
    // Node's decoder is lenient (so says nothing about what is refused) but independent.
    must(sameBytes(b, Buffer.from(s, 'base64url')), 'decodes differently from Node');
    return undefined;
  },
});

export const PROTOCOL_TARGETS: readonly FuzzTarget[] = [clientFrame, send, deliver, deviceEntry, keyUpload, base64url];
