/**
 * @virtkit/vhost-user: the back-end side of the vhost-user protocol (QEMU's
 * docs/interop/vhost-user.rst). Serves any Virtkit device to QEMU or Cloud Hypervisor over a Unix
 * socket: the front-end shares guest memory and ring doorbells, and the device runs in this
 * process on Node's event loop.
 *
 * @example
 * ```ts
 * import { DeviceRegistry } from '@virtkit/core';
 * import { blkPlugin } from '@virtkit/device-blk';
 * import { VhostUserBackend } from '@virtkit/vhost-user';
 *
 * const registry = new DeviceRegistry();
 * registry.register(blkPlugin);
 * const disk = await registry.create('blk', { path: 'disk.img' });
 * const backend = new VhostUserBackend(disk);
 * backend.listen('/tmp/vhost-blk.sock');
 * ```
 *
 * @packageDocumentation
 */

export type { VhostUserBackendEvents, VhostUserBackendOptions } from './backend.js';
export {
  DEFAULT_PROTOCOL_FEATURES,
  decodePackedBase,
  encodeVringBase,
  frontendImpliedFeatures,
  VhostUserBackend,
} from './backend.js';
export type { ChannelHandlers } from './channel.js';
export { Channel } from './channel.js';
export {
  BackendRequest,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  ProtocolFeature,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_NOFD_MASK,
} from './constants.js';
export type { VhostUserErrorCode } from './errors.js';
export { VhostUserError } from './errors.js';
export type {
  InflightRecovery,
  PackedRecovery,
  SavedChain,
  SavedDescriptor,
} from './inflight.js';
export { InflightArea, inflightQueueBytes, PackedInflight, SplitInflight } from './inflight.js';
export type { MappedRegion } from './memory-table.js';
export { MemoryTable, mapMemoryTable } from './memory-table.js';
export type {
  ConfigAccess,
  InflightDescription,
  MemoryRegionDescription,
  Message,
  VringAddress,
  VringState,
} from './message.js';
export {
  configPayload,
  decodeConfig,
  decodeInflight,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeMessage,
  encodeReply,
  inflightPayload,
  memoryTablePayload,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from './message.js';
export type { Resubmission, RingQueueOptions } from './ring-queue.js';
export { RingQueue } from './ring-queue.js';
