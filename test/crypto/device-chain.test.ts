import { fc, test as fcTest } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { DeviceChain, type DeviceChainRefusal } from '../../crypto/devices/chain.js';
import { decodeDeviceEntry, deviceEntryHash, signDeviceEntry } from '../../crypto/devices/entry.js';
import {
  createLinkRequest,
  decodeLinkRequest,
  encodeLinkRequest,
  LINK_CODE_PREFIX,
  linkEntry,
  revokeEntry,
  rootEntry,
} from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { MAX_DEVICE_LIST_ENTRIES, MAX_DEVICE_LIST_LENGTH, MAX_DEVICES_PER_USER } from '../../protocol/limits.js';
import { expectCryptoError, native } from './helpers.js';

const b = native;

interface Dev {
  id: string;
  key: IdentityKeyPair;
}

function dev(id: string): Dev {
  return { id, key: IdentityKeyPair.generate(undefined, b) };
}

function link(chain: DeviceChain, signer: Dev, subject: Dev, userId = chain.userId): Uint8Array {
  return linkEntry(chain, signer.id, signer.key, createLinkRequest(subject.key, userId, subject.id));
}

function ok(chain: DeviceChain, entry: Uint8Array): DeviceChain {
  const step = chain.append(entry, b);
  if (!step.ok) throw new Error(`refused: ${step.reason}: ${step.message}`);
  return step.chain;
}

function refused(chain: DeviceChain, entry: Uint8Array, reason: DeviceChainRefusal): void {
  const step = chain.append(entry, b);
  expect(step.ok ? 'accepted' : step.reason).toBe(reason);
}

/** alice: root phone, then laptop linked by the phone. */
function aliceChain(): { phone: Dev; laptop: Dev; entries: Uint8Array[]; chain: DeviceChain } {
  const phone = dev('phone');
  const laptop = dev('laptop');
  const e0 = rootEntry(phone.key, 'alice', phone.id);
  let chain = ok(DeviceChain.empty('alice'), e0);
  const e1 = link(chain, phone, laptop);
  chain = ok(chain, e1);
  return { phone, laptop, entries: [e0, e1], chain };
}

