/**
 * Public surface of hermetic/client. Today it gathers what an application needs to talk
 * to a relay and run sessions: the wire codecs and signed transcripts (hermetic/protocol)
 * and the session cryptography (hermetic/crypto). The managed client — transport with
 * reconnect and resume, stores, receipts, anomaly flags — is built on these.
 */
export * as protocol from '../protocol/index.js';
export * as crypto from '../crypto/index.js';
