/**
 * The `blk` device plugin: its options (the same names on the command line,
 * `--device blk,path=disk.img,readonly=on,serial=ID,queues=4`) and how they become a
 * {@link BlockDevice} over a file or in-memory backend.
 */

import { DeviceType, defineDevicePlugin, defineOptions, type InferOptions } from '@virtkit/core';
import { openFileBackend } from './backends/file.js';
import { loadLinux } from './backends/file-io.js';
import { MemoryBackend } from './backends/memory.js';
import type { BlockBackend } from './backends/types.js';
import { SECTOR_SIZE } from './constants.js';
import { BlockDevice, encodeSerial } from './device.js';
import { BlockError } from './errors.js';
import type { ModerationOptions } from './moderation.js';

/** Options of the `blk` plugin. */
export const blkOptions = defineOptions({
  backend: {
    type: 'enum',
    values: ['file', 'memory'],
    default: 'file',
    description: 'storage: a raw image file or block device (file), or RAM (memory)',
  },
  path: { type: 'string', description: 'raw image file or block device (file backend)' },
  size: {
    type: 'string',
    pattern: /^\d+[KMGT]?$/i,
    description: 'size of an in-memory disk: bytes, or with a K, M, G or T suffix',
  },
  readonly: { type: 'boolean', default: false, description: 'refuse writes (VIRTIO_BLK_F_RO)' },
  serial: { type: 'string', description: 'ID string for GET_ID, at most 20 ASCII bytes' },
  queues: {
    type: 'integer',
    min: 1,
    max: 16,
    default: 1,
    description: 'number of request queues (more than 1 offers VIRTIO_BLK_F_MQ)',
  },
  queue_size: {
    type: 'integer',
    min: 4,
    max: 32768,
    default: 256,
    description: 'largest size of each request queue (a power of two)',
  },
  direct: {
    type: 'boolean',
    default: false,
    description: 'open the image with O_DIRECT, bypassing the host page cache',
  },
  aio: {
    type: 'enum',
    values: ['threads', 'sync'],
    default: 'threads',
    description:
      "how file I/O runs: threads (what may wait for the disk on Node's thread pool, many requests at once; images on tmpfs and page-cached reads on the device's thread) or sync (all on the device's thread: least CPU per request)",
  },
  moderation: {
    type: 'boolean',
    default: true,
    description:
      'adaptive interrupt moderation: hold an interrupt while the guest keeps submitting requests (needs @virtkit/linux; off elsewhere)',
  },
  discard: {
    type: 'boolean',
    default: true,
    description: 'offer DISCARD and let WRITE_ZEROES punch holes in the image',
  },
  write_cache: {
    type: 'boolean',
    default: true,
    description: 'start in writeback mode (off: writethrough, every write is synced)',
  },
  logical_block_size: {
    type: 'integer',
    min: 512,
    max: 65536,
    default: 512,
    description: 'logical block size the guest sees (blk_size), a power of two',
  },
  physical_block_size: {
    type: 'integer',
    min: 512,
    max: 65536,
    description: 'physical block size the guest sees (topology; default: the logical size)',
  },
});

/** Validated options of the `blk` plugin. */
export type BlkOptions = InferOptions<typeof blkOptions>;

const SIZE_UNITS: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Parses a size like `4096`, `64M` or `2G` (binary units) into bytes. */
export function parseSize(text: string): number {
  const match = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  const value = match ? Number(match[1]) * (SIZE_UNITS[match[2]!.toUpperCase()] ?? 1) : Number.NaN;
  if (!Number.isSafeInteger(value)) {
    throw new BlockError('BLK_OPTIONS', `size '${text}' is not a number of bytes`);
  }
  return value;
}

function checkBlkOptions(options: BlkOptions): string | undefined {
  const isPowerOfTwo = (n: number) => (n & (n - 1)) === 0;
  if (!isPowerOfTwo(options.logical_block_size)) {
    return `logical_block_size ${options.logical_block_size} is not a power of two`;
  }
  const physical = options.physical_block_size;
  if (
    physical !== undefined &&
    (!isPowerOfTwo(physical) ||
      physical < options.logical_block_size ||
      physical / options.logical_block_size > 128)
  ) {
    return `physical_block_size ${physical} must be a power-of-two multiple of logical_block_size ${options.logical_block_size}`;
  }
  if (options.backend === 'file') {
    if (!options.path) return 'the file backend needs path=IMAGE';
    if (options.size !== undefined) return 'size is for backend=memory (a file has its own size)';
  } else {
    if (options.size === undefined) return 'backend=memory needs size (e.g. size=64M)';
    if (options.path !== undefined) return 'path is for the file backend, not backend=memory';
    if (options.direct) return 'direct is for the file backend, not backend=memory';
    if (options.aio !== 'threads') return 'aio is for the file backend, not backend=memory';
    let size: number;
    try {
      size = parseSize(options.size);
    } catch (error) {
      return (error as Error).message;
    }
    if (size === 0 || size % options.logical_block_size !== 0) {
      return `size ${options.size} is not a positive multiple of ${options.logical_block_size} bytes`;
    }
  }
  if (options.serial !== undefined) {
    try {
      encodeSerial(options.serial);
    } catch (error) {
      return (error as Error).message;
    }
  }
  if (!isPowerOfTwo(options.queue_size)) {
    return `queue_size ${options.queue_size} is not a power of two`;
  }
  return undefined;
}

/**
 * The virtio-blk plugin (registry name `blk`).
 *
 * @example
 * ```ts
 * const registry = new DeviceRegistry();
 * registry.register(blkPlugin);
 * const disk = await registry.create('blk', { path: 'disk.img', readonly: true, serial: 'root' });
 * const scratch = await registry.create('blk', { backend: 'memory', size: '64M' });
 * ```
 */
export const blkPlugin = defineDevicePlugin({
  meta: { name: 'blk', version: '0.0.0', core: '^0.1.0' },
  deviceType: DeviceType.BLOCK,
  description: 'virtio-blk disk over a raw image file, block device or memory',
  options: blkOptions,
  validate: checkBlkOptions,
  async create(options, environment) {
    const logical = options.logical_block_size;
    let backend: BlockBackend;
    if (options.backend === 'memory') {
      backend = new MemoryBackend({
        size: parseSize(options.size ?? '0'),
        readOnly: options.readonly,
      });
    } else {
      backend = await openFileBackend({
        path: options.path ?? '',
        readOnly: options.readonly,
        direct: options.direct,
        aio: options.aio,
        sizeAlignment: Math.max(logical, SECTOR_SIZE),
      });
    }
    const moderation = options.moderation ? await moderationTimers() : undefined;
    try {
      return new BlockDevice({
        ...(moderation && { moderation }),
        backend,
        ...(options.serial !== undefined ? { serial: options.serial } : {}),
        queues: options.queues,
        queueSize: options.queue_size,
        discard: options.discard,
        writeCache: options.write_cache,
        logicalBlockSize: logical,
        ...(options.physical_block_size !== undefined
          ? { physicalBlockSize: options.physical_block_size }
          : {}),
        ...(environment.log ? { log: environment.log } : {}),
      });
    } catch (error) {
      await backend.close();
      throw error;
    }
  },
});

/** Interrupt moderation on `@virtkit/linux`'s timerfd, or `undefined` where it cannot load. */
async function moderationTimers(): Promise<ModerationOptions | undefined> {
  const linux = await loadLinux();
  return linux && { timer: (fire) => new linux.PreciseTimer(fire) };
}
