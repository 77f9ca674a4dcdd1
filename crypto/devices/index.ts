/** Public surface of the signed device list: entries, the chain rules, linking. */
export { DeviceChain } from './chain.js';
export type { DeviceChainRefusal, DeviceChainSnapshot, DeviceChainStep, ListedDevice, TrustedDeviceEntry } from './chain.js';
export {
  DEVICE_ENTRY_KINDS,
  DEVICE_ENTRY_VERSION,
  MAX_DEVICE_ENTRY_BYTES,
  decodeDeviceEntry,
  deviceEntryHash,
  deviceEntryTranscript,
  signDeviceEntry,
} from './entry.js';
export type { DeviceEntry, DeviceEntryBody, DeviceEntryKind } from './entry.js';
export {
  LINK_CODE_PREFIX,
  MAX_LINK_CODE_LENGTH,
  createLinkRequest,
  decodeLinkRequest,
  encodeLinkRequest,
  linkEntry,
  linkRequestFingerprint,
  revokeEntry,
  rootEntry,
} from './link.js';
export type { LinkRequest } from './link.js';
