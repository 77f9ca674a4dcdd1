import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests start real relay processes and databases; give them room,
    // but never assert on wall time.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: more workers only thrash the relay processes under test.
    maxWorkers: 2,
  },
});
