/**
 * Seeded fuzzing of the wire protocol and the relay's own decoders (see seeded.ts);
 * test/fuzz/targets/ says what each target checks.
 */
import { describe } from 'vitest';
import { fuzzSeeded } from './seeded.js';
import { FUZZ_TARGETS } from './targets/index.js';

describe('fuzz: protocol and relay decoders', () => {
  fuzzSeeded(FUZZ_TARGETS.filter((t) => t.layer === 'protocol'));
});
