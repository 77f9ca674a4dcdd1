/**
 * Fuzz targets of group sender keys: distribution messages, group messages, and both
 * sides' serialized state.
 *
 * Group messages are signed, so mutated messages mostly stop at the signature check.
 * The fuzzer holds the sender's signing keys and re-signs some mutated messages, so
 * those get past it to the iteration checks, the forward-jump bound and the AEAD.
 */
import fc from 'fast-check';
import { InboundSenderKeys } from '../../../crypto/group/inbound-sender-keys.js';
import { OutboundSenderKey } from '../../../crypto/group/outbound-sender-key.js';
import {
  decodeDistribution,
  decodeGroupMessage,
  encodeDistribution,
  GROUP_HEADER_BYTES,
  signaturePrefix,
  writeGroupHeader,
} from '../../../crypto/group/wire.js';
import { MAX_GROUP_ID_BYTES, MAX_SENDER_KEY_GENERATIONS } from '../../../crypto/limits.js';
import type { CryptoBackend } from '../../../crypto/primitives/backend.js';
import { seededRandom } from '../../crypto/session-fixtures.js';
import { type FuzzTarget, decodeDetached, defineTarget, must, mustOnlyRefuse, sameBytes, Violation } from '../harness.js';
import { bytesFrom } from '../mutate.js';
import { backendArb, backendOf, hex, native, utf8 } from './crypto.js';

const SIGNATURE_BYTES = 64;

interface Group {
  readonly groupId: Uint8Array;
  /** The receiver's state every input starts from: two generations, skipped keys. */
  readonly inbound: Uint8Array;
  /** Messages the receiver would decrypt from that state: hex -> plaintext. */
  readonly genuine: Map<string, Uint8Array>;
  readonly messages: readonly Uint8Array[];
  readonly distributions: readonly Uint8Array[];
  readonly outboundStates: readonly Uint8Array[];
  readonly inboundStates: readonly Uint8Array[];
  /** Signing seed by key id, to re-sign mutated messages. */
  readonly signingSeeds: ReadonlyMap<number, Uint8Array>;
}

/** The signing seed in a serialized outbound state (its layout ends: seed 32 | public key 32). */
function signingSeedOf(state: Uint8Array): Uint8Array {
  return state.slice(state.length - 64, state.length - 32);
}

let group: Group | undefined;

function theGroup(): Group {
  group ??= buildGroup();
  return group;
}

function buildGroup(): Group {
  const backend = native;
  const random = seededRandom('fuzz/sender-keys');
  const groupId = utf8('group/fuzz');
  const out = OutboundSenderKey.create(groupId, { backend, random });
  const seeds = new Map<number, Uint8Array>([[out.keyId, signingSeedOf(out.serialize())]]);
  const outboundStates = [out.serialize()];
  const d1 = out.distributionMessage();
  const inbound = InboundSenderKeys.fromDistribution(d1, { backend });
  const inboundStates = [inbound.serialize()];
  const genuine = new Map<string, Uint8Array>();
  const messages: Uint8Array[] = [];
  const send = (text: string, deliverable: boolean): Uint8Array => {
    const m = out.encrypt(utf8(text));
    messages.push(m);
    if (deliverable) genuine.set(hex(m), utf8(text));
    return m;
  };
  const m = [0, 1, 2, 3, 4, 5].map((i) => send(`m${i}`, i !== 0 && i !== 2));
  inbound.decrypt(m[0] as Uint8Array);
  inbound.decrypt(m[2] as Uint8Array);
  outboundStates.push(out.serialize());
  const d2 = out.rotate();
  seeds.set(out.keyId, signingSeedOf(out.serialize()));
  inbound.processDistribution(d2);
  const n = [0, 1, 2].map((i) => send(`n${i}`, i !== 1));
  inbound.decrypt(n[1] as Uint8Array);
  const snapshot = inbound.serialize();
  inboundStates.push(snapshot);
  outboundStates.push(out.serialize());
  // A third generation the receiver has not seen, and another group's distribution.
  const d3 = out.rotate();
  seeds.set(out.keyId, signingSeedOf(out.serialize()));
  send('o0', false);
  const other = OutboundSenderKey.create(utf8('another group'), { backend, random }).distributionMessage();
  const wide = encodeDistribution({ ...decodeDistribution(d1), groupId: new Uint8Array(MAX_GROUP_ID_BYTES).fill(7), iteration: 0xffff_fffe });
  return {
    groupId,
    inbound: snapshot,
    genuine,
    messages,
    distributions: [d1, d2, d3, other, wide],
    outboundStates,
    inboundStates,
    signingSeeds: seeds,
  };
}

/** Signs `message` (minus its old signature) again with the sender's key for its key id. */
function resign(g: Group, backend: CryptoBackend, message: Uint8Array): Uint8Array {
  if (message.length < GROUP_HEADER_BYTES + SIGNATURE_BYTES) return message;
  const keyId = Buffer.from(message.buffer, message.byteOffset, message.byteLength).readUInt32BE(1);
  const seed = g.signingSeeds.get(keyId) ?? ([...g.signingSeeds.values()][0] as Uint8Array);
  const signed = message.subarray(0, message.length - SIGNATURE_BYTES);
  const signature = backend.ed25519Sign(seed, Buffer.concat([signaturePrefix(g.groupId), signed]));
  return Buffer.concat([signed, signature]);
}

