/**
 * The audit report (docs/AUDIT.md "Report"): what was checked, the anomalies the
 * receipts' signers flagged, and every failure by kind, with a bounded list of details.
 * Also its human forms: the summary table and the progress bar.
 */
import type { EvidenceErrorCode } from '../../crypto/evidence/errors.js';
import { RECEIPT_FLAGS, type ReceiptFlag } from '../../crypto/evidence/receipt.js';
import { MAX_REPORT_FAILURES, MAX_REPORT_WARNINGS } from './limits.js';

export const REPORT_FORMAT = 'hermetic-audit-report';
export const REPORT_VERSION = 1;

/**
 * Kinds of failure (docs/AUDIT.md "Failure kinds"): the evidence error codes the checks
 * raise, and
 *   FORK           two signed checkpoints that are not one append-only history
 *   MISSING_KEY    no key for a receipt's recipient device, so its signature is unchecked
 *   NO_CHECKPOINT  no checkpoint verified, so no inclusion could be checked
 *   RELAY_ERROR    the relay did not answer, answered an error, or answered malformed data
 */
export const FAILURE_KINDS = [
  'BAD_SIGNATURE',
  'INVALID_NOTE',
  'INVALID_CHECKPOINT',
  'INVALID_PROOF',
  'INVALID_JWS',
  'INVALID_RECEIPT',
  'INVALID_EXPORT',
  'FORK',
  'MISSING_KEY',
  'NO_CHECKPOINT',
  'RELAY_ERROR',
] as const satisfies ReadonlyArray<EvidenceErrorCode | 'FORK' | 'MISSING_KEY' | 'NO_CHECKPOINT' | 'RELAY_ERROR'>;
export type FailureKind = (typeof FAILURE_KINDS)[number];

export interface CheckpointEvidence {
  readonly size: number;
  readonly root: string;
  readonly note: string;
}

export interface Failure {
  readonly kind: FailureKind;
  /** Where: the file and line, the receipt index, the request. */
  readonly where: string;
  readonly message: string;
  /** For FORK: the two signed checkpoints that conflict. */
  readonly evidence?: { readonly older: CheckpointEvidence; readonly newer: CheckpointEvidence };
}

export interface AuditReport {
  readonly format: typeof REPORT_FORMAT;
  readonly version: typeof REPORT_VERSION;
  /** True only when there is no failure at all. */
  ok: boolean;
  readonly source: { readonly kind: 'relay' | 'export'; readonly location: string };
  key: { origin: string; verifierKey: string; pinned: boolean } | null;
  head: { size: number; root: string } | null;
  checkpoints: { seen: number; verified: number };
  consistency: { checked: number; verified: number };
  receipts: { seen: number; verified: number; entries: number; rejectedEntries: number };
  /** Entries carrying each flag, over receipts whose signature verified. */
  anomalies: Record<ReceiptFlag, number>;
  failures: { total: number; byKind: Partial<Record<FailureKind, number>>; items: Failure[]; omitted: number };
  warnings: string[];
}

export function newReport(source: AuditReport['source']): AuditReport {
  return {
    format: REPORT_FORMAT,
    version: REPORT_VERSION,
    ok: false,
    source,
    key: null,
    head: null,
    checkpoints: { seen: 0, verified: 0 },
    consistency: { checked: 0, verified: 0 },
    receipts: { seen: 0, verified: 0, entries: 0, rejectedEntries: 0 },
    anomalies: Object.fromEntries(RECEIPT_FLAGS.map((f) => [f, 0])) as Record<ReceiptFlag, number>,
    failures: { total: 0, byKind: {}, items: [], omitted: 0 },
    warnings: [],
  };
}

export function addFailure(report: AuditReport, f: Failure): void {
  const fl = report.failures;
  fl.total++;
  fl.byKind[f.kind] = (fl.byKind[f.kind] ?? 0) + 1;
  // Messages come from our own decoders and verifiers; bound them anyway.
  if (fl.items.length < MAX_REPORT_FAILURES) fl.items.push({ ...f, message: f.message.slice(0, 500) });
  else fl.omitted++;
}

export function addWarning(report: AuditReport, w: string): void {
  if (report.warnings.length < MAX_REPORT_WARNINGS) report.warnings.push(w);
}

function table(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}

/** The summary printed at the end of a run. */
export function summary(r: AuditReport): string {
  const rows: Array<readonly [string, string]> = [
    ['source', `${r.source.kind} ${r.source.location}`],
    ['log', r.key ? `${r.key.origin} (key ${r.key.pinned ? 'pinned' : 'NOT pinned'})` : '-'],
    ['head', r.head ? `size ${r.head.size}, root ${r.head.root}` : '-'],
    ['checkpoints', `${r.checkpoints.verified} of ${r.checkpoints.seen} verified`],
    ['consistency', `${r.consistency.verified} of ${r.consistency.checked} proofs verified`],
    ['receipts', `${r.receipts.verified} of ${r.receipts.seen} verified (${r.receipts.entries} entries, ${r.receipts.rejectedEntries} rejected by their recipient)`],
  ];
  const flagged = Object.entries(r.anomalies).filter(([, n]) => n > 0);
  const lines = ['Audit summary', table(rows), '', 'Anomalies flagged by recipients'];
  lines.push(flagged.length ? table(flagged.map(([f, n]) => [f, String(n)])) : '  none');
  lines.push('', 'Failures');
  const kinds = Object.entries(r.failures.byKind);
  lines.push(kinds.length ? table(kinds.map(([k, n]) => [k, String(n)])) : '  none');
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  lines.push('', r.ok ? 'RESULT: everything verified' : `RESULT: FAILED (${r.failures.total} failure${r.failures.total === 1 ? '' : 's'})`);
  return `${lines.join('\n')}\n`;
}

/** A one-line progress bar redrawn in place on a terminal. */
export class ProgressBar {
  #last = 0;
  constructor(
    private readonly write: (s: string) => void,
    private readonly label: string,
    private readonly now: () => number = Date.now,
  ) {}

  update(done: number, total: number): void {
    const t = this.now();
    if (t - this.#last < 100 && done < total) return;
    this.#last = t;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const fill = Math.round(frac * width);
    this.write(`\r${this.label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${done}/${total}`);
  }

  end(): void {
    this.write('\n');
  }
}
