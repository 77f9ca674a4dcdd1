/**
 * Loads uWebSockets.js and tells whether the native binding loaded. The package falls
 * back to a slow pure-JS implementation when its binary doesn't match the runtime; the
 * relay logs which one it runs on so that a silent 10x slowdown can't go unnoticed.
 */
import { createRequire } from 'node:module';
import type * as UwsTypes from 'uWebSockets.js';

const require = createRequire(import.meta.url);

export const uws = require('uWebSockets.js') as typeof UwsTypes;

export function uwsBinding(): { native: boolean; detail: string } {
  const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  // The package requires binaries/<binary> when it matches the runtime and falls back to
  // its JS dist/ otherwise; the module cache shows which happened.
  const native = Object.keys(require.cache).some((k) => k.endsWith(binary));
  return native ? { native: true, detail: binary } : { native: false, detail: `ws fallback (no usable ${binary})` };
}
