/**
 * The auditor's memory between runs (`--state <file>`): the newest checkpoints it has
 * verified. A later run checks that the log it sees extends every one of them, so a
 * relay that rewrites its history (or rolls it back) is caught even if its whole current
 * history is self-consistent.
 */
import fs from 'node:fs';
import { array, asObject, int, str } from '../../protocol/decode.js';
import { ProtocolError } from '../../protocol/errors.js';
import { LOG_HASH_PATTERN, MAX_LOG_NOTE_BYTES, MAX_LOG_SIZE } from '../../protocol/log.js';
import { decodeAt } from './format.js';
import { readJsonFile } from './jsonl.js';
import { MAX_STATE_CHECKPOINTS, MAX_STATE_FILE_BYTES } from './limits.js';
import type { CheckpointEvidence } from './report.js';

export const STATE_FORMAT = 'hermetic-audit-state';
export const STATE_VERSION = 1;

export interface AuditState {
  readonly origin: string;
  readonly verifierKey: string;
  /** Oldest first, at most MAX_STATE_CHECKPOINTS. */
  readonly checkpoints: readonly CheckpointEvidence[];
}

/** The remembered state; undefined when the file does not exist yet. Throws INVALID_EXPORT when it is malformed. */
export function loadState(file: string): AuditState | undefined {
  if (!fs.existsSync(file)) return undefined;
  const { value } = readJsonFile(file, 'state file', MAX_STATE_FILE_BYTES);
  return decodeAt('state file', () => {
    if (value.format !== STATE_FORMAT || value.version !== STATE_VERSION) throw new ProtocolError('BAD_REQUEST', `not a ${STATE_FORMAT} v${STATE_VERSION} file`);
    const list = array(value, 'checkpoints', MAX_STATE_CHECKPOINTS, () => new ProtocolError('BAD_REQUEST', 'too many checkpoints'));
    return {
      origin: str(value, 'origin', { max: 256 }),
      verifierKey: str(value, 'verifierKey', { max: 512 }),
      checkpoints: list.map((c) => {
        const o = asObject(c, 'checkpoint');
        return { size: int(o, 'size', 0, MAX_LOG_SIZE), root: str(o, 'root', { max: 44, pattern: LOG_HASH_PATTERN }), note: str(o, 'note', { max: MAX_LOG_NOTE_BYTES }) };
      }),
    };
  });
}

/** Remembers `head` with what was remembered before (the newest MAX_STATE_CHECKPOINTS). */
export function saveState(file: string, previous: AuditState | undefined, key: { origin: string; verifierKey: string }, head: CheckpointEvidence): void {
  const kept = (previous?.checkpoints ?? []).filter((c) => c.size !== head.size);
  const checkpoints = [...kept, head].sort((a, b) => a.size - b.size).slice(-MAX_STATE_CHECKPOINTS);
  const body = { format: STATE_FORMAT, version: STATE_VERSION, origin: key.origin, verifierKey: key.verifierKey, checkpoints };
  // Written whole and renamed into place: a crash never leaves half a state file.
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
