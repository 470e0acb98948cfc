/**
 * The register-level driver interface every transport's test driver implements, shaped after
 * Linux's `struct virtio_config_ops` (include/linux/virtio_config.h): the init sequence in
 * `linux-init.ts` and the conformance suite speak only this interface, so the same checks run
 * over virtio-mmio and virtio-pci. Implementations touch their transport only the way a CPU
 * would: reads and writes of little-endian bytes through `BusDevice` windows.
 */

import type { BusDevice, DeviceController, VirtioDevice } from '@virtkit/core';
import type { TestMemory } from '@virtkit/core/testing';

/** What probing found (MMIO DeviceID/VendorID; PCI device ID − 0x1040 and subsystem vendor). */
export interface DeviceIdentity {
  /** Virtio device type (§5). */
  readonly deviceType: number;
  /** Vendor ID the transport reports. */
  readonly vendorId: number;
}

/** Guest-physical addresses of a queue's three areas (§2.6). */
export interface QueueAddresses {
  readonly desc: number;
  readonly driver: number;
  readonly device: number;
}

/** Why the device interrupted, as the driver's interrupt handler found out. */
export interface InterruptCauses {
  /** Used buffers (MMIO InterruptStatus bit 0, PCI ISR bit 0, or a queue's MSI-X vector). */
  readonly used: boolean;
  /** Configuration change (bit 1, or the config MSI-X vector). */
  readonly config: boolean;
}

/** Config access widths a driver uses (§4.2.2.2, §4.1.3.1). */
export type ConfigWidth = 1 | 2 | 4;

/**
 * A virtio driver's view of one transport. Queue methods take the queue index and select it
 * themselves (QueueSel / queue_select), as Linux's `setup_vq` does; any index may be passed,
 * including ones the device does not have.
 */
export interface TransportDriver {
  /** Which transport (and interrupt mode) this is, for test names: `mmio`, `pci-msix`... */
  readonly kind: string;

  /** Finds and identifies the device (MMIO: magic and version; PCI: enumeration, BARs, caps). */
  probe(): DeviceIdentity;

  /** Reads the status byte. */
  getStatus(): number;
  /** Writes the status byte (Linux `set_status`; never 0, use {@link reset}). */
  setStatus(status: number): void;
  /**
   * Resets the device: writes 0 and waits until status reads 0 (§2.4; what Linux's virtio-pci
   * does; its virtio-mmio driver does not wait). Rejects if status stays non-zero.
   */
  reset(): Promise<void>;

  /** One 32-bit page of the device's features (selector, then value). */
  deviceFeaturesPage(select: number): number;
  /** Pages 0 and 1 of the device features as one 64-bit set. */
  deviceFeatures(): bigint;
  /** Writes one 32-bit page of accepted features. */
  writeDriverFeaturesPage(select: number, value: number): void;
  /** Writes pages 0 and 1 of the accepted features. */
  writeDriverFeatures(features: bigint): void;

  /** Queue count if the transport reports one (PCI num_queues); `undefined` for MMIO. */
  queueCount(): number | undefined;
  /** Maximum size of queue `index`; 0 if the device has no such queue. */
  queueMaxSize(index: number): number;
  /** Sets the size of queue `index`. */
  setQueueSize(index: number, size: number): void;
  /** Programs the three ring addresses of queue `index` (64-bit, low then high halves). */
  setQueueAddresses(index: number, addresses: QueueAddresses): void;
  /** Enables (or, before DRIVER_OK, disables) queue `index`. */
  setQueueReady(index: number, ready: boolean): void;
  /** Reads back whether queue `index` is enabled. */
  queueReady(index: number): boolean;
  /**
   * Routes queue `index`'s interrupt before it is enabled (PCI MSI-X: queue_msix_vector, and
   * the read-back check Linux does). Transports with one interrupt omit it.
   */
  bindQueueInterrupt?(index: number): void;
  /** Routes configuration-change interrupts (PCI MSI-X: msix_config). Called once, early. */
  bindConfigInterrupt?(): void;
  /** Notifies (kicks) queue `index`. */
  notify(index: number): void;

  /** Reads a `width`-byte field of the device configuration space. */
  readConfig(offset: number, width: ConfigWidth): number;
  /** Writes a `width`-byte field of the device configuration space. */
  writeConfig(offset: number, width: ConfigWidth, value: number): void;
  /** Reads the configuration generation (§2.5.1). */
  configGeneration(): number;

  /**
   * True if the device signalled an interrupt the driver has not handled: the line is asserted
   * (MMIO, INTx) or an MSI-X message arrived since the last {@link handleInterrupt}.
   */
  interruptPending(): boolean;
  /**
   * Runs the driver's interrupt handler: MMIO reads InterruptStatus and writes it to
   * InterruptACK; INTx reads (and so clears) the ISR; MSI-X takes the messages that arrived.
   */
  handleInterrupt(): InterruptCauses;
}

/** What {@link TransportFixture.overlapWindow} saw. */
export interface WindowOverlap {
  /** Register-level violations the transport counted while the windows overlapped. */
  readonly violations: number;
  /** A read of the device's status register at its new (overlapped) address returned this. */
  readonly statusThroughOverlap: number;
  /** The same read made at the other function's address before the overlap. */
  readonly otherFunctionStatus: number;
  /** Accesses the other function received while the windows overlapped. */
  readonly otherFunctionAccesses: number;
}

/** One transport wired up around a device, as the suite needs it. */
export interface TransportFixture {
  readonly driver: TransportDriver;
  /** The device's controller, to assert state the driver cannot see (queues cleared...). */
  readonly controller: DeviceController;
  /** Register-level misuse the transport counted so far (bad widths, offsets, registers). */
  transportViolations(): number;
  /**
   * Makes accesses the transport's spec forbids (misaligned, oversized, odd-width, unknown
   * registers, writes to read-only ones...) straight through the bus windows, reads and writes.
   * Returns how many register-level violations the transport must count for them. They must
   * not change any device state.
   */
  hostileAccesses(): number;
  /**
   * Transport state the driver's hostile accesses must leave alone, as plain data (MMIO:
   * InterruptStatus and the line; PCI: BAR assignments, command register, MSI-X routes and
   * vectors, ISR).
   */
  transportState(): unknown;
  /**
   * Transports whose windows the guest places (PCI BARs): the driver programs the device's
   * window over another function's (decoding on, as a careless driver would), reads the device's
   * status and writes 0 to it there, then moves the window back. Absent for fixed windows (MMIO).
   */
  overlapWindow?(): WindowOverlap;
  /**
   * Every guest-visible window of the transport as a raw bus device with its size, for random
   * accesses (MMIO: the register window; PCI: conf1, ECAM, and each structure in the BAR).
   */
  windows(): readonly GuestWindow[];
}

/** A range the guest can access, offsets from `device`'s base. */
export interface GuestWindow {
  readonly name: string;
  readonly size: number;
  readonly device: BusDevice;
  /** The registers in it, at their natural widths: where random accesses hit most often. */
  readonly registers: readonly (readonly [offset: number, width: 1 | 2 | 4])[];
}

/** A transport under test: `name` (`mmio`, `pci-msix`, `pci-intx`) and how to set one up. */
export interface TransportCase {
  readonly name: string;
  create(device: VirtioDevice, guest: TestMemory): TransportFixture;
}
