/**
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2): a 4 KiB window of 32-bit registers and
 * the device's configuration space, mapped into a VMM's MMIO address space. Register accesses
 * become calls on core's {@link DeviceController}; the controller's interrupts become
 * InterruptStatus bits and the level of one interrupt line.
 */

import {
  accessValue,
  type BusDevice,
  DeviceController,
  Feature,
  featureBit,
  type GuestMemory,
  INTERRUPT_CONFIG_CHANGE,
  INTERRUPT_USED_BUFFER,
  type InterruptSink,
  type QueueArea,
  setAccessValue,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
  ViolationCounter,
  type VirtioDevice,
} from '@virtkit/core';
import { DEFAULT_VENDOR_ID, MMIO_WINDOW_SIZE, MmioRegister } from './constants.js';
import { MmioTransportError } from './errors.js';

/**
 * A level-triggered interrupt line (virtio-mmio's one interrupt, §4.2.3.4).
 *
 * The line is asserted while InterruptStatus is non-zero. `setLevel(true)` is called for every
 * interrupt the device raises, also when the line is already asserted, so an edge-triggered
 * consumer (a KVM irqfd, which injects a pulse per write) can inject once per call and never miss
 * an event that arrived while the guest was handling the previous one; a level consumer (an
 * IOAPIC or PLIC model) treats repeated calls as no-ops. `setLevel(false)` is called once when the
 * driver acknowledged the last pending bit or the device was reset.
 */
export interface InterruptLine {
  setLevel(asserted: boolean): void;
}

/**
 * Where a driver's notification for one queue lands, for registering a KVM_IOEVENTFD
 * (`addr = base + offset`, `len = width`, `KVM_IOEVENTFD_FLAG_DATAMATCH`, `datamatch`).
 */
export interface NotifyAddress {
  /** Offset in the window: always QueueNotify (0x50). */
  readonly offset: number;
  /** The value the driver writes for this queue: its index. */
  readonly datamatch: number;
  /** Access width in bytes. */
  readonly width: 4;
}

/** Options of a {@link MmioTransport}. */
export interface MmioTransportOptions {
  /** Guest RAM the device's queues live in. */
  readonly memory: GuestMemory;
  /** The interrupt line the VMM wired to this device (a GSI, a PLIC source...). */
  readonly interrupt: InterruptLine;
  /** VendorID register value (default {@link DEFAULT_VENDOR_ID}, "QEMU"). */
  readonly vendorId?: number;
  /** Diagnostic messages, including each counted register misuse (default: dropped). */
  readonly log?: (message: string) => void;
}

const QUEUE_ADDRESS_REGISTERS: ReadonlyMap<number, readonly [QueueArea, 0 | 1]> = new Map([
  [MmioRegister.QUEUE_DESC_LOW, ['desc', 0]],
  [MmioRegister.QUEUE_DESC_HIGH, ['desc', 1]],
  [MmioRegister.QUEUE_DRIVER_LOW, ['driver', 0]],
  [MmioRegister.QUEUE_DRIVER_HIGH, ['driver', 1]],
  [MmioRegister.QUEUE_DEVICE_LOW, ['device', 0]],
  [MmioRegister.QUEUE_DEVICE_HIGH, ['device', 1]],
]);

const NOTIFICATION_DATA = featureBit(Feature.NOTIFICATION_DATA);
/** Features whose registers this transport does not implement (QueueReset). */
const UNSUPPORTED_FEATURES: readonly [number, string][] = [[Feature.RING_RESET, 'RING_RESET']];

/**
 * A virtio device behind a virtio-mmio (version 2) register window. Map it at a base address
 * of the VMM's MMIO bus with a size of {@link MMIO_WINDOW_SIZE} and route exits to
 * {@link read} / {@link write}.
 *
 * Registers below 0x100 take 32-bit aligned accesses only (§4.2.2.2); the configuration space
 * at 0x100 takes 8-, 16- and 32-bit accesses aligned to their width. Anything else the guest
 * does wrong (another width or alignment, an unknown register, reading a write-only register,
 * writing a read-only one) reads as 0 or is ignored, and is counted in {@link violations}; it
 * never throws. Protocol misuse the
 * controller judges (status order, queue setup after DRIVER_OK...) is counted in
 * `controller.violations`.
 *
 * @example
 * ```ts
 * const device = await registry.create('blk', { path: 'disk.img' });
 * const transport = new MmioTransport(device, {
 *   memory,
 *   interrupt: { setLevel: (high) => high && irqfd.write(1) },
 * });
 * bus.map(0xd000_0000, MMIO_WINDOW_SIZE, transport);
 * ```
 */
