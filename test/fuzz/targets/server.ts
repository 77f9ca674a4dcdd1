/**
 * Fuzz targets of the relay's own decoding: URL path parameters, the Authorization
 * header, and the mailbox notices it reads back from PostgreSQL NOTIFY payloads.
 */
import fc from 'fast-check';
import { decodeDeviceId } from '../../../protocol/directory.js';
import { DEVICE_ID_PATTERN } from '../../../protocol/limits.js';
import { bearerToken } from '../../../server/auth/tokens.js';
import { decodePathParam } from '../../../server/http/context.js';
import { NOTICE_MAX_BYTES, NOTICE_MAX_TAILS, connectedNotice, decodeNotice, encodeNotice } from '../../../server/fleet/notice.js';
import { type FuzzTarget, defineTarget, must } from '../harness.js';
import { edgyString, jsonTextFrom, stringsFrom } from '../mutate.js';

/** Pieces of raw path segments: valid and broken percent-escapes, UTF-8 sequences, text. */
const PATH_PIECES = [
  'a', 'Z', '0', '-', '_', '.', '~', '/', '+', ' ', 'é', '%', '%2', '%%', '%zz', '%41', '%25', '%2F', '%00', '%7F', '%80',
  '%C3%A9', '%C3', '%C0%80', '%E2%82%AC', '%E2%82', '%ED%A0%80', '%F0%9F%98%80', '%F4%90%80%80', '%FF',
];

const pathSegment = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.constantFrom(...PATH_PIECES), { maxLength: 24 }).map((p) => p.join('')) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map(encodeURIComponent) },
  { weight: 1, arbitrary: edgyString(40) },
);

/** In a u-mode pattern a surrogate pair is one code point, so this matches only lone halves. */
const LONE_SURROGATE = /\p{Cs}/u;

const pathParam = defineTarget({
  name: 'server/path-param',
  layer: 'protocol',
  codes: ['BAD_REQUEST'],
  runs: 80_000,
  setup: () => ({}),
  // A segment, and whether the route reads it as a device id (as /v1/devices/:deviceId does).
  inputs: () => fc.tuple(pathSegment, fc.boolean()),
  check([raw, asDevice]) {
    const s = decodePathParam(raw, 'deviceId');
    // (A lone surrogate has no URI encoding; uWS hands over decoded UTF-8, never one.)
    if (!LONE_SURROGATE.test(s)) must(decodePathParam(encodeURIComponent(s), 'deviceId') === s, 'decoded segment does not survive encode/decode');
    if (asDevice) must(DEVICE_ID_PATTERN.test(decodeDeviceId(s)), 'device id outside its pattern');
  },
});

const TOKEN_CHARS = /^[A-Za-z0-9._~+/-]+=*$/;

const bearer = defineTarget({
  name: 'server/bearer-token',
  layer: 'protocol',
  codes: ['UNAUTHENTICATED'],
  runs: 80_000,
  setup: () => ({
    corpus: ['Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln', 'bearer abc==', 'BEARER a.b.c', 'Bearer ' + 'A'.repeat(400), 'Basic dXNlcjpwYXNz', ''],
  }),
  inputs: ({ corpus }) =>
    fc.oneof(
      { weight: 4, arbitrary: stringsFrom(corpus) },
      // Long near-misses: a regular expression must not go quadratic on them.
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.integer({ min: 1, max: 16_384 }), fc.constantFrom('', '=', '!', ' ', '=a', '\n'))
          .map(([n, tail]) => `Bearer ${'a'.repeat(n)}${'='.repeat(n % 7)}${tail}`),
      },
    ),
  check(header) {
    const token = bearerToken(header);
    if (token === undefined) {
      must(header === '', 'a non-empty header was taken as absent');
      return { rejected: 'absent' };
    }
    must(header.slice(0, 7).toLowerCase() === 'bearer ' && header.slice(7) === token, 'token is not the rest of the header');
    must(TOKEN_CHARS.test(token), 'token has characters outside the token68 syntax');
    return undefined;
  },
});

/** Notices as the store function (migrations/0004) and encodeNotice write them. */
const noticeCorpus = [
  { node: 'relay-a', kind: 'tails', tails: [['alice', 'phone', 12], ['bob', 'laptop', 1]] },
  { node: 'relay-b', kind: 'all' },
  { node: '', kind: 'revoked', userId: 'dave', deviceId: 'old-phone' },
  JSON.parse(encodeNotice(connectedNotice('relay-c', 'carol', 'tablet', 1_700_000_000_000))) as object,
];

const mailboxNotice = defineTarget({
  name: 'server/mailbox-notice',
  layer: 'protocol',
  codes: [],
  runs: 60_000,
  setup: () => ({}),
  inputs: () => jsonTextFrom(noticeCorpus),
  check(payload) {
    const n = decodeNotice(payload);
    if (n === undefined) return { rejected: 'ignored' };
    must(Buffer.byteLength(payload) <= NOTICE_MAX_BYTES, `a notice of ${Buffer.byteLength(payload)} bytes was accepted`);
    must(typeof n.node === 'string', 'node is not a string');
    switch (n.kind) {
      case 'all':
        break;
      case 'revoked':
        must(typeof n.userId === 'string' && typeof n.deviceId === 'string', 'revoked ids are not strings');
        break;
      case 'connected':
        must(typeof n.userId === 'string' && typeof n.deviceId === 'string', 'connected ids are not strings');
        must(Number.isSafeInteger(n.at) && n.at >= 0, `connected time ${n.at} is not a non-negative safe integer`);
        break;
      case 'tails':
        must(Array.isArray(n.tails) && n.tails.length <= NOTICE_MAX_TAILS, 'tails is not an array of at most NOTICE_MAX_TAILS');
        for (const t of n.tails) {
          must(typeof t[0] === 'string' && typeof t[1] === 'string', 'tail ids are not strings');
          // A tail moves a delivery stream's cursor: anything but a sequence number (an
          // Infinity from 1e400, a fraction) would make it announce what does not exist.
          must(Number.isSafeInteger(t[2]) && t[2] >= 0, `tail ${t[2]} is not a non-negative safe integer`);
        }
        break;
      default:
        must(false, `unknown notice kind ${(n as { kind: unknown }).kind as string}`);
    }
    return undefined;
  },
});

export const SERVER_TARGETS: readonly FuzzTarget[] = [pathParam, bearer, mailboxNotice];
