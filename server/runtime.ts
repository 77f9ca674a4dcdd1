/**
 * Node flags the relay is meant to run with (`npm start` passes them; so does the
 * benchmark). A larger young generation: the relay allocates a few KiB per envelope
 * that live for milliseconds (frames, payload copies, batch parameters), and with the
 * default 16 MiB semi-space many of them survived into the old generation. Measured
 * (docs/PERFORMANCE.md): ~7 % more relay throughput, for up to ~190 MiB more memory.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];

/**
 * Where the relay runs: Node.js 20 from 20.16 on, with the native uWebSockets.js binding
 * (the package ships binaries for Node 16, 18 and 20 — ABIs 93, 108, 115 — for glibc
 * Linux x64/arm64/arm, macOS x64/arm64 and Windows x64; the relay is run and tested on
 * glibc Linux). Anywhere else the package loads a JS fallback that throws on
 * the relay's upgrade handler (one WebSocket upgrade would end the process) and ignores
 * its backpressure, idle-timeout and upgrade-refusal settings; and before 20.16 there is
 * no `process.getBuiltinModule`, which the native crypto backend is loaded through.
 * package.json `engines` says the same.
 */
export const SUPPORTED_RELAY_RUNTIME = 'Node.js 20 (20.16 or later) with the native uWebSockets.js binding (Linux with glibc on x64 or arm64)';

export interface RelayRuntime {
  /** The native uWebSockets.js binding loaded (not its JS fallback). */
  readonly native: boolean;
  /** Which binary loaded, or which one was missing. */
  readonly bindingDetail: string;
  readonly nodeVersion: string;
  readonly hasGetBuiltinModule: boolean;
}

/** Why the relay cannot run on `rt`, or undefined when it can. */
export function relayRuntimeProblem(rt: RelayRuntime): string | undefined {
  if (!rt.native) {
    return (
      `the relay needs ${SUPPORTED_RELAY_RUNTIME}; on Node.js ${rt.nodeVersion} uWebSockets.js fell back to its JS ` +
      `implementation (${rt.bindingDetail}), which cannot serve the relay safely. ` +
      'The client and crypto modules (hermetic/client, hermetic/crypto) run on newer Node.js and in browsers.'
    );
  }
  if (!rt.hasGetBuiltinModule) {
    return `the relay needs ${SUPPORTED_RELAY_RUNTIME}; Node.js ${rt.nodeVersion} has no process.getBuiltinModule (added in 20.16).`;
  }
  return undefined;
}

/** Thrown by startRelay on a runtime it does not support; `hermetic serve` exits 2. */
export class UnsupportedRuntimeError extends Error {
  override readonly name = 'UnsupportedRuntimeError';
}
