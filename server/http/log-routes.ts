/**
 * The receipt log's HTTP routes (docs/PROTOCOL.md "Receipt log"): submission, the signed
 * checkpoint and its history, the verifier key, proofs, C2SP tlog-tiles, receipt
 * listings, and the device identity keys as JWKs an auditor checks receipts with.
 *
 * Public: the checkpoint, key, history, proofs and hash tiles (hashes reveal nothing).
 * A user's token: submitting, listing the receipts the user is a party to, device JWKs.
 * The auditor claim: data tiles and every receipt.
 */
import type { TemplatedApp } from 'uWebSockets.js';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { identityJwk, jwkThumbprint } from '../../crypto/evidence/jws.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { TILE_WIDTH } from '../../crypto/tlog/limits.js';
import { type Tile, buildHashTile, encodeEntryBundle, parseTilePath, tileWithin } from '../../crypto/tlog/tiles.js';
import { parseJsonObject } from '../../protocol/decode.js';
import { decodeDeviceId } from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import {
  type CheckpointsAnswer,
  type ConsistencyProofAnswer,
  DEFAULT_LOG_CHECKPOINTS_PAGE,
  DEFAULT_LOG_RECEIPTS_PAGE,
  type InclusionProofAnswer,
  type LogKeyAnswer,
  MAX_LOG_CHECKPOINTS_PAGE,
  MAX_LOG_RECEIPTS_PAGE,
  MAX_LOG_SIZE,
  type ReceiptsAnswer,
  type SubmitReceiptsAnswer,
  type SubmitReceiptsRequest,
  decodeSubmitReceiptsRequest,
} from '../../protocol/log.js';
import type { DirectoryService } from '../directory/service.js';
import type { LogKey } from '../log/log-key.js';
import type { ReceiptLog } from '../log/service.js';
import type { StoredCheckpoint } from '../log/store.js';
import { decodePathParam } from './context.js';
import type { Router } from './router.js';

export interface LogRouteDeps {
  readonly log: ReceiptLog;
  readonly key: LogKey;
  readonly directory: DirectoryService;
  readonly backend: CryptoBackend;
  /** Validates a user id path parameter (the directory routes' rule). */
  readonly userParam: (raw: string) => string;
}

/** The checkpoint changes as the log grows: cache it for a second at most (tlog-tiles). */
const CHECKPOINT_CACHE = 'public, max-age=1';
/** A full tile never changes. */
const FULL_TILE_CACHE = 'public, max-age=31536000, immutable';
/** A partial tile of a width never changes either, but may be removed once full. */
const PARTIAL_TILE_CACHE = 'public, max-age=60';
/** Data tiles are for auditors: never in a shared cache. */
const DATA_TILE_CACHE = 'private, max-age=31536000, immutable';

const encoder = new TextEncoder();
const DECIMAL = /^(?:0|[1-9]\d{0,15})$/;

/** A decimal query parameter in [min, max]; `def` when absent (required when undefined). */
export function intParam(query: URLSearchParams, name: string, min: number, max: number, def?: number): number {
  const raw = query.get(name);
  if (raw === null) {
    if (def === undefined) throw new ProtocolError('BAD_REQUEST', `${name}: required`);
    return def;
  }
  const v = DECIMAL.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new ProtocolError('BAD_REQUEST', `${name}: must be an integer in ${min}..${max}`);
  return v;
}

const b64 = (h: Uint8Array): string => Buffer.from(h).toString('base64');

function checkpointJson(c: StoredCheckpoint): CheckpointsAnswer['checkpoints'][number] {
  return { size: c.size, root: b64(c.root), signedAt: c.signedAtMs, note: c.note };
}

