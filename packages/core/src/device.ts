/**
 * The device plugin API. A plugin states what it is and how to create a device from one options
 * object; a device states its type, offered features, queues and configuration space, and what
 * to do on activate and reset. Core (the {@link DeviceController}) owns everything else: status
 * bits, feature negotiation, queue setup and validation, notifications and interrupts.
 */

import type { ConfigSpace } from './config-space.js';
import type { ViolationSink } from './errors.js';
import type { GuestMemory } from './memory.js';
import type { InferOptions, OptionsSchema } from './options.js';
import type { DeviceQueue } from './queue/types.js';

/** Plugin metadata, checked at registration. */
export interface PluginMeta {
  /** Registry name, e.g. `blk` (lowercase letters, digits and dashes). */
  readonly name: string;
  /** The plugin's own version (semver). */
  readonly version: string;
  /** Range of @virtkit/core versions the plugin works with (semver range, e.g. `^0.1.0`). */
  readonly core: string;
}

/** What a device sends to the driver. Implemented by the controller on top of a transport. */
export interface InterruptSink {
  /** Used buffers were added to queue `queueIndex`. */
  signalUsed(queueIndex: number): void;
  /** The configuration space changed (or DEVICE_NEEDS_RESET was set). */
  signalConfig(): void;
}

/** Handed to {@link VirtioDevice.activate} when the driver sets DRIVER_OK. */
export interface ActivationContext {
  /** Guest memory, for devices that access it outside descriptor chains. */
  readonly memory: GuestMemory;
  /** One entry per queue the device declared; `undefined` for queues the driver did not enable. */
  readonly queues: readonly (DeviceQueue | undefined)[];
  /** Negotiated features (device-specific and reserved bits). */
  readonly features: bigint;
  /** Signals used buffers on a queue to the driver (the transport routes it to an interrupt). */
  signalUsed(queueIndex: number): void;
  /** Reports a device-level guest protocol violation (malformed request...). */
  readonly reportViolation: ViolationSink;
}

/** One queue a device offers. */
export interface QueueSpec {
  /** Largest size the device supports (QueueNumMax); the driver may choose a smaller one. */
  readonly maxSize: number;
}

/**
 * A virtio device instance, as created by a plugin.
 *
 * @example
 * ```ts
 * const device: VirtioDevice = {
 *   deviceType: DeviceType.ENTROPY,
 *   features: featureBit(Feature.RING_EVENT_IDX),
 *   queues: [{ maxSize: 256 }],
 *   activate(ctx) { queue = ctx.queues[0]; },
 *   queueNotify(index) { drain(queue); },
 *   reset() { queue = undefined; },
 * };
 * ```
 */
export interface VirtioDevice {
  /** Virtio device ID (§5), e.g. {@link DeviceType.BLOCK}. */
  readonly deviceType: number;
  /**
   * Features the device offers: its own bits and the reserved ring bits it supports
   * (RING_INDIRECT_DESC, RING_EVENT_IDX, RING_PACKED...). Core adds VERSION_1.
   */
  readonly features: bigint;
  /** The device's queues, in index order. */
  readonly queues: readonly QueueSpec[];
  /** Configuration space; absent means none. */
  readonly config?: ConfigSpace;
  /**
   * Checks a feature set the driver accepted (already a subset of {@link features}); returns a
   * sentence saying what is wrong, or `undefined` if the set is acceptable. Core then refuses
   * FEATURES_OK (§2.2.2, §3.1.1).
   */
  validateFeatures?(features: bigint): string | undefined;
  /** The driver set DRIVER_OK. May be async; notifications that arrive meanwhile are held. */
  activate(context: ActivationContext): void | Promise<void>;
  /** The driver kicked queue `queueIndex` (only called while active). */
  queueNotify(queueIndex: number): void;
  /**
   * The driver reset the device, or the VMM is tearing it down. Settle requests in flight before
   * resolving; core keeps reporting a non-zero status until then (§4.1.4.3.2).
   */
  reset(): void | Promise<void>;
}

/** Host facilities a plugin may use to create a device. */
export interface DeviceEnvironment {
  /** Where the device's diagnostic messages go (default: console.warn). */
  readonly log?: (message: string) => void;
}

/**
 * A device plugin: metadata, the options it takes, and a factory.
 *
 * @example
 * ```ts
 * const rng = defineDevicePlugin({
 *   meta: { name: 'rng', version: '1.0.0', core: '^0.1.0' },
 *   deviceType: DeviceType.ENTROPY,
 *   options: defineOptions({ seed: { type: 'integer', description: 'PRNG seed', default: 1 } }),
 *   create: (options) => new RngDevice(options.seed),
 * });
 * ```
 */
export interface DevicePlugin<S extends OptionsSchema = OptionsSchema> {
  /** Name, version and supported core range, checked at registration. */
  readonly meta: PluginMeta;
  /** Virtio device ID of the devices it creates. */
  readonly deviceType: number;
  /** One-line description for help output. */
  readonly description?: string;
  /** The options schema; {@link create} receives validated options. */
  readonly options: S;
  /** Extra checks across options (e.g. "exactly one backend"); returns an error sentence or undefined. */
  validate?(options: InferOptions<S>): string | undefined;
  /** Creates a device from validated options. */
  create(
    options: InferOptions<S>,
    environment: DeviceEnvironment,
  ): VirtioDevice | Promise<VirtioDevice>;
}

/** Declares a plugin with its option types inferred. */
export function defineDevicePlugin<const S extends OptionsSchema>(
  plugin: DevicePlugin<S>,
): DevicePlugin<S> {
  return plugin;
}

/**
 * Optional capability: devices that can save and restore their state (as plain JSON data).
 * Check with {@link isSnapshottable}.
 */
export interface Snapshottable {
  /** The device's state as plain JSON-serialisable data. */
  snapshot(): unknown;
  /** Restores a state {@link snapshot} returned (before activation). */
  restore(state: unknown): void;
}

/** True if `device` implements {@link Snapshottable}. */
export function isSnapshottable(device: VirtioDevice): device is VirtioDevice & Snapshottable {
  const candidate = device as Partial<Snapshottable>;
  return typeof candidate.snapshot === 'function' && typeof candidate.restore === 'function';
}

/**
 * Checks what a device declares: a 16-bit device type and queue maxima that are powers of two from
 * 1 to 32768 (Linux refuses split rings of other sizes, and a driver may use the maximum as is).
 * Returns a sentence describing the first problem, or `undefined`.
 */
export function checkDeviceShape(device: VirtioDevice): string | undefined {
  if (
    !Number.isInteger(device.deviceType) ||
    device.deviceType <= 0 ||
    device.deviceType > 0xffff
  ) {
    return `invalid virtio device type ${device.deviceType}`;
  }
  for (const [index, queue] of device.queues.entries()) {
    const size = queue.maxSize;
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
      return `queue ${index} with invalid maximum size ${size} (must be a power of two up to 32768)`;
    }
  }
  return undefined;
}
