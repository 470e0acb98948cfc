/**
 * Linux's device initialization over a {@link TransportDriver}, step for step as
 * drivers/virtio/virtio.c (`register_virtio_device`, `virtio_dev_probe`, `virtio_features_ok`)
 * and the transports' `find_vqs` / `setup_vq` do it (virtio 1.2 §3.1.1), with core's
 * driver-side rings. Also the small amount of driver work the suite needs afterwards: putting
 * buffers on a queue, kicking, handling the interrupt and collecting used buffers.
 */

import {
  DeviceStatus,
  type DriverQueue,
  Feature,
  featureBit,
  PackedDriverQueue,
  type RingLayout,
  SplitDriverQueue,
  VirtkitError,
} from '@virtkit/core';
import type { TestMemory } from '@virtkit/core/testing';
import type { InterruptCauses, TransportDriver } from './driver.js';

/** Transport feature bits Linux keeps when the device offers them (`vring_transport_features`). */
const TRANSPORT_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.VERSION_1) |
  featureBit(Feature.ACCESS_PLATFORM) |
  featureBit(Feature.RING_PACKED) |
  featureBit(Feature.ORDER_PLATFORM);

/** Options of {@link linuxInit}. */
export interface LinuxInitOptions {
  readonly layout: RingLayout;
  /** Queues the "driver" uses, from index 0 (Linux drivers know how many they want). */
  readonly queues: number;
  /**
   * Device-specific features the driver knows (bits 0-23 and 50+; Linux's feature table).
   * Transport bits are chosen from the offer as Linux does; RING_PACKED follows `layout`.
   */
  readonly driverFeatures?: bigint;
  /** Queue sizes (default: each queue's maximum, capped at 256). */
  readonly queueSizes?: readonly number[];
  /** Where rings and buffers are allocated. */
  readonly guest: TestMemory;
  /** Stop after setting up the queues, before DRIVER_OK. */
  readonly skipDriverOk?: boolean;
}

/** A device the init sequence brought up. */
export interface InitializedDevice {
  /** Features the driver wrote and the device accepted (FEATURES_OK read back). */
  readonly features: bigint;
  /** Driver-side rings, by queue index. */
  readonly queues: readonly DriverQueue<number>[];
}

/**
 * Runs Linux's initialization sequence: reset, ACKNOWLEDGE, DRIVER, feature negotiation with
 * the FEATURES_OK read-back (FAILED and an error if the device refuses), queue setup like
 * `vm_setup_vq` / `vp_modern` setup_vq, then DRIVER_OK.
 */
export async function linuxInit(
  driver: TransportDriver,
  options: LinuxInitOptions,
): Promise<InitializedDevice> {
  // register_virtio_device
  await driver.reset();
  driver.setStatus(DeviceStatus.ACKNOWLEDGE);
  // virtio_dev_probe
  let status = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER;
  driver.setStatus(status);
  const offered = driver.deviceFeatures();
  let wanted = (options.driverFeatures ?? 0n) | TRANSPORT_FEATURES;
  if (options.layout === 'split') wanted &= ~featureBit(Feature.RING_PACKED);
  const features = offered & wanted;
  if (!(features & featureBit(Feature.VERSION_1))) {
    // vm_finalize_features / vp_finalize_features: modern transports require VERSION_1.
    driver.setStatus(status | DeviceStatus.FAILED);
    throw new VirtkitError('DRIVER', 'device does not offer VIRTIO_F_VERSION_1');
  }
  if (options.layout === 'packed' && !(features & featureBit(Feature.RING_PACKED))) {
    driver.setStatus(status | DeviceStatus.FAILED);
    throw new VirtkitError('DRIVER', 'packed layout wanted but the device does not offer it');
  }
  driver.writeDriverFeatures(features);
  // virtio_features_ok
  status |= DeviceStatus.FEATURES_OK;
  driver.setStatus(status);
  if (!(driver.getStatus() & DeviceStatus.FEATURES_OK)) {
    driver.setStatus(status | DeviceStatus.FAILED);
    throw new VirtkitError('DRIVER', 'device did not accept our features (FEATURES_OK clear)');
  }
  // find_vqs
  const eventIdx = (features & featureBit(Feature.RING_EVENT_IDX)) !== 0n;
  const indirect = (features & featureBit(Feature.RING_INDIRECT_DESC)) !== 0n;
  driver.bindConfigInterrupt?.();
  const queues: DriverQueue<number>[] = [];
  for (let index = 0; index < options.queues; index++) {
    if (driver.queueReady(index)) {
      throw new VirtkitError('DRIVER', `queue ${index} is already set up`);
    }
    const max = driver.queueMaxSize(index);
    if (max === 0) throw new VirtkitError('DRIVER', `queue ${index} is not available`);
    const size = Math.min(options.queueSizes?.[index] ?? 256, max);
    const queueOptions = {
      index,
      size,
      eventIdx,
      indirect,
      allocate: (bytes: number, align: number) => options.guest.allocate(bytes, align),
    };
    const queue: DriverQueue<number> =
      options.layout === 'packed'
        ? new PackedDriverQueue<number>(options.guest.memory, queueOptions)
        : new SplitDriverQueue<number>(options.guest.memory, queueOptions);
    driver.setQueueSize(index, size);
    driver.setQueueAddresses(index, {
      desc: queue.descAddr,
      driver: queue.driverAddr,
      device: queue.deviceAddr,
    });
    driver.bindQueueInterrupt?.(index);
    driver.setQueueReady(index, true);
    queues.push(queue);
  }
  // virtio_device_ready
  if (!options.skipDriverOk) driver.setStatus(status | DeviceStatus.DRIVER_OK);
  return { features, queues };
}

