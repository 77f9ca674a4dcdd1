/** The receipt-log auditor: export a relay's log, verify it offline or live. */
export { AUDIT_USAGE, type AuditIo, runAudit } from './command.js';
export { ExportError, type ExportOptions, type ExportSummary, exportLog } from './export.js';
export { EXPORT_FILES, EXPORT_FORMAT, EXPORT_VERSION, type ExportRange, type Manifest } from './format.js';
export { RelayAnswerError, RelayClient } from './relay-client.js';
export { type AuditReport, FAILURE_KINDS, type Failure, type FailureKind, REPORT_FORMAT, REPORT_VERSION, summary } from './report.js';
export { type AuditSource, ExportSource, RelaySource } from './source.js';
export { type AuditState, loadState, saveState } from './state.js';
export { type VerifyOptions, type VerifyResult, verifyLog } from './verify.js';
export * as auditLimits from './limits.js';
