/**
 * The virtio-blk device (§5.2): features, configuration space, request queues, activation and
 * reset. Request parsing is in `requests.ts`, queue processing in `handler.ts`, storage in
 * `backends/`.
 */

import {
  type ActivationContext,
  ConfigSpace,
  DeviceType,
  Feature,
  featureBit,
  type QueueSpec,
  type VirtioDevice,
} from '@virtkit/core';
import type { BlockBackend } from './backends/types.js';
import { BlkConfig, BlkFeature, DEVICE_ID_BYTES, SECTOR_SIZE } from './constants.js';
import { BlockError } from './errors.js';
import { type HandlerContext, RequestHandler, type RequestStats } from './handler.js';
import type { ModerationOptions, ModerationStats } from './moderation.js';
import type { RequestRules, SegmentLimits } from './requests.js';

/** Options of {@link BlockDevice}. */
export interface BlockDeviceOptions {
  /** The storage. */
  readonly backend: BlockBackend;
  /** GET_ID answer: at most 20 ASCII bytes (default: the backend's `defaultSerial`, else empty). */
  readonly serial?: string;
  /** Request queues, 1 to 16 (default 1). More than one offers VIRTIO_BLK_F_MQ. */
  readonly queues?: number;
  /** Largest size of each queue, a power of two from 4 to 32768 (default 256). */
  readonly queueSize?: number;
  /** Offer DISCARD and let WRITE_ZEROES deallocate (default true; never on a read-only disk). */
  readonly discard?: boolean;
  /** Start in writeback cache mode (default true); false starts in writethrough. */
  readonly writeCache?: boolean;
  /** `blk_size`: the guest's logical block size, a power of two from 512 to 65536 (default 512). */
  readonly logicalBlockSize?: number;
  /** Physical block size for `topology`, a power-of-two multiple of the logical one (default: same). */
  readonly physicalBlockSize?: number;
  /** Diagnostics (host I/O failures). Default: dropped. */
  readonly log?: (message: string) => void;
  /**
   * Runs a task after the current batch of I/O completions; completions it gathers are published
   * with one used-ring update and at most one interrupt. Default `setImmediate`.
   */
  readonly defer?: (task: () => void) => void;
  /**
   * Adaptive interrupt moderation: hold an interrupt while the driver keeps submitting (see
   * `InterruptModerator`). Needs a timer finer than `setTimeout`'s millisecond. Default: none.
   */
  readonly moderation?: ModerationOptions;
}

/** Largest segment the device announces in `size_max` (advisory: larger ones work too). */
export const DEFAULT_SIZE_MAX = 1 << 20;
/** `max_discard_sectors` and `max_write_zeroes_sectors`: 2 GiB - 512, as QEMU. */
export const MAX_UNMAP_SECTORS = 0x3f_ffff;
/** `max_discard_seg` and `max_write_zeroes_seg`. */
export const MAX_UNMAP_SEGMENTS = 32;

const RING_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.RING_PACKED);

/**
 * A virtio-blk device over a {@link BlockBackend}.
 *
 * @example
 * ```ts
 * const device = new BlockDevice({ backend: new MemoryBackend({ size: 1 << 20 }), serial: 'disk0' });
 * const driver = await TestDriver.create(device);
 * ```
 */
export class BlockDevice implements VirtioDevice {
  readonly deviceType = DeviceType.BLOCK;
  readonly features: bigint;
  readonly queues: readonly QueueSpec[];
  readonly config: ConfigSpace;
  readonly backend: BlockBackend;
  readonly #deviceId: Uint8Array;
  readonly #initialWriteback: number;
  readonly #logicalBlockSize: number;
  readonly #discard: boolean;
  readonly #log: (message: string) => void;
  readonly #defer: (task: () => void) => void;
  readonly #moderation: ModerationOptions | undefined;
  #handlers: (RequestHandler | undefined)[] = [];
  #negotiated = 0n;
  /** The device's cache mode as `writeback` shows it (1 writeback, 0 writethrough). */
  #writeback: number;
  /** Where guest mistakes go while the device is active. */
  #reportViolation: ActivationContext['reportViolation'] | undefined;

