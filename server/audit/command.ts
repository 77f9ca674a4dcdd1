/**
 * `hermetic audit export|verify ...`: argument parsing, the progress bar, the summary and
 * the report file. Exit codes: 0 everything verified (or exported), 1 any failure, 2 a
 * usage error. Never throws: every error becomes a message and an exit code.
 */
import fs from 'node:fs';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { NoteVerifier } from '../../crypto/tlog/note.js';
import { MAX_TOKEN_BYTES, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { ExportError, exportLog } from './export.js';
import type { ExportRange } from './format.js';
import { MAX_TOKEN_FILE_BYTES } from './limits.js';
import { RelayAnswerError, RelayClient } from './relay-client.js';
import { ProgressBar, summary } from './report.js';
import { type AuditSource, ExportSource, NOT_AUDITOR, RelaySource } from './source.js';
import { type AuditState, loadState, saveState } from './state.js';
import { verifyLog } from './verify.js';

export const AUDIT_USAGE = `usage:
  hermetic audit export --relay <url> --token <token|@file> --out <dir>
                        [--from <index|time>] [--to <index|time>] [--party <user>] [--progress]
  hermetic audit verify (--relay <url> --token <token|@file> | --in <dir>)
                        [--key <verifier key>] [--report <file.json>] [--state <file>] [--progress]

  <time> is an ISO 8601 date-time; <index> a leaf index. The token needs the auditor claim.
  exit codes: 0 everything verified, 1 a failure, 2 a usage error
`;

export interface AuditIo {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  /** Whether stderr is a terminal (the progress bar is drawn there). */
  readonly errIsTty: boolean;
}

class UsageError extends Error {}

const VALUE_OPTIONS = {
  export: ['--relay', '--token', '--out', '--from', '--to', '--party'],
  verify: ['--relay', '--token', '--in', '--key', '--report', '--state'],
} as const;

function parseArgs(args: readonly string[], allowed: readonly string[]): { values: Map<string, string>; progress: boolean } {
  const values = new Map<string, string>();
  let progress = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--progress') {
      progress = true;
      continue;
    }
    if (!allowed.includes(a)) throw new UsageError(`unknown option ${a.slice(0, 32)}`);
    const v = args[i + 1];
    if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
    if (values.has(a)) throw new UsageError(`${a} given twice`);
    values.set(a, v);
    i++;
  }
  return { values, progress };
}

function readToken(raw: string): string {
  let token = raw;
  if (raw.startsWith('@')) {
    const file = raw.slice(1);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      throw new UsageError(`cannot read the token file ${file}`);
    }
    if (size > MAX_TOKEN_FILE_BYTES) throw new UsageError(`the token file is larger than ${MAX_TOKEN_FILE_BYTES} bytes`);
    token = fs.readFileSync(file, 'utf8').trim();
  }
  if (token.length === 0 || token.length > MAX_TOKEN_BYTES || /\s/.test(token)) throw new UsageError('--token is not a bearer token');
  return token;
}

function relayUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError('--relay must be an http(s) URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError('--relay must be an http(s) URL');
  if (u.username || u.password || u.search || u.hash) throw new UsageError('--relay must be a plain base URL (no credentials, query or fragment)');
  return u.toString().replace(/\/+$/, '');
}

function bound(raw: string | undefined, name: string): { index: number } | { time: number } | undefined {
  if (raw === undefined) return undefined;
  if (/^\d{1,16}$/.test(raw) && Number.isSafeInteger(Number(raw))) return { index: Number(raw) };
  const t = /^\d{4}-\d{2}-\d{2}/.test(raw) ? Date.parse(raw) : Number.NaN;
  if (!Number.isFinite(t) || t < 0) throw new UsageError(`${name} must be a leaf index or an ISO 8601 time`);
  return { time: t };
}

function client(values: Map<string, string>): RelayClient {
  const relay = values.get('--relay');
  const token = values.get('--token');
  if (relay === undefined || token === undefined) throw new UsageError('--relay and --token are both needed');
  return new RelayClient(relayUrl(relay), readToken(token));
}

