/**
 * `hermetic audit verify`: checks a receipt log while trusting nothing its source says.
 *
 *  1. every checkpoint's signed note with the pinned verifier key (else the source's,
 *     with a warning), and that its record matches what is signed;
 *  2. every pair of successive checkpoints with a consistency proof (RFC 9162 §2.1.4.2);
 *     a pair that is not one append-only history is a FORK, with both notes as evidence,
 *     as are two different checkpoints of one size, and a log that does not extend a
 *     checkpoint remembered from an earlier run (`--state`);
 *  3. every receipt: its JWS signature with its recipient device's key (kid = the key's
 *     RFC 7638 thumbprint), and its inclusion (leaf = SHA-256(0x00 ‖ JWS bytes)) in the
 *     newest verified checkpoint (RFC 9162 §2.1.3.2).
 *
 * Every refusal becomes a counted failure; nothing unverified is counted as verified.
 */
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { identityKeyFromJwk, jwkThumbprint, verifyParsedJws } from '../../crypto/evidence/jws.js';
import { type ParsedReceipt, parseReceipt } from '../../crypto/evidence/receipt.js';
import type { IdentityKey } from '../../crypto/identity/identity-key.js';
import { fromBase64, toBase64 } from '../../crypto/tlog/base64.js';
import { openCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { leafHash, verifyConsistency, verifyInclusion } from '../../crypto/tlog/merkle.js';
import { NoteVerifier } from '../../crypto/tlog/note.js';
import { mapLimited } from './export.js';
import { RELAY_CONCURRENCY } from './limits.js';
import { RelayAnswerError } from './relay-client.js';
import { type AuditReport, type CheckpointEvidence, FAILURE_KINDS, type Failure, type FailureKind, addFailure, addWarning, newReport } from './report.js';
import type { AuditSource, SourceReceipt } from './source.js';
import type { AuditState } from './state.js';

export interface VerifyOptions {
  /** The log's verifier key string, obtained out of band. */
  readonly pinnedKey?: string;
  /** Checkpoints remembered from earlier runs. */
  readonly state?: AuditState;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface VerifyResult {
  readonly report: AuditReport;
  /** The newest verified checkpoint, to remember, when the history it ends was not forked. */
  readonly rememberable?: CheckpointEvidence;
}

interface Verified extends CheckpointEvidence {
  readonly rootHash: Uint8Array;
}

const encoder = new TextEncoder();

/** The failure kind for anything a check threw. */
function kindOf(err: unknown): FailureKind {
  // Every evidence code the checks here can raise is a kind; any other is the input's fault.
  if (err instanceof EvidenceError) return (FAILURE_KINDS as readonly string[]).includes(err.code) ? (err.code as FailureKind) : 'INVALID_EXPORT';
  if (err instanceof RelayAnswerError) return 'RELAY_ERROR';
  throw err;
}

function fail(report: AuditReport, where: string, err: unknown): void {
  addFailure(report, { kind: kindOf(err), where, message: err instanceof Error ? err.message : String(err) });
}

function fork(report: AuditReport, where: string, message: string, older: CheckpointEvidence, newer: CheckpointEvidence): void {
  const strip = (c: CheckpointEvidence): CheckpointEvidence => ({ size: c.size, root: c.root, note: c.note });
  addFailure(report, { kind: 'FORK', where, message, evidence: { older: strip(older), newer: strip(newer) } });
}

export async function verifyLog(source: AuditSource, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const report = newReport({ kind: source.kind, location: source.location });
  const result = await run(source, opts, report);
  try {
    for (const p of await source.finish()) fail(report, 'export', p);
  } catch (err) {
    fail(report, 'export', err);
  }
  report.ok = report.failures.total === 0;
  return { report, ...(result && report.failures.byKind.FORK === undefined ? { rememberable: result } : {}) };
}

async function run(source: AuditSource, opts: VerifyOptions, report: AuditReport): Promise<CheckpointEvidence | undefined> {
  try {
    for (const n of (await source.notes?.()) ?? []) addWarning(report, n);
  } catch (err) {
    fail(report, 'auditor check', err);
  }

  // ---- the key
  let origin: string;
  let verifier: NoteVerifier;
  try {
    const key = await source.key();
    origin = key.origin;
    if (opts.pinnedKey !== undefined) {
      verifier = NoteVerifier.parse(opts.pinnedKey);
      if (key.verifierKey !== opts.pinnedKey) addWarning(report, `the ${source.kind} names another verifier key (${key.verifierKey.slice(0, 120)}); checkpoints are checked with the pinned one`);
    } else {
      verifier = NoteVerifier.parse(key.verifierKey);
      addWarning(report, 'the verifier key is the one the source gave, not pinned: pass --key with the key obtained out of band');
    }
    report.key = { origin, verifierKey: verifier.toString(), pinned: opts.pinnedKey !== undefined };
  } catch (err) {
    fail(report, 'log key', err);
    return undefined;
  }

  // ---- checkpoints and their consistency
  const remembered = new Map((opts.state?.checkpoints ?? []).map((c) => [c.size, c]));
  if (opts.state && opts.state.verifierKey !== verifier.toString()) addWarning(report, 'the state file was written for another verifier key');
  let last: Verified | undefined;
  let skipped = false;
  try {
    for await (const item of source.checkpoints()) {
      report.checkpoints.seen++;
      if ('error' in item) {
        fail(report, item.where, item.error);
        skipped = true;
        continue;
      }
      let cp: Verified;
      try {
        const { checkpoint } = openCheckpoint(item.value.note, origin, [verifier]);
        cp = { size: checkpoint.size, root: toBase64(checkpoint.rootHash), note: item.value.note, rootHash: checkpoint.rootHash };
      } catch (err) {
        fail(report, item.where, err);
        skipped = true;
        continue;
      }
      if (cp.size !== item.value.size || cp.root !== item.value.root) {
        addFailure(report, { kind: 'INVALID_EXPORT', where: item.where, message: 'the listed size or root is not the one signed in the note' });
      }
      const seen = remembered.get(cp.size);
      if (seen !== undefined) {
        if (seen.root !== cp.root) fork(report, item.where, 'a checkpoint of a size remembered from an earlier run has another root', seen, cp);
        remembered.delete(cp.size);
      }
      if (last !== undefined) {
        if (cp.size < last.size) {
          addFailure(report, { kind: 'INVALID_EXPORT', where: item.where, message: `checkpoints out of order (size ${cp.size} after ${last.size})` });
          continue;
        }
        if (cp.size === last.size) {
          if (cp.root !== last.root) fork(report, item.where, `two signed checkpoints of size ${cp.size} with different roots`, last, cp);
        } else {
          await checkConsistency(source, report, item.where, last, cp, skipped);
        }
      }
      report.checkpoints.verified++;
      last = cp;
      skipped = false;
    }
  } catch (err) {
    fail(report, 'checkpoint history', err);
  }
  if (last === undefined) {
    addFailure(report, { kind: 'NO_CHECKPOINT', where: 'checkpoint history', message: 'no checkpoint verified: no receipt inclusion can be checked' });
    return undefined;
  }
  const head = last;
  report.head = { size: head.size, root: head.root };

  // ---- what earlier runs saw must be a prefix of this log
  const declared = source.declaredHead?.();
  if (declared !== undefined && (declared.size !== head.size || declared.root !== head.root)) {
    addFailure(report, { kind: 'INVALID_EXPORT', where: 'manifest', message: `the manifest's head (size ${declared.size}) is not the newest verified checkpoint (size ${head.size})` });
  }

  // Those not met in the history above.
  for (const r of remembered.values()) {
    const where = `remembered checkpoint of size ${r.size}`;
    if (r.size > head.size) {
      fork(report, where, `the log (size ${head.size}) is smaller than a checkpoint seen before: history was rolled back`, r, head);
    } else if (r.size === head.size) {
      if (r.root !== head.root) fork(report, where, 'the newest checkpoint has another root than the one remembered for its size', r, head);
    } else {
      const older = { ...r, rootHash: fromBase64(r.root) ?? new Uint8Array(0) };
      await checkConsistency(source, report, where, older, head, false, true);
    }
  }

  // ---- receipts
  await checkReceipts(source, opts, report, head);
  return { size: head.size, root: head.root, note: head.note };
}

async function checkConsistency(source: AuditSource, report: AuditReport, where: string, older: Verified, newer: Verified, afterSkipped: boolean, optional = false): Promise<void> {
  let proof: readonly string[] | undefined;
  try {
    proof = await source.consistency(older.size, newer.size);
  } catch (err) {
    fail(report, where, err);
    return;
  }
  if (proof === undefined) {
    if (afterSkipped || optional) addWarning(report, `${where}: no consistency proof from size ${older.size} to ${newer.size} in this ${source.kind}`);
    else addFailure(report, { kind: 'INVALID_PROOF', where, message: `no consistency proof from size ${older.size} to ${newer.size}` });
    return;
  }
  report.consistency.checked++;
  try {
    verifyConsistency(older.size, newer.size, older.rootHash, newer.rootHash, proof.map((h) => fromBase64(h) ?? new Uint8Array(0)));
    report.consistency.verified++;
  } catch (err) {
    if (!(err instanceof EvidenceError)) throw err;
    fork(report, where, `checkpoint of size ${newer.size} does not provably extend the one of size ${older.size} (${err.message})`, older, newer);
  }
}

interface ReceiptOutcome {
  readonly failures: Failure[];
  readonly parsed?: ParsedReceipt;
}

async function checkReceipts(source: AuditSource, opts: VerifyOptions, report: AuditReport, head: Verified): Promise<void> {
  const keys = new Map<string, IdentityKey | Failure>();
  const keyFor = async (user: string, device: string, where: string): Promise<IdentityKey | Failure> => {
    const k = `${user}\n${device}`;
    const known = keys.get(k);
    if (known !== undefined) return known;
    let out: IdentityKey | Failure;
    try {
      const jwk = await source.jwk(user, device);
      if (jwk === undefined) out = { kind: 'MISSING_KEY', where, message: `no key for device ${device} of ${user} (revoked, or left out)` };
      else {
        const key = identityKeyFromJwk(jwk);
        if (jwk.kid !== undefined && jwk.kid !== jwkThumbprint(key)) throw new EvidenceError('INVALID_JWS', `the key of device ${device} of ${user} has a kid that is not its thumbprint`);
        out = key;
      }
    } catch (err) {
      out = { kind: kindOf(err), where, message: (err as Error).message };
    }
    // Failures are per receipt: a relay error is retried, a missing key is not.
    if (!('kind' in out) || out.kind !== 'RELAY_ERROR') keys.set(k, out);
    return out;
  };

  const one = async (r: SourceReceipt, where: string): Promise<ReceiptOutcome> => {
    const failures: Failure[] = [];
    const bad = (err: unknown): void => {
      failures.push({ kind: kindOf(err), where, message: err instanceof Error ? err.message : String(err) });
    };
    const leaf = leafHash(encoder.encode(r.receipt));
    if (toBase64(leaf) !== r.leafHash) failures.push({ kind: 'INVALID_EXPORT', where, message: 'the listed leaf hash is not the hash of the receipt' });
    let parsed: ParsedReceipt | undefined;
    try {
      parsed = parseReceipt(r.receipt);
      const key = await keyFor(parsed.payload.recipient.user, parsed.payload.recipient.device, where);
      if ('kind' in key) failures.push({ ...key, where });
      else verifyParsedJws(parsed.parsed, key);
    } catch (err) {
      bad(err);
      parsed = undefined;
    }
    try {
      if (r.index >= head.size) throw new EvidenceError('INVALID_PROOF', `index ${r.index} is not in the checkpoint of size ${head.size}`);
      const proof = await source.inclusion(r, head.size);
      verifyInclusion(leaf, r.index, head.size, proof.map((h) => fromBase64(h) ?? new Uint8Array(0)), head.rootHash);
    } catch (err) {
      bad(err);
    }
    return { failures, ...(parsed ? { parsed } : {}) };
  };

  let lastIndex = -1;
  let batch: Array<{ r: SourceReceipt; where: string }> = [];
  const flush = async (): Promise<void> => {
    const outcomes = await mapLimited(batch, RELAY_CONCURRENCY, (b) => one(b.r, b.where));
    for (const o of outcomes) {
      for (const f of o.failures) addFailure(report, f);
      if (o.parsed !== undefined && !o.failures.some((f) => f.kind === 'BAD_SIGNATURE' || f.kind === 'MISSING_KEY' || f.kind === 'INVALID_JWS')) {
        // Only what a device provably signed counts as its report.
        for (const e of o.parsed.payload.entries) {
          report.receipts.entries++;
          if (e.disposition === 'rejected') report.receipts.rejectedEntries++;
          for (const f of e.flags) report.anomalies[f]++;
        }
      }
      if (o.failures.length === 0) report.receipts.verified++;
    }
    batch = [];
    opts.onProgress?.(report.receipts.seen, head.size);
  };
  try {
    for await (const item of source.receipts(head.size)) {
      report.receipts.seen++;
      if ('error' in item) {
        fail(report, item.where, item.error);
        continue;
      }
      if (item.value.index <= lastIndex) {
        addFailure(report, { kind: 'INVALID_EXPORT', where: item.where, message: `receipts out of order (index ${item.value.index} after ${lastIndex})` });
        continue;
      }
      lastIndex = item.value.index;
      batch.push({ r: item.value, where: item.where });
      if (batch.length >= RELAY_CONCURRENCY * 4) await flush();
    }
    await flush();
  } catch (err) {
    fail(report, 'receipts', err);
  }
}