  constructor(options: BlockDeviceOptions) {
    const backend = options.backend;
    const queues = options.queues ?? 1;
    const queueSize = options.queueSize ?? 256;
    const logical = options.logicalBlockSize ?? SECTOR_SIZE;
    const physical = options.physicalBlockSize ?? logical;
    checkOptions(queues, queueSize, logical, physical, backend);
    this.backend = backend;
    this.#deviceId = encodeSerial(options.serial ?? backend.defaultSerial ?? '');
    this.#logicalBlockSize = logical;
    this.#discard = (options.discard ?? true) && !backend.readOnly;
    this.#initialWriteback = (options.writeCache ?? true) ? 1 : 0;
    this.#writeback = this.#initialWriteback;
    this.#log = options.log ?? (() => {});
    this.#defer = options.defer ?? setImmediate;
    this.#moderation = options.moderation;
    this.queues = Array.from({ length: queues }, () => ({ maxSize: queueSize }));

    let features =
      RING_FEATURES |
      bit(BlkFeature.SIZE_MAX) |
      bit(BlkFeature.SEG_MAX) |
      bit(BlkFeature.GEOMETRY) |
      bit(BlkFeature.BLK_SIZE) |
      bit(BlkFeature.FLUSH) |
      bit(BlkFeature.TOPOLOGY) |
      bit(BlkFeature.CONFIG_WCE);
    if (backend.readOnly) features |= bit(BlkFeature.RO);
    else features |= bit(BlkFeature.WRITE_ZEROES);
    if (this.#discard) features |= bit(BlkFeature.DISCARD);
    if (queues > 1) features |= bit(BlkFeature.MQ);
    this.features = features;

    this.config = new ConfigSpace(BlkConfig.SIZE, {
      writable: [{ offset: BlkConfig.WRITEBACK, length: 1 }],
      onWrite: (offset, data) => this.#configWritten(offset, data),
    });
    const config = this.config;
    const sectors = backend.capacity / SECTOR_SIZE;
    config.setU64(BlkConfig.CAPACITY, BigInt(sectors));
    config.setU32(BlkConfig.SIZE_MAX, DEFAULT_SIZE_MAX);
    // Linux needs seg_max + 2 (header, status) descriptors in one chain without indirect ones.
    config.setU32(BlkConfig.SEG_MAX, queueSize - 2);
    // The usual fake geometry of 16 heads and 63 sectors per track; nothing uses it for I/O.
    config.setU16(BlkConfig.GEOMETRY_CYLINDERS, Math.min(Math.floor(sectors / (16 * 63)), 0xffff));
    config.setU8(BlkConfig.GEOMETRY_HEADS, 16);
    config.setU8(BlkConfig.GEOMETRY_SECTORS, 63);
    config.setU32(BlkConfig.BLK_SIZE, logical);
    config.setU8(BlkConfig.TOPOLOGY_PHYSICAL_BLOCK_EXP, Math.log2(physical / logical));
    config.setU8(BlkConfig.TOPOLOGY_ALIGNMENT_OFFSET, 0);
    config.setU16(BlkConfig.TOPOLOGY_MIN_IO_SIZE, physical / logical);
    config.setU32(BlkConfig.TOPOLOGY_OPT_IO_SIZE, 0);
    config.setU8(BlkConfig.WRITEBACK, this.#initialWriteback);
    config.setU16(BlkConfig.NUM_QUEUES, queues);
    config.setU32(BlkConfig.MAX_DISCARD_SECTORS, this.#discard ? MAX_UNMAP_SECTORS : 0);
    config.setU32(BlkConfig.MAX_DISCARD_SEG, this.#discard ? MAX_UNMAP_SEGMENTS : 0);
    // A hint for splitting discards; file systems deallocate whole 4 KiB blocks.
    config.setU32(
      BlkConfig.DISCARD_SECTOR_ALIGNMENT,
      this.#discard ? Math.max(physical, 4096) / SECTOR_SIZE : 0,
    );
    const writeZeroes = !backend.readOnly;
    config.setU32(BlkConfig.MAX_WRITE_ZEROES_SECTORS, writeZeroes ? MAX_UNMAP_SECTORS : 0);
    config.setU32(BlkConfig.MAX_WRITE_ZEROES_SEG, writeZeroes ? MAX_UNMAP_SEGMENTS : 0);
    this.#updateMayUnmap();
  }

  /** Request counters summed over the queues of the current activation. */
  get stats(): RequestStats {
    const total: RequestStats = {
      read: 0,
      write: 0,
      flush: 0,
      getId: 0,
      discard: 0,
      writeZeroes: 0,
      rejected: 0,
      ioErrors: 0,
    };
    for (const handler of this.#handlers) {
      if (!handler) continue;
      for (const key of Object.keys(total) as (keyof RequestStats)[]) {
        total[key] += handler.stats[key];
      }
    }
    return total;
  }

  /** Interrupt moderation counters summed over the queues (undefined when moderation is off). */
  get moderation(): ModerationStats | undefined {
    if (!this.#moderation) return undefined;
    const total: ModerationStats = { notifications: 0, held: 0, wasted: 0 };
    for (const handler of this.#handlers) {
      const stats = handler?.moderation;
      if (!stats) continue;
      total.notifications += stats.notifications;
      total.held += stats.held;
      total.wasted += stats.wasted;
    }
    return total;
  }

  /** Requests with I/O in flight, over all queues. */
  get inFlight(): number {
    return this.#handlers.reduce((sum, handler) => sum + (handler?.inFlight ?? 0), 0);
  }

  /** True while the disk is in writethrough mode (each write is stable before it completes). */
  get writethrough(): boolean {
    // §5.2.6.2: without FLUSH negotiated, every completed write must already be stable.
    if (!(this.#negotiated & bit(BlkFeature.FLUSH))) return true;
    return this.#writeback === 0;
  }

  validateFeatures(features: bigint): string | undefined {
    // The driver reads `writeback` after FEATURES_OK and before DRIVER_OK (§5.2.5), so the
    // negotiated cache mode must be in place now. CONFIG_WCE without FLUSH starts writethrough.
    const wceOnly =
      (features & bit(BlkFeature.CONFIG_WCE)) !== 0n && (features & bit(BlkFeature.FLUSH)) === 0n;
    this.#writeback = wceOnly ? 0 : this.#initialWriteback;
    this.config.setU8(BlkConfig.WRITEBACK, this.#writeback);
    this.#negotiated = features;
    return undefined;
  }

  activate(context: ActivationContext): void {
    const features = context.features;
    this.#negotiated = features;
    this.#reportViolation = context.reportViolation;
    const limits = (maxSectors: number): SegmentLimits => ({
      maxSectors,
      maxSegments: MAX_UNMAP_SEGMENTS,
    });
    const rules: RequestRules = {
      capacity: this.backend.capacity,
      logicalBlockSize: this.#logicalBlockSize,
      readOnly: this.backend.readOnly,
      discard:
        this.#discard && features & bit(BlkFeature.DISCARD) ? limits(MAX_UNMAP_SECTORS) : undefined,
      writeZeroes:
        !this.backend.readOnly && features & bit(BlkFeature.WRITE_ZEROES)
          ? limits(MAX_UNMAP_SECTORS)
          : undefined,
    };
    const handlerContext: HandlerContext = {
      backend: this.backend,
      rules,
      deviceId: this.#deviceId,
      writethrough: () => this.writethrough,
      allowUnmap: this.#discard,
      reportViolation: context.reportViolation,
      log: this.#log,
      defer: this.#defer,
      ...(this.#moderation && { moderation: this.#moderation }),
      afterUnmap: () => this.#updateMayUnmap(),
    };
    const handlers: (RequestHandler | undefined)[] = [];
    try {
      context.queues.forEach((queue, index) => {
        handlers[index] = queue
          ? new RequestHandler(queue, () => context.signalUsed(index), handlerContext)
          : undefined;
      });
    } catch (error) {
      // A handler's moderation timer could not be made (out of descriptors): release the others'.
      for (const handler of handlers) void handler?.settle();
      throw error;
    }
    this.#handlers = handlers;
  }

  queueNotify(queueIndex: number): void {
    this.#handlers[queueIndex]?.process();
  }

  reset(): Promise<void> {
    const handlers = this.#handlers.filter((handler) => handler !== undefined);
    this.#handlers = [];
    this.#negotiated = 0n;
    this.#reportViolation = undefined;
    return Promise.all(handlers.map((handler) => handler.settle())).then(() => {});
  }

  /**
   * Waits for requests in flight, then closes the backend. Call when the VMM removes the disk
   * (after a reset, or instead of one).
   */
  async close(): Promise<void> {
    await this.reset();
    await this.backend.close();
  }

  #configWritten(offset: number, data: Uint8Array): void {
    if (offset !== BlkConfig.WRITEBACK || data.length !== 1) return;
    if (this.#negotiated & bit(BlkFeature.CONFIG_WCE)) {
      const writeback = data[0] ? 1 : 0;
      if (writeback !== this.#writeback) {
        this.#log(
          `the driver switched the write cache to ${writeback ? 'writeback' : 'writethrough'}`,
        );
      }
      this.#writeback = writeback;
    } else {
      // Without CONFIG_WCE the cache mode is not the driver's to change (§5.2.5).
      const message = 'driver wrote writeback without negotiating VIRTIO_BLK_F_CONFIG_WCE';
      if (this.#reportViolation) {
        this.#reportViolation({ code: 'BLK_WRITEBACK_WITHOUT_WCE', message, needsReset: false });
      } else {
        this.#log(message);
      }
    }
    // Put back the device's value (or the normalized 0/1 the driver chose).
    this.config.setU8(BlkConfig.WRITEBACK, this.#writeback);
  }

  #updateMayUnmap(): void {
    const may = this.#discard && this.backend.canUnmap ? 1 : 0;
    this.config.setU8(BlkConfig.WRITE_ZEROES_MAY_UNMAP, may);
  }
}

function bit(feature: number): bigint {
  return featureBit(feature);
}

function checkOptions(
  queues: number,
  queueSize: number,
  logical: number,
  physical: number,
  backend: BlockBackend,
): void {
  const fail = (message: string): never => {
    throw new BlockError('BLK_OPTIONS', message);
  };
  const powerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!Number.isInteger(queues) || queues < 1 || queues > 16) {
    fail(`queues must be an integer from 1 to 16, got ${queues}`);
  }
  if (!powerOfTwo(queueSize) || queueSize < 4 || queueSize > 32768) {
    fail(`queue size must be a power of two from 4 to 32768, got ${queueSize}`);
  }
  if (!powerOfTwo(logical) || logical < SECTOR_SIZE || logical > 65536) {
    fail(`logical block size must be a power of two from 512 to 65536, got ${logical}`);
  }
  if (!powerOfTwo(physical) || physical < logical || physical / logical > 128) {
    fail(
      `physical block size must be a power-of-two multiple (up to 128) of the ${logical}-byte logical block size, got ${physical}`,
    );
  }
  const capacity = backend.capacity;
  if (!Number.isSafeInteger(capacity) || capacity <= 0 || capacity % logical !== 0) {
    throw new BlockError(
      'BLK_IMAGE_SIZE',
      `disk size ${capacity} is not a positive multiple of the ${logical}-byte logical block size`,
    );
  }
}

/** The GET_ID answer: the serial's ASCII bytes, zero padded to 20 (no NUL when 20 long). */
export function encodeSerial(serial: string): Uint8Array {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the check is for non-ASCII
  if (!/^[\x00-\x7f]*$/.test(serial)) {
    throw new BlockError('BLK_OPTIONS', `serial '${serial}' must be ASCII`);
  }
  if (serial.length > DEVICE_ID_BYTES) {
    throw new BlockError(
      'BLK_OPTIONS',
      `serial '${serial}' is ${serial.length} bytes long, at most ${DEVICE_ID_BYTES} fit`,
    );
  }
  const id = new Uint8Array(DEVICE_ID_BYTES);
  for (let i = 0; i < serial.length; i++) id[i] = serial.charCodeAt(i);
  return id;
}
