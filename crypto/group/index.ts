/** Public surface of group sender keys. */
export { InboundSenderKeys, INBOUND_SENDER_KEYS_STATE_VERSION } from './inbound-sender-keys.js';
export { OutboundSenderKey, OUTBOUND_SENDER_KEY_STATE_VERSION } from './outbound-sender-key.js';
export type { SenderKeyOptions } from './outbound-sender-key.js';