export function registerLogRoutes(app: TemplatedApp, router: Router, deps: LogRouteDeps): void {
  const { route, authUser, authCaller } = router;
  const { log } = deps;

  app.post(
    '/v1/log/receipts',
    route('log_submit', 0, async (ex) => {
      const query = new URLSearchParams(ex.info.query);
      const [caller, text] = await Promise.all([authUser(ex), ex.readJsonText()]);
      let req: SubmitReceiptsRequest;
      let wantCheckpoint: boolean;
      try {
        wantCheckpoint = intParam(query, 'checkpoint', 0, 1, 0) === 1;
        req = decodeSubmitReceiptsRequest(parseJsonObject(text));
      } catch (err) {
        if (err instanceof ProtocolError) log.refused(err.code);
        throw err;
      }
      const r = await log.submit(caller, req.receipts, wantCheckpoint);
      const answer: SubmitReceiptsAnswer = r.checkpoint ? { entries: r.entries, checkpoint: r.checkpoint.note } : { entries: r.entries };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/receipts',
    route('log_receipts', 0, async (ex) => {
      const caller = await authCaller(ex);
      const query = new URLSearchParams(ex.info.query);
      const from = intParam(query, 'from', 0, MAX_LOG_SIZE, 0);
      const limit = intParam(query, 'limit', 1, MAX_LOG_RECEIPTS_PAGE, DEFAULT_LOG_RECEIPTS_PAGE);
      const rows = await log.receipts(caller, from, limit);
      const last = rows[rows.length - 1];
      const answer: ReceiptsAnswer = {
        receipts: rows.map((r) => ({ index: r.index, leafHash: b64(r.leafHash), receipt: r.receipt, submittedAt: r.submittedAtMs })),
        ...(rows.length === limit && last !== undefined ? { next: last.index + 1 } : {}),
      };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/checkpoint',
    route('log_checkpoint', 0, async (ex) => {
      const c = await log.checkpoints.latest();
      ex.sendResource(c.note, 'text/plain; charset=utf-8', CHECKPOINT_CACHE);
    }),
  );

  app.get(
    '/v1/log/key',
    route('log_key', 0, async (ex) => {
      const answer: LogKeyAnswer = { origin: deps.key.origin, verifierKey: deps.key.signer.verifier.toString() };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/checkpoints',
    route('log_checkpoints', 0, async (ex) => {
      const query = new URLSearchParams(ex.info.query);
      const from = intParam(query, 'from', 0, MAX_LOG_SIZE, 0);
      const limit = intParam(query, 'limit', 1, MAX_LOG_CHECKPOINTS_PAGE, DEFAULT_LOG_CHECKPOINTS_PAGE);
      const answer: CheckpointsAnswer = { checkpoints: (await log.store.checkpoints(from, limit)).map(checkpointJson) };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/proof/inclusion',
    route('log_inclusion', 0, async (ex) => {
      const query = new URLSearchParams(ex.info.query);
      const index = intParam(query, 'index', 0, MAX_LOG_SIZE);
      const size = intParam(query, 'size', 1, MAX_LOG_SIZE);
      const answer: InclusionProofAnswer = { index, size, hashes: (await log.inclusion(index, size)).map(b64) };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/proof/consistency',
    route('log_consistency', 0, async (ex) => {
      const query = new URLSearchParams(ex.info.query);
      const from = intParam(query, 'from', 0, MAX_LOG_SIZE);
      const to = intParam(query, 'to', 0, MAX_LOG_SIZE);
      const answer: ConsistencyProofAnswer = { from, to, hashes: (await log.consistency(from, to)).map(b64) };
      ex.json(200, answer);
    }),
  );

  app.get(
    '/v1/log/proof/tlog',
    route('log_tlog_proof', 0, async (ex) => {
      const index = intParam(new URLSearchParams(ex.info.query), 'index', 0, MAX_LOG_SIZE);
      ex.sendResource(await log.tlogProof(index), 'text/plain; charset=utf-8', 'no-store');
    }),
  );

  app.get(
    '/v1/log/tile/*',
    route('log_tile', 0, async (ex) => {
      let tile: Tile;
      try {
        tile = parseTilePath(ex.info.url.slice('/v1/log/'.length));
      } catch (err) {
        if (err instanceof EvidenceError) throw new ProtocolError('NOT_FOUND', `not a tile path: ${err.message}`);
        throw err;
      }
      if (tile.kind === 'data') {
        const caller = await authCaller(ex);
        if (!caller.auditor) throw new ProtocolError('AUDITOR_ONLY', 'data tiles hold receipts: they are served to auditors only');
      }
      // Only tiles of the committed tree exist (a full tile once the tree covers it, a
      // partial one of any width up to the right edge).
      const head = await log.head();
      if (!tileWithin(tile, head.size)) throw new ProtocolError('NOT_FOUND', 'no such tile in the log yet');
      const cache = tile.kind === 'data' ? DATA_TILE_CACHE : tile.width === TILE_WIDTH ? FULL_TILE_CACHE : PARTIAL_TILE_CACHE;
      const body =
        tile.kind === 'data'
          ? encodeEntryBundle((await log.store.leaves(tile.index * TILE_WIDTH, tile.width)).map((l) => encoder.encode(l.receipt)))
          : await buildHashTile(tile, log.store.reader());
      ex.sendResource(body, 'application/octet-stream', cache);
    }),
  );

  const jwkOf = (key: Uint8Array): Record<string, string> => ({ ...identityJwk(key), kid: jwkThumbprint(key, deps.backend) });

  app.get(
    '/v1/users/:userId/devices/:deviceId/jwk',
    route('device_jwk', 2, async (ex) => {
      await authUser(ex);
      const userId = deps.userParam(ex.info.params[0] ?? '');
      const deviceId = decodeDeviceId(decodePathParam(ex.info.params[1] ?? '', 'deviceId'));
      const device = await deps.directory.getDevice(userId, deviceId);
      if (!device) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device for this user');
      ex.json(200, jwkOf(device.identityKey));
    }),
  );

  app.get(
    '/v1/users/:userId/jwks',
    route('user_jwks', 1, async (ex) => {
      await authUser(ex);
      const userId = deps.userParam(ex.info.params[0] ?? '');
      const list = await deps.directory.deviceList(userId, -1);
      ex.json(200, { keys: list.devices.map((d) => ({ ...jwkOf(d.identityKey), deviceId: d.deviceId })) });
    }),
  );
}