describe('signed device list', () => {
  it('root, link and revoke give the active devices; the whole list verifies from the root', () => {
    const { phone, laptop, entries, chain } = aliceChain();
    expect(chain.devices.map((d) => d.deviceId)).toEqual(['laptop', 'phone']);
    expect(chain.rootIdentityKey).toEqual(phone.key.publicKey.bytes);
    const tablet = dev('tablet');
    const e2 = link(chain, laptop, tablet);
    const withTablet = ok(chain, e2);
    const e3 = revokeEntry(withTablet, tablet.id, tablet.key, laptop.id);
    const final = ok(withTablet, e3);
    expect(final.devices.map((d) => [d.deviceId, d.addedAt])).toEqual([
      ['phone', 0],
      ['tablet', 2],
    ]);
    const all = DeviceChain.verify('alice', [...entries, e2, e3], b);
    expect(all.ok).toBe(true);
    if (all.ok) {
      expect(all.chain.head).toEqual(final.head);
      expect(all.chain.length).toBe(4);
    }
    // The relay's trusted replay of the same rows reaches the same state.
    const replayed = DeviceChain.replay(
      'alice',
      [...entries, e2, e3].map((e) => {
        const d = decodeDeviceEntry(e);
        return { kind: d.kind, deviceId: d.deviceId, identityKey: d.identityKey, hash: deviceEntryHash(b, d) };
      }),
    );
    expect(replayed.snapshot()).toEqual(final.snapshot());
    expect(DeviceChain.fromSnapshot(final.snapshot()).snapshot()).toEqual(final.snapshot());
  });

  it('refuses an entry for another user, a second root, and a list without a root', () => {
    const { phone, chain } = aliceChain();
    refused(chain, rootEntry(dev('x').key, 'alice', 'x'), 'root-exists');
    refused(DeviceChain.empty('alice'), link(chain, phone, dev('y')), 'no-root');
    refused(DeviceChain.empty('bob'), rootEntry(phone.key, 'alice', phone.id), 'wrong-user');
  });

  it('refuses an entry that does not extend the head (a fork or a stale list)', () => {
    const { phone, chain, entries } = aliceChain();
    const atOne = ok(DeviceChain.empty('alice'), entries[0]!);
    // Signed against the list of length 1: the head has moved on.
    refused(chain, link(atOne, phone, dev('late')), 'not-next');
    // Right seq, wrong prev.
    const forged = signDeviceEntry(
      { kind: 'add', userId: 'alice', seq: chain.length, prev: new Uint8Array(32).fill(7), deviceId: 'x', identityKey: dev('x').key.publicKey.bytes, signerDeviceId: phone.id },
      phone.key,
      new Uint8Array(64),
    );
    refused(chain, forged, 'not-next');
  });

  it('a device that is not active cannot sign, and a token alone (no device key) signs nothing', () => {
    const { phone, laptop, chain } = aliceChain();
    const mallory = dev('mallory');
    // Signed by a key that is not in the list, naming an active signer: bad signature.
    refused(chain, linkEntry(chain, phone.id, mallory.key, createLinkRequest(mallory.key, 'alice', mallory.id)), 'bad-signature');
    // Naming a signer that is not in the list.
    refused(chain, linkEntry(chain, 'ghost', mallory.key, createLinkRequest(mallory.key, 'alice', mallory.id)), 'signer-not-active');
    // A revoked device can no longer sign.
    const after = ok(chain, revokeEntry(chain, phone.id, phone.key, laptop.id));
    refused(after, link(after, laptop, dev('z')), 'signer-not-active');
  });

  it('an add needs the new device\'s own consent, for this user and device id', () => {
    const { phone, chain } = aliceChain();
    const victim = dev('victim');
    // The phone tries to enrol someone else's key with a consent made for another account.
    const consentForBob = createLinkRequest(victim.key, 'bob', victim.id);
    refused(chain, linkEntry(chain, phone.id, phone.key, { ...consentForBob, userId: 'alice' }), 'bad-consent');
  });

  it('a device id or identity key never comes back once used', () => {
    const { phone, laptop, chain } = aliceChain();
    refused(chain, link(chain, phone, laptop), 'device-exists');
    const after = ok(chain, revokeEntry(chain, phone.id, phone.key, laptop.id));
    refused(after, link(after, phone, laptop), 'device-exists');
    refused(after, link(after, phone, { id: 'laptop2', key: laptop.key }), 'device-exists');
    refused(after, link(after, phone, dev('laptop')), 'device-exists');
  });

  it('revocation: only an active device with its key; never the last device', () => {
    const { phone, laptop, chain } = aliceChain();
    const wrongKey = signDeviceEntry(
      { kind: 'revoke', userId: 'alice', seq: chain.length, prev: chain.head, deviceId: laptop.id, identityKey: phone.key.publicKey.bytes, signerDeviceId: phone.id },
      phone.key,
    );
    refused(chain, wrongKey, 'not-active');
    const self = ok(chain, revokeEntry(chain, laptop.id, laptop.key, laptop.id));
    expect(self.devices.map((d) => d.deviceId)).toEqual(['phone']);
    refused(self, signDeviceEntry(
      { kind: 'revoke', userId: 'alice', seq: self.length, prev: self.head, deviceId: phone.id, identityKey: phone.key.publicKey.bytes, signerDeviceId: phone.id },
      phone.key,
    ), 'last-device');
  });

  it(`at most ${MAX_DEVICES_PER_USER} active devices; no device added past ${MAX_DEVICE_LIST_ENTRIES} entries, yet every device stays revocable, up to ${MAX_DEVICE_LIST_LENGTH} entries`, () => {
    const root = dev('d0');
    let chain = ok(DeviceChain.empty('alice'), rootEntry(root.key, 'alice', root.id));
    // A thief holding one linked device fills the list with add/revoke pairs of its own.
    const thief = dev('thief');
    chain = ok(chain, link(chain, root, thief));
    const devs = [root, thief];
    for (let i = 2; i < MAX_DEVICES_PER_USER; i++) {
      const d = dev(`d${i}`);
      chain = ok(chain, link(chain, root, d));
      devs.push(d);
    }
    refused(chain, link(chain, root, dev('one-too-many')), 'too-many-devices');
    let n = 0;
    while (chain.length < MAX_DEVICE_LIST_ENTRIES) {
      if (chain.length % 2 === 0) {
        chain = ok(chain, revokeEntry(chain, thief.id, thief.key, devs.pop()!.id));
      } else {
        const d = dev(`t${n++}`);
        chain = ok(chain, linkEntry(chain, thief.id, thief.key, createLinkRequest(d.key, 'alice', d.id)));
        devs.push(d);
      }
    }
    expect(chain.devices).toHaveLength(MAX_DEVICES_PER_USER);
    refused(chain, link(chain, root, dev('late')), 'chain-full');
    // The owner still revokes the stolen device, then every other but one.
    chain = ok(chain, revokeEntry(chain, root.id, root.key, thief.id));
    for (const d of devs) if (d !== root && d !== thief) chain = ok(chain, revokeEntry(chain, root.id, root.key, d.id));
    expect(chain.devices.map((d) => d.deviceId)).toEqual([root.id]);
    expect(chain.length).toBe(MAX_DEVICE_LIST_LENGTH);
    refused(chain, revokeEntry(chain, root.id, root.key, root.id), 'last-device');
    refused(chain, link(chain, root, dev('later')), 'chain-full');
  });

  fcTest.prop([fc.nat(), fc.integer({ min: 0, max: 7 })], { numRuns: 200 })(
    'flipping any bit of any entry makes the list fail to verify',
    (pos, bit) => {
      const { entries } = aliceChain();
      const i = pos % entries.length;
      const e = entries[i]!.slice();
      const at = Math.floor(pos / entries.length) % e.length;
      e[at]! ^= 1 << bit;
      const copy = [...entries];
      copy[i] = e;
      expect(DeviceChain.verify('alice', copy, b).ok).toBe(false);
    },
  );

  it('extending a pinned chain detects a relay that serves another history', () => {
    const { phone, chain } = aliceChain();
    // The relay shows one client a list with "evil" linked at seq 2 ...
    const evil = dev('evil');
    const forkA = link(chain, phone, evil);
    const pinned = ok(chain, forkA);
    // ... and later a different entry 2 followed by an entry 3 built on it.
    const other = dev('other');
    const forkB = link(chain, phone, other);
    const afterB = ok(chain, forkB);
    const next = link(afterB, phone, dev('next'));
    const step = pinned.extend([next], b);
    expect(step.ok).toBe(false);
    if (!step.ok) expect(step.reason).toBe('not-next');
  });
});

describe('link codes', () => {
  it('round-trip and verify the consent', () => {
    const d = dev('tablet');
    const req = createLinkRequest(d.key, 'alice', 'tablet');
    const code = encodeLinkRequest(req);
    expect(code.startsWith(LINK_CODE_PREFIX)).toBe(true);
    expect(decodeLinkRequest(code, b)).toEqual(req);
  });

  it('refuse garbage, truncation and a consent for other ids', () => {
    const d = dev('tablet');
    const req = createLinkRequest(d.key, 'alice', 'tablet');
    expectCryptoError(() => decodeLinkRequest('hello', b), 'INVALID_MESSAGE');
    expectCryptoError(() => decodeLinkRequest(encodeLinkRequest(req).slice(0, -4), b), 'INVALID_MESSAGE');
    expectCryptoError(() => decodeLinkRequest(encodeLinkRequest({ ...req, deviceId: 'other' }), b), 'INVALID_SIGNATURE');
    expectCryptoError(() => createLinkRequest(d.key, 'alice', 'bad id!'), 'INVALID_ARGUMENT');
  });
});
