import type { ViolationSink } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import type { DescriptorChain, Segment } from './chain.js';

/** Ring layout of a virtqueue: split (§2.7) or packed (§2.8). */
export type RingLayout = 'split' | 'packed';

/**
 * Where a queue lives in guest memory and what was negotiated for it. The three addresses are
 * the transport's "descriptor area", "driver area" and "device area" (§2.6): for a split ring the
 * descriptor table, available ring and used ring; for a packed ring the descriptor ring, driver
 * event suppression and device event suppression structures.
 */
export interface QueueSetup {
  /** Queue index on its device (for messages and interrupts). */
  readonly index: number;
  /** Queue size chosen by the driver. */
  readonly size: number;
  /** Guest address of the descriptor area (split: descriptor table; packed: descriptor ring). */
  readonly descAddr: number;
  /** Guest address of the driver area (split: available ring; packed: driver event suppression). */
  readonly driverAddr: number;
  /** Guest address of the device area (split: used ring; packed: device event suppression). */
  readonly deviceAddr: number;
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC was negotiated. */
  readonly indirect: boolean;
}

/**
 * Position of the device in a ring, for handing a ring from one process to another
 * (vhost-user GET/SET_VRING_BASE) and for snapshots. Plain JSON-serialisable data.
 */
export interface QueuePosition {
  /** Split: next available-ring index to read (free-running u16). Packed: next descriptor slot. */
  readonly nextAvail: number;
  /** Split: next used-ring index to write (free-running u16). Packed: next used slot. */
  readonly nextUsed: number;
  /** Packed only: wrap counter expected on the next available descriptor. */
  readonly availWrap?: boolean;
  /** Packed only: wrap counter for the next used descriptor. */
  readonly usedWrap?: boolean;
}

/**
 * The device side of one virtqueue, the same for both layouts.
 *
 * The processing loop that never loses a wake-up:
 * ```ts
 * do {
 *   queue.disableNotifications();
 *   for (let chain; (chain = queue.pop()); ) {
 *     queue.addUsed(chain, handle(chain));
 *   }
 *   if (queue.publishUsed()) signalUsed();
 * } while (queue.enableNotifications());
 * ```
 * A guest's protocol violation is reported to the queue's {@link ViolationSink}; the queue then
 * stops returning chains ({@link broken}) until the device is reset.
 */
export interface DeviceQueue {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries) the driver chose. */
  readonly size: number;
  /** Ring layout. */
  readonly layout: RingLayout;
  /** True after a protocol violation: the queue returns no more chains. */
  readonly broken: boolean;
  /** Chains popped and not yet returned with {@link addUsed}. */
  readonly inFlight: number;

  /** The next available chain, or `null` if there is none (or the queue is broken). */
  pop(): DescriptorChain | null;
  /** True if a chain is available (without consuming it). */
  hasAvailable(): boolean;
  /**
   * Returns a chain to the driver, stating how many bytes the device wrote into it. The element
   * becomes visible to the driver at the next {@link publishUsed}. Throws a `DEVICE_STATE` error
   * for a chain that is not in flight on this queue (returned twice, or from another queue): that
   * is a device bug, not a guest one. A broken queue still accepts chains popped before it broke.
   */
  addUsed(chain: DescriptorChain, writtenLength: number): void;
  /**
   * Makes every element added since the last call visible to the driver; returns true if the
   * driver asked to be interrupted for them (notification suppression, §2.7.7 / §2.8.10).
   */
  publishUsed(): boolean;
  /** Asks the driver not to notify (kick) the device; a hint the driver may ignore. */
  disableNotifications(): void;
  /**
   * Asks the driver to notify the device on new buffers, then re-checks the ring: returns true if
   * buffers arrived in between, in which case the caller must process again.
   */
  enableNotifications(): boolean;
  /**
   * The device's position in the ring (see {@link QueuePosition}). It counts used elements not yet
   * published: call {@link publishUsed} first.
   */
  position(): QueuePosition;
  /**
   * Stops the queue: it no longer touches the ring (pop returns null; addUsed, publishUsed and the
   * notification calls do nothing). Core calls this on reset so completions of requests still in
   * flight never reach a reset ring.
   */
  detach(): void;
}

/** What creating a device queue needs besides its {@link QueueSetup}. */
export interface DeviceQueueOptions {
  /** Guest memory holding the rings and buffers. */
  readonly memory: GuestMemory;
  /** Receives guest protocol violations (the queue then stops). */
  readonly onViolation: ViolationSink;
  /** Start at this position instead of the beginning (vhost-user SET_VRING_BASE). */
  readonly position?: QueuePosition;
}

/** A used element as the driver collects it. */
export interface UsedBuffer<T> {
  /** The token given to {@link DriverQueue.add}. */
  readonly token: T;
  /** Bytes the device wrote. */
  readonly len: number;
}

/** Options of a driver-side queue. */
export interface DriverQueueOptions {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries); a power of two for split rings. */
  readonly size: number;
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC was negotiated: chains of several segments use indirect tables. */
  readonly indirect: boolean;
  /** Allocates `size` bytes of guest memory aligned to `align`; returns the guest address. */
  readonly allocate: (size: number, align: number) => number;
}

/**
 * The driver side of one virtqueue, the same for both layouts: what the test harness and
 * userspace drivers use to hand buffers to a device.
 */
export interface DriverQueue<T = unknown> {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries). */
  readonly size: number;
  /** Ring layout. */
  readonly layout: RingLayout;
  /** Descriptor area address, to program into the transport (see {@link QueueSetup}). */
  readonly descAddr: number;
  /** Driver area address, to program into the transport (see {@link QueueSetup}). */
  readonly driverAddr: number;
  /** Device area address, to program into the transport (see {@link QueueSetup}). */
  readonly deviceAddr: number;
  /** Descriptors (ring slots) free for new buffers. */
  readonly freeDescriptors: number;
  /** Adds a buffer: device-readable segments, then device-writable ones. False if it does not fit. */
  add(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean;
  /** Makes added buffers visible to the device; returns true if the device wants a notification. */
  publish(): boolean;
  /** The next used buffer, or `null`. */
  takeUsed(): UsedBuffer<T> | null;
  /** Asks the device not to interrupt. */
  disableInterrupts(): void;
  /** Asks the device to interrupt again; returns true if used buffers are already pending. */
  enableInterrupts(): boolean;
}
