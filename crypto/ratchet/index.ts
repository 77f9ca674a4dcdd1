/** Public surface of the Double Ratchet. Chains and keys stay internal. */
export { sessionMessageType, SESSION_MESSAGE_VERSION } from './message.js';
export type { SessionMessageType } from './message.js';
export { Session } from './session.js';
export type { SessionOptions, SessionRole } from './session.js';
export { SESSION_STATE_VERSION } from './session-codec.js';
