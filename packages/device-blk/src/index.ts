/**
 * @virtkit/device-blk: a virtio-blk device (virtio 1.2 §5.2) for Virtkit. Reads, writes, flush,
 * GET_ID, discard and write-zeroes over a raw image file, a block device or memory; several
 * request queues; many requests in flight, completed out of order.
 *
 * @example
 * ```ts
 * import { DeviceRegistry } from '@virtkit/core';
 * import { blkPlugin } from '@virtkit/device-blk';
 *
 * const registry = new DeviceRegistry();
 * registry.register(blkPlugin);
 * const disk = await registry.create('blk', { path: 'disk.img', serial: 'root', queues: 2 });
 * ```
 *
 * @packageDocumentation
 */

export type { FileBackendOptions, FileBackendStats } from './backends/file.js';
export { FileBackend, openFileBackend } from './backends/file.js';
export type { FileInfo, FileIo } from './backends/file-io.js';
export { nodeFileIo } from './backends/file-io.js';
export type { MemoryBackendOptions } from './backends/memory.js';
export { MemoryBackend } from './backends/memory.js';
export type { BlockBackend } from './backends/types.js';
export type { BlkViolationCode } from './constants.js';
export {
  BlkConfig,
  BlkFeature,
  BlkRequestType,
  BlkStatus,
  DEVICE_ID_BYTES,
  SECTOR_SIZE,
} from './constants.js';
export type { BlockDeviceOptions } from './device.js';
export { BlockDevice } from './device.js';
export type { BlockErrorCode } from './errors.js';
export { BlockError } from './errors.js';
export type { RequestStats } from './handler.js';
export type {
  ModeratedQueue,
  ModerationOptions,
  ModerationStats,
  ModerationTimer,
} from './moderation.js';
export { InterruptModerator } from './moderation.js';
export type { BlkOptions } from './plugin.js';
export { blkOptions, blkPlugin } from './plugin.js';
