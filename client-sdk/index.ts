/**
 * hermetic/client: the client SDK an application embeds (docs/SDK.md). This entry runs in
 * browsers and in any JavaScript runtime with a WebSocket; Node resolves "hermetic/client"
 * to node.ts, which adds the file store and the `ws` transport.
 */
export { createClient, Group, HermeticClient, Topic } from './client.js';
export { Consumer, Subscription } from './topics.js';
export type { ConsumerOptions, PublishOptions, PublishResult, SubscribeOptions, TopicMessage, TopicStart } from './topics.js';
export type { GroupInfoAnswer as GroupInfo, TopicInfoAnswer as TopicInfo } from '../protocol/topics.js';
export type { ClientEvents, ClientOptions, ClientState, Message, SendOptions, StateChange } from './client.js';
export type { ReceiptInfo, ReceiptPolicy } from './receipts.js';
export type { EventInput, SignedEvent } from '../crypto/evidence/event.js';
export type { ReceiptEntry, ReceiptFlag, ReceiptPayload } from '../crypto/evidence/receipt.js';
export { EvidenceError, identityJwk, jwkThumbprint, parseReceipt, verifyReceipt, parseEvent, verifyEvent as verifyEventWithKey } from '../crypto/evidence/index.js';
export type { OfflineReason } from './connection.js';
export type { TrustPolicy } from './directory.js';
export { SDK_ERROR_CODES, SdkError } from './errors.js';
export type { SdkErrorCode } from './errors.js';
export { FLAG_CODES } from './flags.js';
export type { Flag, FlagCode } from './flags.js';
export type { SentInfo } from './outbox.js';
export type { FaultHook, FaultPoint } from './inbox.js';
export type { BodyKind } from './payload.js';
export { ManualClock, systemClock } from './clock.js';
export type { Clock, TimerHandle } from './clock.js';
export { MemoryStore } from './stores/memory.js';
export { EncryptedStore } from './stores/encrypted.js';
export type { StoreKey } from './stores/encrypted.js';
export { IndexedDbStore } from './stores/indexeddb.js';
export type { Store, StoreWrite } from './stores/store.js';
export { webSocketTransport } from './transport/transport.js';
export type { Transport, TransportHandlers, TransportSocket, WebSocketConstructor } from './transport/transport.js';
export type { FetchLike } from './transport/http.js';
export type { ListedDevice } from '../crypto/devices/chain.js';
export type { SafetyNumber } from '../crypto/identity/safety-number.js';
export * as limits from './limits.js';
export { cryptoReady, describeBackend, selectImplementations } from '../crypto/primitives/index.js';
export type { BackendDescription, Implementation, Primitive } from '../crypto/primitives/index.js';
