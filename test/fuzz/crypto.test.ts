/**
 * Seeded fuzzing of the crypto decoders (see seeded.ts); test/fuzz/targets/ says what
 * each target checks.
 */
import { describe } from 'vitest';
import { fuzzSeeded } from './seeded.js';
import { FUZZ_TARGETS } from './targets/index.js';

describe('fuzz: crypto decoders', () => {
  fuzzSeeded(FUZZ_TARGETS.filter((t) => t.layer === 'crypto'));
});
