/**
 * The relay's origin: the one string a device signs, in every connection's auth
 * transcript, to say which relay it means to talk to (channel binding). A phishing relay
 * that forwards the real relay's challenge gets a signature naming itself, which the real
 * relay refuses.
 *
 * Normal form: `ws://host[:port]` or `wss://host[:port]`, lower-case host, the default
 * port (80, 443) omitted, no path — WHATWG URL's `origin` for ws and wss. An http(s) URL
 * names the same relay as ws(s), so it normalizes to the WebSocket scheme.
 */
import { MAX_ORIGIN_LENGTH } from './limits.js';

const WEBSOCKET_SCHEME: Readonly<Record<string, string>> = { 'ws:': 'ws:', 'wss:': 'wss:', 'http:': 'ws:', 'https:': 'wss:' };

/** The normal form of a relay URL's origin, or undefined for anything that is not one. */
export function relayOrigin(url: string): string | undefined {
  if (typeof url !== 'string' || url.length === 0 || url.length > 2048) return undefined;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const scheme = WEBSOCKET_SCHEME[u.protocol];
  if (scheme === undefined || u.host === '' || u.username !== '' || u.password !== '') return undefined;
  const ws = new URL(`${scheme}//${u.host}`);
  const origin = `${ws.protocol}//${ws.host}`;
  return origin.length <= MAX_ORIGIN_LENGTH ? origin : undefined;
}
