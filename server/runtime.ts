/**
 * Node flags the relay is meant to run with (`npm start` passes them; so does the
 * benchmark). A larger young generation: the relay allocates a few KiB per envelope
 * that live for milliseconds (frames, payload copies, batch parameters), and with the
 * default 16 MiB semi-space many of them survived into the old generation. Measured
 * (docs/PERFORMANCE.md): ~7 % more relay throughput, for up to ~190 MiB more memory.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];