const groupMessage = defineTarget({
  name: 'crypto/group-message',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  setup: theGroup,
  inputs: (g) => bytesFrom(g.messages, { maxRandomLength: 400 }),
  check(input) {
    const m = decodeGroupMessage(input);
    must(m.sealed.length >= 16 && m.signature.length === SIGNATURE_BYTES, 'part sizes');
    must(sameBytes(Buffer.concat([m.signed, m.signature]), input) && sameBytes(Buffer.concat([m.header, m.sealed]), m.signed), 'the parts are not the message');
    const header = new Uint8Array(GROUP_HEADER_BYTES);
    writeGroupHeader(header, m.keyId, m.iteration);
    must(sameBytes(header, m.header), 'the header does not re-encode to the same bytes');
  },
});

const groupDecrypt = defineTarget({
  name: 'crypto/group-decrypt',
  layer: 'crypto',
  codes: ['DECRYPT_FAILED', 'REPLAYED_MESSAGE', 'TOO_MANY_SKIPPED', 'INVALID_STATE', 'INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  testRuns: 1000,
  setup: theGroup,
  inputs: (g) =>
    fc
      .tuple(backendArb, fc.boolean(), bytesFrom(g.messages, { maxRandomLength: 400 }))
      .map(([backend, again, bytes]) => [backend, again ? resign(g, native, bytes) : bytes] as const),
  check([backend, input], g) {
    const keys = InboundSenderKeys.deserialize(g.inbound, { backend: backendOf(backend) });
    let plaintext: Uint8Array | undefined;
    try {
      decodeDetached(input, (b) => (plaintext = keys.decrypt(b)), () => keys.serialize());
    } catch (err) {
      if (err instanceof Violation) throw err;
      must(sameBytes(keys.serialize(), g.inbound), 'a failed decrypt changed the sender keys');
      throw err;
    }
    const expected = g.genuine.get(hex(input));
    must(expected !== undefined, 'a message the sender never sent was accepted');
    must(sameBytes(plaintext as Uint8Array, expected), 'a genuine message decrypted to the wrong plaintext');
  },
});

const distribution = defineTarget({
  name: 'crypto/sender-key-distribution',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  setup: theGroup,
  inputs: (g) => bytesFrom(g.distributions, { maxRandomLength: 200 }),
  check(input) {
    const d = decodeDetached(input, decodeDistribution, encodeDistribution);
    must(d.groupId.length >= 1 && d.groupId.length <= MAX_GROUP_ID_BYTES, 'group id length');
    must(d.chainKey.length === 32 && d.signingKey.length === 32, 'key sizes');
    must(sameBytes(encodeDistribution(d), input), 'a distribution does not re-encode to the same bytes');
    const keys = decodeDetached(input, (b) => InboundSenderKeys.fromDistribution(b), (x) => x.serialize());
    const state = keys.serialize();
    must(sameBytes(InboundSenderKeys.deserialize(state).serialize(), state), 'state from a distribution does not survive serialization');
  },
});

const processDistribution = defineTarget({
  name: 'crypto/sender-key-process',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 50_000,
  setup: theGroup,
  inputs: (g) => bytesFrom(g.distributions, { maxRandomLength: 200 }),
  check(input, g) {
    const keys = InboundSenderKeys.deserialize(g.inbound);
    const held = keys.keyIds;
    try {
      decodeDetached(input, (b) => keys.processDistribution(b), () => keys.serialize());
    } catch (err) {
      if (err instanceof Violation) throw err;
      must(sameBytes(keys.serialize(), g.inbound), 'a refused distribution changed the sender keys');
      throw err;
    }
    const d = decodeDistribution(input);
    if (held.includes(d.keyId)) must(sameBytes(keys.serialize(), g.inbound), 'a repeated generation changed the sender keys');
    else must(keys.keyIds[0] === d.keyId && keys.keyIds.length <= MAX_SENDER_KEY_GENERATIONS, 'a new generation was not installed first');
  },
});

const inboundState = defineTarget({
  name: 'crypto/inbound-sender-keys-state',
  layer: 'crypto',
  codes: ['INVALID_STATE', 'UNSUPPORTED_VERSION'],
  runs: 50_000,
  setup: theGroup,
  inputs: (g) => bytesFrom(g.inboundStates, { maxRandomLength: 400 }),
  check(input) {
    const keys = decodeDetached(input, (b) => InboundSenderKeys.deserialize(b), (x) => x.serialize());
    must(keys.keyIds.length >= 1 && keys.keyIds.length <= MAX_SENDER_KEY_GENERATIONS, 'generation count');
    must(sameBytes(keys.serialize(), input), 'sender keys state does not re-encode to the same bytes');
  },
});

const outboundState = defineTarget({
  name: 'crypto/outbound-sender-key-state',
  layer: 'crypto',
  codes: ['INVALID_STATE', 'UNSUPPORTED_VERSION'],
  runs: 50_000,
  setup: theGroup,
  inputs: (g) => bytesFrom(g.outboundStates, { maxRandomLength: 400 }),
  check(input) {
    const key = decodeDetached(input, (b) => OutboundSenderKey.deserialize(b), (x) => x.serialize());
    must(sameBytes(key.serialize(), input), 'sender key state does not re-encode to the same bytes');
    mustOnlyRefuse('encrypt on a restored sender key', ['INVALID_STATE'], () => key.encrypt(utf8('x')));
  },
});

export const SENDER_KEY_TARGETS: readonly FuzzTarget[] = [
  groupMessage,
  groupDecrypt,
  distribution,
  processDistribution,
  inboundState,
  outboundState,
];
