/**
 * The default backend's lifecycle, each case in a fresh module graph: usable before
 * libsodium has loaded (the fallback serves), started by the first call of a primitive
 * that prefers libsodium, switched once it is ready; and a failed load leaves the
 * fallbacks in place with the reason reported once and shown by describeBackend().
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { toHex } from '../../crypto/primitives/bytes.js';
import { nobleBackend } from '../../crypto/primitives/noble.js';

type Select = typeof import('../../crypto/primitives/select.js');

async function freshSelect(): Promise<Select> {
  vi.resetModules();
  return import('../../crypto/primitives/select.js');
}

const seed = Uint8Array.from({ length: 64 }, (_, i) => 255 - i);

afterEach(() => {
  vi.doUnmock('libsodium-wrappers-sumo');
  vi.resetModules();
});

describe('default backend lifecycle', () => {
  it('serves ML-KEM from noble before libsodium loads, starts the load on first use, then switches', async () => {
    const s = await freshSelect();
    expect(s.describeBackend()).toMatchObject({ sodium: 'not loaded', primitives: { mlkem: 'noble', x25519: 'native' } });
    // Primitives served by node:crypto alone never start the load in Node.
    s.selectedBackend.sha256(seed);
    expect(s.describeBackend().sodium).toBe('not loaded');
    expect(s.describeBackend().primitives.aead).toBe('native'); // until libsodium is ready
    const before = s.selectedBackend.mlkemKeygen(seed);
    expect(toHex(before.publicKey)).toBe(toHex(nobleBackend.mlkemKeygen(seed).publicKey));
    expect(s.describeBackend().sodium).toBe('loading');
    const d = await s.cryptoReady();
    expect(d).toMatchObject({ sodium: 'ready', primitives: { mlkem: 'sodium', aead: 'sodium', x25519: 'native' } });
    const after = s.selectedBackend.mlkemKeygen(seed);
    expect(toHex(after.secretKey)).toBe(toHex(before.secretKey));
  });

  it('a failed load keeps the fallbacks, is reported once with its reason, and cryptoReady still resolves', async () => {
    vi.doMock('libsodium-wrappers-sumo', () => ({
      default: { ready: Promise.reject(new Error('WebAssembly is not allowed here')) },
    }));
    const s = await freshSelect();
    const reports: string[] = [];
    s.onSodiumUnavailable((reason) => reports.push(reason));
    const d = await s.cryptoReady();
    expect(d).toMatchObject({ sodium: 'failed', sodiumError: 'WebAssembly is not allowed here', primitives: { mlkem: 'noble' } });
    await s.cryptoReady();
    expect(reports).toEqual(['WebAssembly is not allowed here']);
    const kp = s.selectedBackend.mlkemKeygen(seed);
    const { cipherText, sharedSecret } = s.selectedBackend.mlkemEncapsulate(kp.publicKey);
    expect(toHex(s.selectedBackend.mlkemDecapsulate(cipherText, kp.secretKey))).toBe(toHex(sharedSecret));
  });
});