export class MmioTransport implements BusDevice {
  /** Core's side of the device: status, features, queues, configuration space. */
  readonly controller: DeviceController;
  /** Register-level misuse by the guest (bad widths, offsets, unknown registers), by code. */
  readonly violations = new ViolationCounter();
  /** VendorID register value. */
  readonly vendorId: number;

  readonly #line: InterruptLine;
  readonly #log: (message: string) => void;
  #deviceFeaturesSel = 0;
  #driverFeaturesSel = 0;
  #queueSel = 0;
  #interruptStatus = 0;
  #asserted = false;

  constructor(device: VirtioDevice, options: MmioTransportOptions) {
    const vendorId = options.vendorId ?? DEFAULT_VENDOR_ID;
    if (!Number.isInteger(vendorId) || vendorId < 0 || vendorId > 0xffff_ffff) {
      throw new MmioTransportError(
        'MMIO_INVALID_OPTION',
        `vendorId ${vendorId} is not a 32-bit unsigned integer`,
      );
    }
    for (const [bit, name] of UNSUPPORTED_FEATURES) {
      if (BigInt.asUintN(64, device.features) & featureBit(bit)) {
        throw new MmioTransportError(
          'MMIO_UNSUPPORTED_FEATURE',
          `device type ${device.deviceType} offers ${name}, which the virtio-mmio transport does not implement`,
        );
      }
    }
    this.vendorId = vendorId;
    this.#line = options.interrupt;
    this.#log = options.log ?? (() => {});
    const sink: InterruptSink = {
      signalUsed: () => this.#raise(INTERRUPT_USED_BUFFER),
      signalConfig: () => this.#raise(INTERRUPT_CONFIG_CHANGE),
    };
    this.controller = new DeviceController(device, {
      memory: options.memory,
      interrupt: sink,
      // Version 2 is the modern interface only: FEATURES_OK needs VERSION_1 (§4.2.4, §6.1).
      requireVersion1: true,
      log: this.#log,
    });
    // A completion or config change that raced with a reset must not survive it (§4.2.2.1).
    this.controller.events.on('reset', () => this.#clearInterrupts());
  }

  /** Current InterruptStatus: bit 0 used buffer, bit 1 configuration change. */
  get interruptStatus(): number {
    return this.#interruptStatus;
  }

  /** True while the interrupt line is asserted (InterruptStatus is non-zero). */
  get interruptAsserted(): boolean {
    return this.#asserted;
  }

  /** Guest read of `data.length` bytes at `offset` in the window. Never throws. */
  read(offset: number, data: Uint8Array): void {
    if (offset >= MmioRegister.CONFIG) {
      if (this.#configAccess(offset, data, 'read')) {
        this.controller.readConfig(offset - MmioRegister.CONFIG, data);
      }
      return;
    }
    if (!this.#registerAccess(offset, data, 'read')) return;
    const value = this.#readRegister(offset);
    if (value === undefined) {
      data.fill(0);
      this.#invalid(`driver read register 0x${offset.toString(16)}, which is not readable`);
      return;
    }
    setAccessValue(data, value);
  }

  /** Guest write of `data` at `offset` in the window. Never throws. */
  write(offset: number, data: Uint8Array): void {
    if (offset >= MmioRegister.CONFIG) {
      if (this.#configAccess(offset, data, 'write')) {
        this.controller.writeConfig(offset - MmioRegister.CONFIG, data);
      }
      return;
    }
    if (!this.#registerAccess(offset, data, 'write')) return;
    if (!this.#writeRegister(offset, accessValue(data))) {
      this.#invalid(`driver wrote register 0x${offset.toString(16)}, which is not writable`);
    }
  }

  /**
   * Where the driver's notifications for queue `index` arrive, for a KVM_IOEVENTFD with
   * datamatch. Throws for a queue the device does not have (a VMM mistake, not a guest one).
   * With VIRTIO_F_NOTIFICATION_DATA negotiated the written value carries more than the index and
   * a datamatch eventfd no longer matches; devices that offer it should not use ioeventfds.
   */
  notifyAddress(index: number): NotifyAddress {
    if (!this.controller.queue(index)) {
      throw new MmioTransportError(
        'MMIO_INVALID_OPTION',
        `device has ${this.controller.numQueues} queues; there is no queue ${index} to notify`,
      );
    }
    return { offset: MmioRegister.QUEUE_NOTIFY, datamatch: index, width: 4 };
  }

  /** Notify addresses of every queue, in index order. */
  notifyAddresses(): NotifyAddress[] {
    return Array.from({ length: this.controller.numQueues }, (_, index) =>
      this.notifyAddress(index),
    );
  }

  /**
   * Delivers a notification that reached the VMM some other way than a register write (an
   * ioeventfd fired for queue `index`). Same effect as the driver writing `index` to QueueNotify.
   */
  notifyQueue(index: number): void {
    this.controller.notify(index);
  }

  /**
   * Resolves when the effects of the status writes so far have settled (a device reset or
   * activation that its plugin made asynchronous). Linux's virtio-mmio driver writes 0 to Status
   * and goes on without polling it, so a VMM whose devices reset asynchronously should await this
   * before resuming the vCPU that wrote Status.
   */
  settled(): Promise<void> {
    return this.controller.settled();
  }

  /** Resets the device as if the driver wrote 0 to Status (VMM teardown, system reset). */
  reset(): Promise<void> {
    this.#writeStatus(0);
    return this.settled();
  }

  #readRegister(offset: number): number | undefined {
    const controller = this.controller;
    switch (offset) {
      case MmioRegister.MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case MmioRegister.VERSION:
        return VIRTIO_MMIO_VERSION;
      case MmioRegister.DEVICE_ID:
        return controller.device.deviceType;
      case MmioRegister.VENDOR_ID:
        return this.vendorId;
      case MmioRegister.DEVICE_FEATURES:
        return controller.deviceFeaturesPage(this.#deviceFeaturesSel);
      case MmioRegister.QUEUE_NUM_MAX:
        return controller.queue(this.#queueSel)?.maxSize ?? 0;
      case MmioRegister.QUEUE_READY:
        return controller.queue(this.#queueSel)?.ready ? 1 : 0;
      case MmioRegister.INTERRUPT_STATUS:
        return this.#interruptStatus;
      case MmioRegister.STATUS:
        return controller.status;
      // No shared memory regions: every region reads as absent, length and base all ones
      // (§4.2.2, "a length of -1"; Linux vm_get_shm_region checks for ~0).
      case MmioRegister.SHM_LEN_LOW:
      case MmioRegister.SHM_LEN_HIGH:
      case MmioRegister.SHM_BASE_LOW:
      case MmioRegister.SHM_BASE_HIGH:
        return 0xffff_ffff;
      case MmioRegister.CONFIG_GENERATION:
        return controller.configGeneration;
      default:
        return undefined;
    }
  }

  /** Applies a register write; false if `offset` is not a writable register. */
  #writeRegister(offset: number, value: number): boolean {
    const controller = this.controller;
    switch (offset) {
      case MmioRegister.DEVICE_FEATURES_SEL:
        this.#deviceFeaturesSel = value;
        return true;
      case MmioRegister.DRIVER_FEATURES:
        controller.writeDriverFeaturesPage(this.#driverFeaturesSel, value);
        return true;
      case MmioRegister.DRIVER_FEATURES_SEL:
        this.#driverFeaturesSel = value;
        return true;
      case MmioRegister.QUEUE_SEL:
        // Any value may be selected; a queue that does not exist reads QueueNumMax 0 and the
        // controller refuses (and counts) writes that address it.
        this.#queueSel = value;
        return true;
      case MmioRegister.QUEUE_NUM:
        controller.writeQueueSize(this.#queueSel, value);
        return true;
      case MmioRegister.QUEUE_READY:
        if (value > 1) {
          this.#invalid(`driver wrote ${value} to QueueReady, which takes 0 or 1`);
        } else {
          controller.writeQueueReady(this.#queueSel, value === 1);
        }
        return true;
      case MmioRegister.QUEUE_NOTIFY:
        this.#notify(value);
        return true;
      case MmioRegister.INTERRUPT_ACK:
        this.#acknowledge(value);
        return true;
      case MmioRegister.STATUS:
        if (value > 0xff) {
          this.#invalid(`driver wrote status 0x${value.toString(16)}, which has bits above 7`);
        } else {
          this.#writeStatus(value);
        }
        return true;
      case MmioRegister.SHM_SEL:
        // Every region is absent, whichever one is selected.
        return true;
      default: {
        const address = QUEUE_ADDRESS_REGISTERS.get(offset);
        if (!address) return false;
        controller.writeQueueAddress(this.#queueSel, address[0], address[1], value);
        return true;
      }
    }
  }

  #notify(value: number): void {
    // With NOTIFICATION_DATA the driver adds the next ring position in bits 16-31 (§4.2.3.3);
    // the device finds it in the ring itself, so only the index matters here.
    const negotiated = this.controller.negotiatedFeatures & NOTIFICATION_DATA;
    this.controller.notify(negotiated ? value & 0xffff : value);
  }

  #writeStatus(value: number): void {
    if (value === 0) {
      this.#deviceFeaturesSel = 0;
      this.#driverFeaturesSel = 0;
      this.#queueSel = 0;
      this.#clearInterrupts();
    }
    this.controller.writeStatus(value).catch((error: unknown) => {
      this.#log(`status write 0x${value.toString(16)} failed: ${String(error)}`);
    });
  }

  #raise(bit: number): void {
    this.#interruptStatus |= bit;
    this.#asserted = true;
    this.#line.setLevel(true);
  }

  #acknowledge(value: number): void {
    this.#interruptStatus &= ~value & (INTERRUPT_USED_BUFFER | INTERRUPT_CONFIG_CHANGE);
    if (this.#interruptStatus === 0) this.#lower();
  }

  #clearInterrupts(): void {
    this.#interruptStatus = 0;
    this.#lower();
  }

  #lower(): void {
    if (!this.#asserted) return;
    this.#asserted = false;
    this.#line.setLevel(false);
  }

  /** True if a register access is one 32-bit aligned word inside the register block. */
  #registerAccess(offset: number, data: Uint8Array, kind: 'read' | 'write'): boolean {
    if (
      Number.isInteger(offset) &&
      offset >= 0 &&
      offset < MmioRegister.CONFIG &&
      offset % 4 === 0 &&
      data.length === 4
    ) {
      return true;
    }
    if (kind === 'read') data.fill(0);
    this.#invalid(
      `driver ${kind === 'read' ? 'read' : 'wrote'} ${data.length} bytes at offset 0x${offset.toString(16)}; registers take aligned 32-bit accesses`,
    );
    return false;
  }

  /**
   * True if an access at or above 0x100 is an aligned 8-, 16- or 32-bit access inside the
   * window. §4.2.2.2: 16-bit fields take aligned 16-bit accesses, 32- and 64-bit fields aligned
   * 32-bit ones, so an access that is not aligned to its width matches no field.
   */
  #configAccess(offset: number, data: Uint8Array, kind: 'read' | 'write'): boolean {
    const width = data.length;
    if (
      Number.isInteger(offset) &&
      (width === 1 || width === 2 || width === 4) &&
      offset % width === 0 &&
      offset + width <= MMIO_WINDOW_SIZE
    ) {
      return true;
    }
    if (kind === 'read') data.fill(0);
    this.#invalid(
      `driver ${kind === 'read' ? 'read' : 'wrote'} ${width} bytes at offset 0x${offset.toString(16)}; configuration space takes aligned 8-, 16- and 32-bit accesses inside the window`,
    );
    return false;
  }

  #invalid(message: string): void {
    this.violations.record({ code: 'REGISTER_ACCESS_INVALID', message, needsReset: false });
    this.#log(message);
  }
}
