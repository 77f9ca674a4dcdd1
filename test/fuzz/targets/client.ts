/**
 * Fuzz targets of what a client decodes from the relay and from people: every server
 * frame and HTTP answer (protocol/), the signed device list's entries and chain rules
 * and link codes (crypto/devices), and the SDK's own payload (client-sdk/payload.ts).
 */
import fc from 'fast-check';
import { decodePayload, encodePayload, type Payload } from '../../../client-sdk/payload.js';
import { DeviceChain } from '../../../crypto/devices/chain.js';
import { decodeDeviceEntry } from '../../../crypto/devices/entry.js';
import { createLinkRequest, decodeLinkRequest, encodeLinkRequest, linkEntry, rootEntry } from '../../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../../crypto/identity/identity-key.js';
import { parseJsonObject } from '../../../protocol/decode.js';
import {
  decodeBundleAnswer,
  decodeDeviceEntryAnswer,
  decodeDeviceListAnswer,
  decodeKeyCountsAnswer,
  encodeBundleAnswer,
  encodeDeviceListAnswer,
  encodeKeyCountsAnswer,
} from '../../../protocol/directory.js';
import { decodeBase64url } from '../../../protocol/base64url.js';
import { encodeDeliver } from '../../../protocol/envelopes.js';
import { encodeStoredBatch } from '../../../protocol/stored-batch.js';
import { type ServerFrame, decodeServerFrame, encodeServerFrame } from '../../../protocol/frames.js';
import { seededRandom } from '../../crypto/session-fixtures.js';
import { type FuzzTarget, defineTarget, must, sameBytes } from '../harness.js';
import { bytesFrom, jsonTextFrom, stringsFrom } from '../mutate.js';

const bytesAsHex = (_k: string, v: unknown): unknown => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v);
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a, bytesAsHex) === JSON.stringify(b, bytesAsHex);

const serverFrame = defineTarget({
  name: 'client/server-frame',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'UNKNOWN_FRAME', 'FRAME_TOO_LARGE', 'ENVELOPE_TOO_LARGE'],
  runs: 60_000,
  setup() {
    const r = seededRandom('fuzz-corpus/server-frame');
    const frames: ServerFrame[] = [
      { type: 'challenge', nonce: r(32) },
      { type: 'auth_ok', userId: 'alice', deviceId: 'phone', expiresAt: 1_800_000_000_000 },
      { type: 'token_ok', expiresAt: 1_800_000_000_000 },
      { type: 'pong', id: 4 },
      { type: 'stored', id: 9, envelopeId: 'AAAAAAAAAAAAAAAAAAAAAA', duplicate: true, storedAt: 1, expiresAt: 2, recipients: [{ deviceId: 'd', seq: 5 }] },
      { type: 'queue_empty', through: 0 },
      { type: 'expired', from: 2, to: 9 },
      { type: 'error', code: 'DEVICE_LIST_MISMATCH', message: 'x', id: 3, details: { devices: ['a'], missing: [], extra: ['b'] } },
    ];
    return { corpus: frames.map((f) => JSON.parse(encodeServerFrame(f)) as object) };
  },
  inputs: ({ corpus }) => jsonTextFrom(corpus),
  check(input) {
    const f = decodeServerFrame(input);
    if (f.type === 'deliver' || f.type === 'stored_batch') return must(false, 'a text frame decoded as a binary one');
    must(same(decodeServerFrame(encodeServerFrame(f)), f), 'decode(encode(frame)) differs from frame');
  },
});

const deliverBinary = defineTarget({
  name: 'client/server-frame-binary',
  layer: 'protocol',
  codes: ['BAD_REQUEST', 'UNKNOWN_FRAME', 'FRAME_TOO_LARGE', 'ENVELOPE_TOO_LARGE'],
  runs: 30_000,
  setup() {
    const r = seededRandom('fuzz-corpus/server-frame-binary');
    const stored = { id: 7, envelopeId: r(16), duplicate: false, storedAt: 5, expiresAt: 6, recipients: [{ deviceId: 'tablet', seq: 3 }, { deviceId: 'phone', seq: 9 }] };
    return {
      corpus: [
        encodeDeliver({ seq: 3, envelopeId: r(16), senderUserId: 'bob', senderDeviceId: 'tablet', storedAtMs: 5, expiresAtMs: 6, payload: r(40) }).slice(),
        encodeStoredBatch([stored, { ...stored, id: 8, duplicate: true, recipients: [{ deviceId: 'x', seq: 1 }] }]).slice(),
      ],
    };
  },
  inputs: ({ corpus }) => bytesFrom(corpus),
  check(input) {
    const f = decodeServerFrame(input, true);
    must(f.type === 'deliver' || f.type === 'stored_batch', 'a binary frame decoded as something else than DELIVER or STORED_BATCH');
    if (f.type !== 'stored_batch') return;
    // What decodes re-encodes to the very same bytes.
    const again = encodeStoredBatch(f.answers.map((a) => ({ ...a, envelopeId: decodeBase64url(a.envelopeId)! })));
    must(sameBytes(again, input), 'encode(decode(STORED_BATCH)) differs from the frame');
  },
});

