/**
 * What the receipt log accepts: a receipt signed by the recipient device's registered
 * identity key (its kid the key's RFC 7638 thumbprint), submitted by one of its parties
 * (the recipient user or a sender user), every entry of which is an envelope the relay
 * really delivered to that device: a SEND record from that sender device with that
 * envelope id, to that recipient user, that gave the recipient device that sequence.
 * So nobody can fill the log with receipts for traffic that never happened, nor log a
 * receipt about strangers.
 *
 * A submission is checked as a whole: the first refused receipt refuses it, with
 * `details.index` (and `details.entry` for an entry) naming what failed.
 */
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { verifyParsedJws } from '../../crypto/evidence/jws.js';
import { type ParsedReceipt, parseReceipt } from '../../crypto/evidence/receipt.js';
import { IdentityKey } from '../../crypto/identity/identity-key.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { leafHash } from '../../crypto/tlog/merkle.js';
import { decodeBase64url } from '../../protocol/base64url.js';
import { type ErrorCode, ProtocolError } from '../../protocol/errors.js';
import { MAX_LOG_ENTRY_BYTES } from '../../protocol/log.js';
import { type DeliveryClaim, type LeafInput, type LogStore, deviceKey } from './store.js';

const encoder = new TextEncoder();

function refuse(code: ErrorCode, index: number, message: string, entry?: number): ProtocolError {
  return new ProtocolError(code, `receipts[${index}]${entry === undefined ? '' : `.entries[${entry}]`}: ${message}`, entry === undefined ? { index } : { index, entry });
}

/** Checks every receipt of a submission by `caller`; the leaves to append, in order. */
export async function admitReceipts(caller: string, receipts: readonly string[], store: LogStore, backend: CryptoBackend): Promise<LeafInput[]> {
  const parsed: ParsedReceipt[] = receipts.map((jws, i) => {
    // Checked before parsing: a longer leaf could not be served in a data tile.
    if (jws.length > MAX_LOG_ENTRY_BYTES) throw refuse('RECEIPT_INVALID', i, `longer than ${MAX_LOG_ENTRY_BYTES} bytes`);
    try {
      return parseReceipt(jws);
    } catch (err) {
      if (err instanceof EvidenceError) throw refuse('RECEIPT_INVALID', i, `${err.code}: ${err.message}`);
      throw err;
    }
  });
  parsed.forEach((r, i) => {
    const { recipient, entries } = r.payload;
    if (recipient.user !== caller && !entries.some((e) => e.sender.user === caller)) {
      throw refuse('RECEIPT_NOT_PARTY', i, 'the caller is neither the recipient nor a sender of this receipt');
    }
  });

  const keys = await store.identityKeys(parsed.map((r) => r.payload.recipient));
  parsed.forEach((r, i) => {
    const { user, device } = r.payload.recipient;
    const key = keys.get(deviceKey(user, device));
    if (key === undefined) throw refuse('RECEIPT_KEY_MISMATCH', i, 'the recipient device is not a registered device');
    try {
      verifyParsedJws(r.parsed, IdentityKey.fromBytes(key, backend), backend);
    } catch (err) {
      if (err instanceof EvidenceError) throw refuse('RECEIPT_KEY_MISMATCH', i, `not signed by the recipient device's identity key (${err.message})`);
      throw err;
    }
  });

  const claims: DeliveryClaim[] = [];
  const where: Array<[number, number]> = [];
  parsed.forEach((r, i) => {
    const { recipient, entries } = r.payload;
    entries.forEach((e, k) => {
      // parseReceipt has checked that the id is 16 bytes of base64url.
      const envelopeId = decodeBase64url(e.envelopeId) as Uint8Array;
      claims.push({ senderUser: e.sender.user, senderDevice: e.sender.device, envelopeId, recipientUser: recipient.user, recipientDevice: recipient.device, seq: e.seq });
      where.push([i, k]);
    });
  });
  const unconfirmed = await store.unconfirmedDeliveries(claims);
  const first = unconfirmed[0];
  if (first !== undefined) {
    const [i, k] = where[first] as [number, number];
    throw refuse('RECEIPT_NOT_DELIVERED', i, 'no SEND record of the relay delivered this envelope to the recipient device at this sequence', k);
  }

  return parsed.map((r) => {
    const { recipient, entries } = r.payload;
    return {
      leafHash: leafHash(encoder.encode(r.jws), backend),
      receipt: r.jws,
      recipientUser: recipient.user,
      recipientDevice: recipient.device,
      parties: [...new Set([recipient.user, ...entries.map((e) => e.sender.user)])],
    };
  });
}
