/**
 * Loads uWebSockets.js and tells whether the native binding loaded. The package falls
 * back to a pure-JS implementation when it has no binary for the runtime, or when
 * UWS_USE_FALLBACK is set; the relay refuses to start on it (server/runtime.ts says why).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as UwsTypes from 'uWebSockets.js';
import type { RelayRuntime } from './runtime.js';

const require = createRequire(import.meta.url);

export const uws = require('uWebSockets.js') as typeof UwsTypes;

/** The binding this process loaded, and the runtime facts the relay depends on. */
export function currentRelayRuntime(): RelayRuntime {
  const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  // The package requires ../binaries/<binary> when it can and falls back to its JS dist/
  // otherwise; the module cache shows which happened.
  const expected = path.join(path.dirname(require.resolve('uWebSockets.js')), '..', 'binaries', binary);
  const native = require.cache[expected] !== undefined;
  return {
    native,
    bindingDetail: native ? binary : `no usable ${binary}`,
    nodeVersion: process.versions.node,
    hasGetBuiltinModule: typeof (process as { getBuiltinModule?: unknown }).getBuiltinModule === 'function',
  };
}
