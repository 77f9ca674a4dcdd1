/**
 * C2SP tlog-tiles paths the relay serves under /v1/log/: `tile/<L>/<N>[.p/<W>]` and
 * `tile/entries/<N>[.p/<W>]`, and the entry-bundle encoding of data tiles.
 */
import { ProtocolError } from '../../protocol/errors.js';

export const TILE_WIDTH = 256;
/** Longest tile path parsed ("tile/entries/x001/x234/067.p/255" is 32 characters). */
const MAX_TILE_PATH_CHARS = 96;
const MAX_TILE_LEVEL = 63;

export type TileRequest =
  | { readonly kind: 'hash'; readonly level: number; readonly index: number; readonly width?: number }
  | { readonly kind: 'entries'; readonly index: number; readonly width?: number };

function notATile(why: string): ProtocolError {
  return new ProtocolError('NOT_FOUND', `not a tile path: ${why}`);
}

/** Parses `x001/x234/067`: all but the last element start with x, each is 3 digits. */
function tileIndex(elements: readonly string[]): number {
  if (elements.length === 0) throw notATile('no index');
  let n = 0;
  elements.forEach((e, i) => {
    const last = i === elements.length - 1;
    const m = (last ? /^(\d{3})$/ : /^x(\d{3})$/).exec(e);
    if (!m) throw notATile('bad index element');
    n = n * 1000 + Number(m[1]);
  });
  if (!Number.isSafeInteger(n)) throw notATile('index out of range');
  return n;
}

export function parseTileRequest(path: string): TileRequest {
  if (path.length > MAX_TILE_PATH_CHARS) throw notATile('too long');
  const parts = path.split('/');
  if (parts[0] !== 'tile' || parts.length < 3) throw notATile('expected tile/<L>/<N>');
  let rest = parts.slice(2);
  let width: number | undefined;
  const last = rest[rest.length - 1] as string;
  if (rest.length >= 2 && (rest[rest.length - 2] as string).endsWith('.p')) {
    if (!/^[1-9]\d{0,2}$/.test(last) || Number(last) > TILE_WIDTH - 1) throw notATile('partial width must be 1..255');
    width = Number(last);
    rest = rest.slice(0, -1);
    rest[rest.length - 1] = (rest[rest.length - 1] as string).slice(0, -2);
  }
  const index = tileIndex(rest);
  const w = width === undefined ? {} : { width };
  if (parts[1] === 'entries') return { kind: 'entries', index, ...w };
  if (!/^(?:0|[1-9]\d?)$/.test(parts[1] as string) || Number(parts[1]) > MAX_TILE_LEVEL) throw notATile('level must be 0..63');
  return { kind: 'hash', level: Number(parts[1]), index, ...w };
}

/** An entry bundle: each entry prefixed with its length as a big-endian uint16. */
export function dataTileBytes(entries: readonly string[]): Uint8Array {
  const parts = entries.map((e) => Buffer.from(e, 'utf8'));
  const out = Buffer.alloc(parts.reduce((n, p) => n + 2 + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.writeUInt16BE(p.length, o);
    p.copy(out, o + 2);
    o += 2 + p.length;
  }
  return out;
}