/** A buffer that came back from the device. */
export interface Completion {
  readonly token: number;
  /** Used length the device reported. */
  readonly len: number;
  /** The first `len` bytes of the writable buffer. */
  readonly bytes: Uint8Array;
}

/**
 * Drives an initialized device: posts buffers, kicks only when the device asks (event
 * suppression), and collects completions after the interrupt handler ran.
 */
export class DriverSession {
  readonly driver: TransportDriver;
  readonly guest: TestMemory;
  readonly device: InitializedDevice;
  readonly #writable = new Map<number, { addr: number; len: number }>();
  #nextToken = 1;

  constructor(driver: TransportDriver, guest: TestMemory, device: InitializedDevice) {
    this.driver = driver;
    this.guest = guest;
    this.device = device;
  }

  /** Adds a buffer with `payload` to read and `writable` bytes to write; returns its token. */
  post(index: number, payload: Uint8Array, writable: number): number {
    const queue = this.#queue(index);
    const readAddr = this.guest.allocate(Math.max(payload.length, 1), 8);
    this.guest.memory.write(readAddr, payload);
    const writeAddr = this.guest.allocate(Math.max(writable, 1), 8);
    const token = this.#nextToken++;
    const readable = payload.length ? [{ addr: readAddr, len: payload.length }] : [];
    if (!queue.add(readable, [{ addr: writeAddr, len: writable }], token)) {
      throw new VirtkitError('DRIVER', `queue ${index} is full`);
    }
    this.#writable.set(token, { addr: writeAddr, len: writable });
    return token;
  }

  /** Publishes posted buffers; notifies the device if it wants it. Returns whether it did. */
  kick(index: number): boolean {
    const wants = this.#queue(index).publish();
    if (wants) this.driver.notify(index);
    return wants;
  }

  /** Runs the interrupt handler if an interrupt is pending; returns the causes, if any. */
  handleInterrupt(): InterruptCauses | undefined {
    return this.driver.interruptPending() ? this.driver.handleInterrupt() : undefined;
  }

  /** Takes every used buffer on queue `index`. */
  collect(index: number): Completion[] {
    const queue = this.#queue(index);
    const done: Completion[] = [];
    for (let used = queue.takeUsed(); used; used = queue.takeUsed()) {
      const buffer = this.#writable.get(used.token);
      this.#writable.delete(used.token);
      const bytes = new Uint8Array(used.len);
      if (buffer) this.guest.memory.read(buffer.addr, bytes);
      done.push({ token: used.token, len: used.len, bytes });
    }
    return done;
  }

  #queue(index: number): DriverQueue<number> {
    const queue = this.device.queues[index];
    if (!queue) throw new VirtkitError('DRIVER', `queue ${index} is not set up`);
    return queue;
  }
}
