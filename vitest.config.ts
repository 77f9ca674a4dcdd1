import { defineConfig } from 'vitest/config';

// Node 20 ships the WHATWG WebSocket client behind a flag (on by default from Node 22);
// the relay tests talk to real relay processes through it.
const webSocketFlag = typeof WebSocket === 'undefined' ? ['--experimental-websocket'] : [];

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
    execArgv: webSocketFlag,
  },
});
