import { fc, it } from '@fast-check/vitest';
import { describe, expect } from 'vitest';
import {
  MAX_PADDED_PLAINTEXT_BYTES,
  PADDING_LARGE_STEP_BYTES,
  PADDING_MIN_BUCKET_BYTES,
  PADDING_POWER_OF_TWO_MAX_BYTES,
} from '../../crypto/limits.js';
import { MAX_UNPADDED_PLAINTEXT_BYTES, pad, paddedLength, unpad } from '../../crypto/padding.js';
import { expectCryptoError } from './helpers.js';

describe('padding', () => {
  it('bucket boundaries', () => {
    expect(paddedLength(0)).toBe(256);
    expect(paddedLength(255)).toBe(256);
    expect(paddedLength(256)).toBe(512); // marker byte pushes it over
    expect(paddedLength(1000)).toBe(1024);
    expect(paddedLength(65_535)).toBe(65_536);
    expect(paddedLength(65_536)).toBe(131_072);
    expect(paddedLength(131_071)).toBe(131_072);
    expect(paddedLength(131_072)).toBe(196_608); // multiples of 64 KiB above 64 KiB
    expect(paddedLength(MAX_UNPADDED_PLAINTEXT_BYTES)).toBe(MAX_PADDED_PLAINTEXT_BYTES);
    expectCryptoError(() => paddedLength(MAX_UNPADDED_PLAINTEXT_BYTES + 1), 'INVALID_ARGUMENT');
    expectCryptoError(() => paddedLength(-1), 'INVALID_ARGUMENT');
    expect(MAX_PADDED_PLAINTEXT_BYTES % PADDING_LARGE_STEP_BYTES).toBe(0);
  });

  it.prop([fc.integer({ min: 0, max: MAX_UNPADDED_PLAINTEXT_BYTES })], { numRuns: 500 })(
    'every bucket is a power of two >= 256 up to 64 KiB, then a multiple of 64 KiB; overhead bounded',
    (n) => {
      const p = paddedLength(n);
      expect(p).toBeGreaterThan(n);
      if (p <= PADDING_POWER_OF_TWO_MAX_BYTES) {
        expect(p).toBeGreaterThanOrEqual(PADDING_MIN_BUCKET_BYTES);
        expect(p & (p - 1)).toBe(0);
        if (p > PADDING_MIN_BUCKET_BYTES) expect(n + 1).toBeGreaterThan(p / 2);
      } else {
        expect(p % PADDING_LARGE_STEP_BYTES).toBe(0);
        expect(p - (n + 1)).toBeLessThan(PADDING_LARGE_STEP_BYTES);
      }
    },
  );

  it.prop([fc.uint8Array({ maxLength: 5000 })], { numRuns: 200 })('unpad(pad(x)) = x, including trailing zeros and 0x80s', (x) => {
    const padded = pad(x);
    expect(padded.length).toBe(paddedLength(x.length));
    expect(unpad(padded)).toEqual(x);
  });

  it('plaintexts ending in 0x80 or zeros survive', () => {
    for (const x of [new Uint8Array([0x80]), new Uint8Array([0x80, 0]), new Uint8Array(300), new Uint8Array(255).fill(0x80)]) {
      expect(unpad(pad(x))).toEqual(x);
    }
  });

  it('large round trip at the top bucket', () => {
    const x = new Uint8Array(MAX_UNPADDED_PLAINTEXT_BYTES).fill(7);
    expect(unpad(pad(x))).toEqual(x);
  });

  it('bad padding is INVALID_MESSAGE', () => {
    const good = pad(new Uint8Array([1, 2, 3]));
    const noMarker = good.slice();
    noMarker[3] = 0;
    const wrongMarker = good.slice();
    wrongMarker[3] = 0x81;
    const junkAfter = good.slice();
    junkAfter[200] = 1;
    const cases: Uint8Array[] = [
      noMarker, // all zeros after the data: no marker at all
      new Uint8Array(256), // all zero
      wrongMarker,
      junkAfter, // non-zero byte after the marker
      good.subarray(0, 255), // not a bucket size
      good.subarray(0, 128), // shorter than the smallest bucket
      new Uint8Array(MAX_PADDED_PLAINTEXT_BYTES + PADDING_LARGE_STEP_BYTES), // over the max
      (() => {
        // Well-formed marker but the wrong bucket: 3 bytes padded to 512, not 256.
        const b = new Uint8Array(512);
        b.set([1, 2, 3, 0x80]);
        return b;
      })(),
    ];
    for (const c of cases) expectCryptoError(() => unpad(c), 'INVALID_MESSAGE', 'invalid padding');
  });
});