function progressFor(io: AuditIo, wanted: boolean, label: string): ProgressBar | undefined {
  return wanted || io.errIsTty ? new ProgressBar(io.err, label) : undefined;
}

async function runExport(args: readonly string[], io: AuditIo): Promise<number> {
  const { values, progress } = parseArgs(args, VALUE_OPTIONS.export);
  const out = values.get('--out');
  if (out === undefined) throw new UsageError('--out <dir> is needed');
  const party = values.get('--party');
  if (party !== undefined && (party.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(party))) throw new UsageError('--party must be a user id');
  const from = bound(values.get('--from'), '--from');
  const to = bound(values.get('--to'), '--to');
  const range: ExportRange = { ...(from ? { from } : {}), ...(to ? { to } : {}), ...(party ? { party } : {}) };
  const c = client(values);
  const bar = progressFor(io, progress, 'exporting receipts');
  const { manifest, auditor } = await exportLog({ client: c, out, range, ...(bar ? { onProgress: (d, t) => bar.update(d, t) } : {}) });
  bar?.end();
  io.out(
    `exported ${manifest.counts.receipts} receipts, ${manifest.counts.checkpoints} checkpoints, ${manifest.counts.jwks} device keys` +
      ` (head: size ${manifest.head.size}) to ${out}\n`,
  );
  if (!auditor) io.err(`warning: ${NOT_AUDITOR}\n`);
  if (manifest.missingDeviceCount > 0) io.err(`warning: ${manifest.missingDeviceCount} recipient devices have no key at the relay (revoked): their receipts cannot be checked\n`);
  return 0;
}

async function runVerify(args: readonly string[], io: AuditIo): Promise<number> {
  const { values, progress } = parseArgs(args, VALUE_OPTIONS.verify);
  const dir = values.get('--in');
  if ((dir === undefined) === (values.get('--relay') === undefined)) throw new UsageError('give either --relay (with --token) or --in');
  const pinned = values.get('--key');
  if (pinned !== undefined) {
    try {
      NoteVerifier.parse(pinned);
    } catch {
      throw new UsageError('--key is not a signed-note verifier key (<name>+<key id>+<base64 key>)');
    }
  }
  const source: AuditSource = dir !== undefined ? new ExportSource(dir) : new RelaySource(client(values));
  const stateFile = values.get('--state');
  let state: AuditState | undefined;
  if (stateFile !== undefined) {
    try {
      state = loadState(stateFile);
    } catch (err) {
      if (!(err instanceof EvidenceError)) throw err;
      io.err(`hermetic audit: the state file is unusable: ${err.message}\n`);
      return 1;
    }
  }
  const bar = progressFor(io, progress, 'verifying receipts');
  const { report, rememberable } = await verifyLog(source, {
    ...(pinned !== undefined ? { pinnedKey: pinned } : {}),
    ...(state !== undefined ? { state } : {}),
    ...(bar ? { onProgress: (d: number, t: number) => bar.update(d, t) } : {}),
  });
  bar?.end();
  io.out(summary(report));
  const reportFile = values.get('--report');
  if (reportFile !== undefined) fs.writeFileSync(reportFile, `${JSON.stringify(report, null, 2)}\n`);
  if (stateFile !== undefined && rememberable !== undefined && report.key !== null) saveState(stateFile, state, report.key, rememberable);
  return report.ok ? 0 : 1;
}

/** Runs `hermetic audit <args>`; resolves to the exit code. */
export async function runAudit(args: readonly string[], io: AuditIo): Promise<number> {
  const [sub, ...rest] = args;
  try {
    if (sub === 'export') return await runExport(rest, io);
    if (sub === 'verify') return await runVerify(rest, io);
    throw new UsageError(sub ? `unknown audit command ${sub.slice(0, 32)}` : 'audit needs export or verify');
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`hermetic audit: ${err.message}\n\n${AUDIT_USAGE}`);
      return 2;
    }
    if (err instanceof RelayAnswerError || err instanceof ExportError || err instanceof EvidenceError) {
      io.err(`hermetic audit: ${err.message}\n`);
      return 1;
    }
    const e = err as NodeJS.ErrnoException;
    io.err(`hermetic audit: ${typeof e?.code === 'string' ? `${e.code}: ` : ''}${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