const answers = defineTarget({
  name: 'client/http-answers',
  layer: 'protocol',
  codes: ['BAD_REQUEST'],
  runs: 60_000,
  setup() {
    const r = seededRandom('fuzz-corpus/http-answers');
    const key = (n: number, id: number) => ({ keyId: id, publicKey: r(n), signature: r(64) });
    const corpus = [
      encodeBundleAnswer({ userId: 'bob', deviceId: 'd1', identityKey: r(32), signedPrekey: key(32, 1), oneTimePrekey: key(32, 2), kemPrekey: key(1184, 3), kemLastResort: false }),
      encodeDeviceListAnswer({ userId: 'bob', length: 2, head: r(32), entries: [r(200), r(300)], devices: [{ deviceId: 'd1', identityKey: r(32) }] }),
      encodeKeyCountsAnswer({ oneTimePrekeys: 3, oneTimeKemPrekeys: 4, hasSignedPrekey: true, hasLastResortKemPrekey: false }),
      { userId: 'bob', seq: 1, kind: 'add', deviceId: 'd2', created: true },
    ].map((o) => JSON.parse(JSON.stringify(o)) as object);
    return { corpus };
  },
  inputs: ({ corpus }) => jsonTextFrom(corpus),
  check(input) {
    const o = parseJsonObject(input);
    // Each decoder either refuses with BAD_REQUEST or gives a value that re-encodes to itself.
    const tryDecode = <T>(decode: (x: typeof o) => T, encode?: (v: T) => unknown): void => {
      let v: T;
      try {
        v = decode(o);
      } catch (err) {
        if ((err as { code?: string }).code === 'BAD_REQUEST') return;
        throw err;
      }
      if (encode) must(same(decode(JSON.parse(JSON.stringify(encode(v))) as typeof o), v), 'an answer does not survive encode and decode');
    };
    tryDecode(decodeBundleAnswer, encodeBundleAnswer);
    tryDecode(decodeDeviceListAnswer, encodeDeviceListAnswer);
    tryDecode(decodeKeyCountsAnswer, encodeKeyCountsAnswer);
    tryDecode(decodeDeviceEntryAnswer);
  },
});

/** A list of two devices, and the one entry that can extend it (a third device). */
function deviceListFixture(): { chain: DeviceChain; next: Uint8Array; entries: Uint8Array[] } {
  const r = seededRandom('fuzz-corpus/device-list');
  const phone = IdentityKeyPair.generate(r);
  const laptop = IdentityKeyPair.generate(r);
  const tablet = IdentityKeyPair.generate(r);
  const e0 = rootEntry(phone, 'alice', 'phone');
  const c0 = DeviceChain.verify('alice', [e0]);
  if (!c0.ok) throw new Error('fixture');
  const e1 = linkEntry(c0.chain, 'phone', phone, createLinkRequest(laptop, 'alice', 'laptop'));
  const c1 = c0.chain.append(e1);
  if (!c1.ok) throw new Error('fixture');
  const next = linkEntry(c1.chain, 'laptop', laptop, createLinkRequest(tablet, 'alice', 'tablet'));
  return { chain: c1.chain, next, entries: [e0, e1, next] };
}

const deviceEntry = defineTarget({
  name: 'crypto/device-entry',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  setup: () => deviceListFixture(),
  inputs: ({ entries }) => bytesFrom(entries),
  check(input, { chain, next }) {
    const before = JSON.stringify(chain.snapshot(), bytesAsHex);
    // The chain rules never throw: an entry extends the list or is refused with a reason.
    const step = chain.append(input);
    must(JSON.stringify(chain.snapshot(), bytesAsHex) === before, 'appending changed the chain it was appended to');
    if (step.ok) must(sameBytes(input, next), 'an entry other than the one genuinely signed extended the list');
    const e = decodeDeviceEntry(input);
    must(sameBytes(e.bytes, input), 'a decoded entry is not its input');
  },
});

const linkCode = defineTarget({
  name: 'crypto/link-code',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'INVALID_SIGNATURE'],
  runs: 40_000,
  setup() {
    const r = seededRandom('fuzz-corpus/link-code');
    const codes = [encodeLinkRequest(createLinkRequest(IdentityKeyPair.generate(r), 'alice', 'tablet')), encodeLinkRequest(createLinkRequest(IdentityKeyPair.generate(r), 'x'.repeat(128), '_'.repeat(64)))];
    return { codes };
  },
  inputs: ({ codes }) => stringsFrom(codes),
  check(input) {
    const req = decodeLinkRequest(input);
    must(encodeLinkRequest(req) === input, 'an accepted link code is not canonical');
  },
});

const payload = defineTarget({
  name: 'client/payload',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 40_000,
  setup() {
    const id = new Uint8Array(16).fill(1);
    const all: Payload[] = [
      { type: 'message', sentAt: 1_800_000_000_000, messageId: id, number: 1, to: 'bob', groupId: undefined, kind: 'text', body: new TextEncoder().encode('hello') },
      { type: 'message', sentAt: 5, messageId: id, number: 4_000_000_000, to: undefined, groupId: 'team', kind: 'json', body: new TextEncoder().encode('{"a":1}') },
      { type: 'distribution', sentAt: 6, messageId: id, groupId: 'team', distribution: new Uint8Array(80).fill(0x13) },
      { type: 'reset', sentAt: 7, messageId: id, failedEnvelopeId: new Uint8Array(16).fill(2) },
      { type: 'receipt', sentAt: 8, messageId: id, jws: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln' },
    ];
    // Version 1 (no message number) is still read: keep one in the corpus.
    const v1 = encodePayload(all[0]!);
    const old = new Uint8Array([1, ...v1.subarray(1, 26), ...v1.subarray(30)]);
    return { corpus: [...all.map(encodePayload), old] };
  },
  inputs: ({ corpus }) => bytesFrom(corpus),
  check(input) {
    const p = decodePayload(input);
    // The current version re-encodes to the same bytes (version 1 is read, never written).
    if (input[0] === 2) must(sameBytes(encodePayload(p), input), 'a payload does not re-encode to the same bytes');
  },
});

export const CLIENT_TARGETS: readonly FuzzTarget[] = [serverFrame, deliverBinary, answers, deviceEntry, linkCode, payload];
