export { featureBit, DeviceType, DeviceStatus, Feature } from './constants.js';
export { GuestMemory, GuestRegion, guestAddressFromParts, isSafeRange } from './memory.js';
export type { GuestBuffer, GuestRegionInit } from './memory.js';
