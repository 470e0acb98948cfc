/**
 * A modern virtio-pci function (virtio 1.2 §4.1): a type 0 PCI function whose capabilities
 * point at the virtio structures (common configuration, notifications, ISR status, device
 * configuration) in one memory BAR, with MSI-X in the same BAR and INTx through the ISR when
 * MSI-X is off. Register accesses become calls on core's {@link DeviceController}; the
 * controller's interrupts become ISR bits, INTx levels or MSI-X messages.
 */

import {
  accessValue,
  type BusDevice,
  DeviceController,
  type DeviceControllerOptions,
  DeviceType,
  Feature,
  featureBit,
  type GuestMemory,
  type InterruptSink,
  type QueueArea,
  setAccessValue,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_VENDOR_ID,
  ViolationCounter,
  type VirtioDevice,
} from '@virtkit/core';
import { type PciBarState, PciConfiguration, type PciFunction } from './configuration.js';
import {
  CommonCfg,
  IsrStatus,
  MsixCap,
  PciCapabilityId,
  PciClass,
  PciInterruptPin,
  VirtioPciCap,
  VirtioPciCapType,
} from './constants.js';
import { PciTransportError } from './errors.js';
import type { InterruptLine, MsiSink } from './interrupts.js';
import {
  type BarRegion,
  checkLayout,
  compactLayout,
  FIRECRACKER_LAYOUT,
  type LayoutNeeds,
  type VirtioPciLayout,
} from './layout.js';
import { MsixTable } from './msix.js';

/** Options of a {@link VirtioPciFunction}. */
export interface VirtioPciFunctionOptions {
  /** Guest RAM the device's queues live in. */
  readonly memory: GuestMemory;
  /**
   * MSI-X vectors (default: one per queue plus one for configuration changes, as Firecracker
   * and QEMU give). 0 leaves out the MSI-X capability: INTx only.
   */
  readonly msixVectors?: number;
  /**
   * Where the structures sit in the BAR: `'firecracker'` (default, 512 KiB), `'compact'` (sized
   * to the device, 4 KiB pages) or an explicit layout.
   */
  readonly layout?: 'firecracker' | 'compact' | VirtioPciLayout;
  /** BAR number holding everything (default 0). */
  readonly barIndex?: number;
  /** A 64-bit memory BAR (default) or a 32-bit one. */
  readonly bar64?: boolean;
  /** Mark the BAR prefetchable (default true, as QEMU does for its modern virtio BAR). */
  readonly prefetchable?: boolean;
  /** Bytes between queues' notify addresses: 0 (one shared address) or a power of two >= 2 (default 4). */
  readonly notifyOffMultiplier?: number;
  /** 24-bit class code (default per device type, see {@link virtioPciClassCode}). */
  readonly classCode?: number;
  /** Subsystem vendor ID (default 0x1AF4). */
  readonly subsystemVendorId?: number;
  /** Subsystem ID (default the PCI device ID, 0x1040 + type, as Firecracker and Cloud Hypervisor do). */
  readonly subsystemId?: number;
  /** Interrupt pin: 0 none, 1-4 INTA#-INTD# (default 1). */
  readonly interruptPin?: number;
  /** The INTx line (a {@link PciRoot} connects its swizzled line instead). */
  readonly interrupt?: InterruptLine;
  /** Where MSI-X messages go (a {@link PciRoot} may connect its own). */
  readonly msi?: MsiSink;
  /** Ring positions to restore at activation (see core's DeviceControllerOptions). */
  readonly queuePosition?: DeviceControllerOptions['queuePosition'];
  /** Diagnostic messages, including each counted register misuse (default: dropped). */
  readonly log?: (message: string) => void;
}

/**
 * Where a driver's notification for one queue lands, for a KVM_IOEVENTFD: `address` (absolute,
 * while the BAR decodes), `len = width`, optionally with `datamatch` (the value Linux writes: the
 * queue index). With VIRTIO_F_NOTIFICATION_DATA the value carries more than the index and a
 * datamatch no longer matches.
 */
export interface PciNotifyAddress {
  readonly queue: number;
  /** BAR number and offset inside it. */
  readonly bar: number;
  readonly offset: number;
  /** Guest-physical address, or `undefined` while the BAR is not decoding. */
  readonly address: number | undefined;
  readonly width: 2;
  readonly datamatch: number;
}

/** Features whose registers or capabilities this transport does not implement. */
const UNSUPPORTED_FEATURES: readonly [number, string][] = [
  [Feature.RING_RESET, 'RING_RESET'],
  [Feature.NOTIF_CONFIG_DATA, 'NOTIF_CONFIG_DATA'],
  [Feature.ADMIN_VQ, 'ADMIN_VQ'],
  [Feature.SR_IOV, 'SR_IOV'],
];

const NOTIFICATION_DATA = featureBit(Feature.NOTIFICATION_DATA);

/**
 * Default class code of a virtio device type: what QEMU's virtio-*-pci devices report, except
 * block, which gets Firecracker's and Cloud Hypervisor's "other mass storage" (QEMU says SCSI).
 */
export function virtioPciClassCode(deviceType: number): number {
  switch (deviceType) {
    case DeviceType.NET:
      return PciClass.NETWORK_ETHERNET;
    case DeviceType.BLOCK:
      return PciClass.STORAGE_OTHER;
    case DeviceType.CONSOLE:
      return PciClass.COMMUNICATION_OTHER;
    case DeviceType.SCSI:
      return PciClass.STORAGE_SCSI;
    case DeviceType.GPU:
      return PciClass.DISPLAY_OTHER;
    case DeviceType.INPUT:
      return PciClass.INPUT_OTHER;
    default:
      return PciClass.OTHER;
  }
}

const QUEUE_ADDRESS_FIELDS: ReadonlyMap<number, readonly [QueueArea, 0 | 1]> = new Map([
  [CommonCfg.QUEUE_DESC_LO, ['desc', 0]],
  [CommonCfg.QUEUE_DESC_HI, ['desc', 1]],
  [CommonCfg.QUEUE_DRIVER_LO, ['driver', 0]],
  [CommonCfg.QUEUE_DRIVER_HI, ['driver', 1]],
  [CommonCfg.QUEUE_DEVICE_LO, ['device', 0]],
  [CommonCfg.QUEUE_DEVICE_HI, ['device', 1]],
]);

/** Natural width of each common configuration field (§4.1.4.3: drivers use natural widths). */
const COMMON_FIELD_WIDTH: ReadonlyMap<number, number> = new Map([
  [CommonCfg.DEVICE_FEATURE_SELECT, 4],
  [CommonCfg.DEVICE_FEATURE, 4],
  [CommonCfg.DRIVER_FEATURE_SELECT, 4],
  [CommonCfg.DRIVER_FEATURE, 4],
  [CommonCfg.CONFIG_MSIX_VECTOR, 2],
  [CommonCfg.NUM_QUEUES, 2],
  [CommonCfg.DEVICE_STATUS, 1],
  [CommonCfg.CONFIG_GENERATION, 1],
  [CommonCfg.QUEUE_SELECT, 2],
  [CommonCfg.QUEUE_SIZE, 2],
  [CommonCfg.QUEUE_MSIX_VECTOR, 2],
  [CommonCfg.QUEUE_ENABLE, 2],
  [CommonCfg.QUEUE_NOTIFY_OFF, 2],
  ...[...QUEUE_ADDRESS_FIELDS.keys()].map((offset) => [offset, 4] as const),
]);

/**
 * A virtio device as a PCI function: vendor 0x1AF4, device 0x1040 + type, revision 1.
 *
 * Capabilities (from 0x40, in this order): common config, ISR, notify, device config (if the
 * device has a config space), PCI configuration access (cfg_type 5), MSI-X (unless
 * `msixVectors` is 0). All virtio structures live in one memory BAR laid out as
 * {@link VirtioPciFunctionOptions.layout} says.
 *
 * Guest accesses never throw. What the guest gets wrong at the register level (a width other
 * than the field's natural one, a hole in the BAR, a read-only field written) reads 0 or is
 * ignored and is counted in {@link violations}; protocol misuse core judges (status order, queue
 * setup after DRIVER_OK...) is counted in `controller.violations`.
 *
 * @example
 * ```ts
 * const fn = new VirtioPciFunction(device, { memory });
 * root.addFunction(1, fn); // assigns the BAR, connects INTx and MSI
 * ```
 */
export class VirtioPciFunction implements PciFunction {
  /** Core's side of the device: status, features, queues, configuration space. */
  readonly controller: DeviceController;
  /** The function's configuration space. */
  readonly config: PciConfiguration;
  /** MSI-X state, or `undefined` when the function has no MSI-X capability. */
  readonly msix: MsixTable | undefined;
  /** Register-level misuse by the guest (bad widths, offsets, read-only fields), by code. */
  readonly violations = new ViolationCounter();
  /** Where the structures sit in the BAR. */
  readonly layout: VirtioPciLayout;
  /** The BAR number holding every structure. */
  readonly barIndex: number;
  /** Bytes between queues' notify addresses. */
  readonly notifyOffMultiplier: number;
  /** Offsets of the capabilities in configuration space, by name. */
  readonly capabilityOffsets: Readonly<{
    common: number;
    isr: number;
    notify: number;
    device: number | undefined;
    pciCfg: number;
    msix: number | undefined;
  }>;

  readonly #log: (message: string) => void;
  readonly #queueVectors: Uint16Array;
  readonly #notifyLength: number;
  #line: InterruptLine | undefined;
  #asserted = false;
  #isr = 0;
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #queueSelect = 0;
  #configVector: number = VIRTIO_MSI_NO_VECTOR;

  constructor(device: VirtioDevice, options: VirtioPciFunctionOptions) {
    for (const [bit, name] of UNSUPPORTED_FEATURES) {
      if (BigInt.asUintN(64, device.features) & featureBit(bit)) {
        throw new PciTransportError(
          'PCI_UNSUPPORTED_FEATURE',
          `device type ${device.deviceType} offers ${name}, which this virtio-pci transport does not implement`,
        );
      }
    }
    this.#log = options.log ?? (() => {});
    const sink: InterruptSink = {
      signalUsed: (queueIndex) => this.#signalUsed(queueIndex),
      signalConfig: () => this.#signalConfig(),
    };
    this.controller = new DeviceController(device, {
      memory: options.memory,
      interrupt: sink,
      // Modern virtio-pci is the 1.0+ interface only: FEATURES_OK needs VERSION_1 (§4.1.2).
      requireVersion1: true,
      log: this.#log,
      ...(options.queuePosition ? { queuePosition: options.queuePosition } : {}),
    });
    const numQueues = this.controller.numQueues;
    if (device.deviceType > 0xffff - VIRTIO_PCI_MODERN_DEVICE_ID_BASE) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `device type ${device.deviceType} has no modern virtio-pci device ID`,
      );
    }

    const multiplier = options.notifyOffMultiplier ?? 4;
    if (
      !Number.isInteger(multiplier) ||
      (multiplier !== 0 && (multiplier < 2 || !isPowerOfTwo(multiplier)))
    ) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `notify_off_multiplier ${multiplier} is not 0 or a power of two of at least 2`,
      );
    }
    this.notifyOffMultiplier = multiplier;
    // Room for a 32-bit write at the last queue's address (NOTIFICATION_DATA writes 32 bits).
    this.#notifyLength = multiplier === 0 ? 4 : Math.max(0, numQueues - 1) * multiplier + 4;

    const vectors = options.msixVectors ?? numQueues + 1;
    if (!Number.isInteger(vectors) || vectors < 0 || vectors > MsixCap.MAX_VECTORS) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `msixVectors ${vectors} is not from 0 to ${MsixCap.MAX_VECTORS}`,
      );
    }
    const configBytes = device.config?.size ?? 0;
    const needs: LayoutNeeds = {
      commonBytes: CommonCfg.SIZE,
      configBytes,
      notifyBytes: this.#notifyLength,
      msixVectors: vectors,
    };
    const layout =
      options.layout === 'compact'
        ? compactLayout(needs)
        : options.layout === undefined || options.layout === 'firecracker'
          ? FIRECRACKER_LAYOUT
          : options.layout;
    checkLayout(layout, needs);
    this.layout = layout;

    const barIndex = options.barIndex ?? 0;
    const bar64 = options.bar64 ?? true;
    if (!Number.isInteger(barIndex) || barIndex < 0 || barIndex > (bar64 ? 4 : 5)) {
      throw new PciTransportError('PCI_INVALID_OPTION', `BAR number ${barIndex} is not usable`);
    }
    this.barIndex = barIndex;
    const pciDeviceId = VIRTIO_PCI_MODERN_DEVICE_ID_BASE + device.deviceType;
    const bars = [];
    bars[barIndex] = {
      kind: bar64 ? ('mem64' as const) : ('mem32' as const),
      size: layout.barSize,
      prefetchable: options.prefetchable ?? true,
    };
    this.config = new PciConfiguration({
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: pciDeviceId,
      // Revision 1 marks a modern (non-transitional) device (§4.1.2.1).
      revisionId: 1,
      classCode: options.classCode ?? virtioPciClassCode(device.deviceType),
      subsystemVendorId: options.subsystemVendorId ?? VIRTIO_PCI_VENDOR_ID,
      subsystemId: options.subsystemId ?? pciDeviceId,
      interruptPin: options.interruptPin ?? PciInterruptPin.INTA,
      bars,
    });
    this.config.onReadOnlyWrite((message) => this.#invalid('CONFIG_WRITE_READ_ONLY', message));

    const common = this.#addVirtioCap(VirtioPciCapType.COMMON_CFG, layout.common, CommonCfg.SIZE);
    const isr = this.#addVirtioCap(VirtioPciCapType.ISR_CFG, layout.isr, 1);
    const notify = this.#addVirtioCap(
      VirtioPciCapType.NOTIFY_CFG,
      layout.notify,
      this.#notifyLength,
      VirtioPciCap.NOTIFY_SIZE,
    );
    this.config.setU32(notify + VirtioPciCap.NOTIFY_OFF_MULTIPLIER, multiplier);
    this.config.setStrictReadOnly(notify + VirtioPciCap.NOTIFY_OFF_MULTIPLIER, 4);
    const deviceCap =
      configBytes > 0
        ? this.#addVirtioCap(VirtioPciCapType.DEVICE_CFG, layout.device, configBytes)
        : undefined;
    const pciCfg = this.#addPciCfgCap();

    this.#queueVectors = new Uint16Array(numQueues).fill(VIRTIO_MSI_NO_VECTOR);
    let msixOffset: number | undefined;
    if (vectors > 0) {
      this.msix = new MsixTable(vectors, (message) =>
        this.#invalid('MSIX_ACCESS_INVALID', message),
      );
      msixOffset = this.#addMsixCap(vectors);
      if (options.msi) this.msix.connect(options.msi);
      // Enabling MSI-X takes INTx away (PCI 3.0 §6.8.3.3); disabling gives it back.
      this.msix.events.on('change', (vector) => {
        if (vector === undefined) this.#updateIntx(false);
      });
    } else {
      this.msix = undefined;
    }
    this.capabilityOffsets = {
      common,
      isr,
      notify,
      device: deviceCap,
      pciCfg,
      msix: msixOffset,
    };
    this.config.seal();
    this.config.events.on('command', () => this.#updateIntx(false));
    this.#line = options.interrupt;
    // A completion or config change that raced with a reset must not survive it.
    this.controller.events.on('reset', () => this.#afterReset());
  }

  // ---- PciFunction -------------------------------------------------------------------------

  /** Connects the INTx output (replacing any line given at construction). */
  connectInterrupt(line: InterruptLine | undefined): void {
    if (this.#asserted) this.#line?.setLevel(false);
    this.#line = line;
    if (this.#asserted) this.#line?.setLevel(true);
  }

  /** Connects the MSI-X output. */
  connectMsi(sink: MsiSink | undefined): void {
    this.msix?.connect(sink);
  }

  /** Guest read at `offset` of BAR `index`. Never throws. */
  readBar(index: number, offset: number, data: Uint8Array): void {
    if (index !== this.barIndex) {
      data.fill(0);
      this.#invalid('REGISTER_ACCESS_INVALID', `guest read BAR ${index}, which is not implemented`);
      return;
    }
    this.#barRead(offset, data);
  }

  /** Guest write at `offset` of BAR `index`. Never throws. */
  writeBar(index: number, offset: number, data: Uint8Array): void {
    if (index !== this.barIndex) {
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest wrote BAR ${index}, which is not implemented`,
      );
      return;
    }
    this.#barWrite(offset, data);
  }

  // ---- VMM side ----------------------------------------------------------------------------

  /** The BAR holding the virtio structures, as programmed now. */
  get bar(): PciBarState {
    return this.config.bar(this.barIndex)!;
  }

  /** The BAR as a bus device (offsets relative to its base), for VMMs that map BARs themselves. */
  barDevice(): BusDevice {
    return {
      read: (offset, data) => this.readBar(this.barIndex, offset, data),
      write: (offset, data) => this.writeBar(this.barIndex, offset, data),
    };
  }

  /** Current ISR status (bit 0 queue, bit 1 configuration change), without clearing it. */
  get isrStatus(): number {
    return this.#isr;
  }

  /** True while the function asserts INTx. */
  get interruptAsserted(): boolean {
    return this.#asserted;
  }

  /** MSI-X vector of configuration changes (NO_VECTOR 0xFFFF if none). */
  get configVector(): number {
    return this.#configVector;
  }

  /** MSI-X vector of queue `index` (NO_VECTOR 0xFFFF if none or no such queue). */
  queueVector(index: number): number {
    return this.#queueVectors[index] ?? VIRTIO_MSI_NO_VECTOR;
  }

  /**
   * Where the driver's notifications for queue `index` arrive. Throws for a queue the device
   * does not have (a VMM mistake, not a guest one).
   */
  notifyAddress(index: number): PciNotifyAddress {
    if (!this.controller.queue(index)) {
      throw new PciTransportError(
        'PCI_NO_SUCH_QUEUE',
        `device has ${this.controller.numQueues} queues; there is no queue ${index} to notify`,
      );
    }
    const offset = this.layout.notify.offset + index * this.notifyOffMultiplier;
    const bar = this.bar;
    return {
      queue: index,
      bar: this.barIndex,
      offset,
      address: bar.decoding && bar.address !== undefined ? bar.address + offset : undefined,
      width: 2,
      datamatch: index,
    };
  }

  /** Notify addresses of every queue, in index order. */
  notifyAddresses(): PciNotifyAddress[] {
    return Array.from({ length: this.controller.numQueues }, (_, index) =>
      this.notifyAddress(index),
    );
  }

  /** A notification that reached the VMM some other way (an ioeventfd fired for queue `index`). */
  notifyQueue(index: number): void {
    this.controller.notify(index);
  }

  /** Resolves when the effects of the status writes so far have settled. */
  settled(): Promise<void> {
    return this.controller.settled();
  }

  /**
   * Function-level reset (system reset, FLR): the device is reset as if the driver wrote 0 to
   * device_status, configuration space returns to power-on values (BARs 0, decoding off), MSI-X
   * is disabled with every vector masked.
   */
  reset(): Promise<void> {
    this.#writeStatus(0);
    this.msix?.reset();
    this.config.reset();
    return this.settled();
  }

  // ---- interrupts --------------------------------------------------------------------------

  #signalUsed(queueIndex: number): void {
    if (this.msix?.enabled) {
      // §4.1.5.1.2.1: with MSI-X on, a queue event goes to its vector only; none if NO_VECTOR.
      const vector = this.queueVector(queueIndex);
      if (vector !== VIRTIO_MSI_NO_VECTOR) this.msix.signal(vector);
      return;
    }
    this.#isr |= IsrStatus.QUEUE;
    this.#updateIntx(true);
  }

  #signalConfig(): void {
    // §4.1.4.5.2: the configuration bit is set in ISR whether or not MSI-X is on.
    this.#isr |= IsrStatus.CONFIG;
    if (this.msix?.enabled) {
      if (this.#configVector !== VIRTIO_MSI_NO_VECTOR) this.msix.signal(this.#configVector);
      return;
    }
    this.#updateIntx(true);
  }

  /**
   * Recomputes INTx: pending while ISR is non-zero and MSI-X is off (§4.1.4.5.2, PCI status bit
   * 3 follows it); asserted when pending unless the command register disables INTx.
   */
  #updateIntx(raise: boolean): void {
    const pending = this.#isr !== 0 && !this.msix?.enabled;
    this.config.setInterruptStatus(pending);
    const assert = pending && !this.config.intxDisabled && this.config.interruptPin !== 0;
    if (assert) {
      if (raise || !this.#asserted) {
        this.#asserted = true;
        this.#line?.setLevel(true);
      }
    } else if (this.#asserted) {
      this.#asserted = false;
      this.#line?.setLevel(false);
    }
  }

  #readIsr(): number {
    // §4.1.4.5: reading ISR status clears it and de-asserts INTx.
    const value = this.#isr;
    this.#isr = 0;
    this.#updateIntx(false);
    return value;
  }

  #afterReset(): void {
    this.#isr = 0;
    this.#configVector = VIRTIO_MSI_NO_VECTOR;
    this.#queueVectors.fill(VIRTIO_MSI_NO_VECTOR);
    this.#updateIntx(false);
  }

  // ---- capabilities ------------------------------------------------------------------------

  #addVirtioCap(
    type: number,
    region: BarRegion,
    length: number,
    capLength: number = VirtioPciCap.SIZE,
  ): number {
    const offset = this.config.addCapability(PciCapabilityId.VENDOR_SPECIFIC, capLength);
    const c = this.config;
    c.setU8(offset + VirtioPciCap.LEN, capLength);
    c.setU8(offset + VirtioPciCap.CFG_TYPE, type);
    c.setU8(offset + VirtioPciCap.BAR, this.barIndex);
    c.setU8(offset + VirtioPciCap.ID, 0);
    c.setU32(offset + VirtioPciCap.OFFSET, region.offset);
    c.setU32(offset + VirtioPciCap.LENGTH, length);
    c.setStrictReadOnly(offset + VirtioPciCap.LEN, VirtioPciCap.SIZE - VirtioPciCap.LEN);
    return offset;
  }

  /**
   * The PCI configuration access capability (§4.1.4.9): the driver writes bar, offset and
   * length, then reading or writing pci_cfg_data performs that access on the BAR, whether or not
   * the BAR decodes.
   */
  #addPciCfgCap(): number {
    const offset = this.config.addCapability(
      PciCapabilityId.VENDOR_SPECIFIC,
      VirtioPciCap.PCI_CFG_SIZE,
    );
    const c = this.config;
    c.setU8(offset + VirtioPciCap.LEN, VirtioPciCap.PCI_CFG_SIZE);
    c.setU8(offset + VirtioPciCap.CFG_TYPE, VirtioPciCapType.PCI_CFG);
    c.setStrictReadOnly(offset + VirtioPciCap.LEN, 2);
    c.setWritable(offset + VirtioPciCap.BAR, 1, 0xff);
    c.setWritable(offset + VirtioPciCap.OFFSET, 4, 0xffff_ffff);
    c.setWritable(offset + VirtioPciCap.LENGTH, 4, 0xffff_ffff);
    c.setWritable(offset + VirtioPciCap.PCI_CFG_DATA, 4, 0xffff_ffff);
    const data = offset + VirtioPciCap.PCI_CFG_DATA;
    c.watchReads(data, 4, () => this.#pciCfgAccess(offset, 'read'));
    c.watchWrites(data, 4, () => this.#pciCfgAccess(offset, 'write'));
    return offset;
  }

  #pciCfgAccess(cap: number, kind: 'read' | 'write'): void {
    const c = this.config;
    const bar = c.getU8(cap + VirtioPciCap.BAR);
    const offset = c.getU32(cap + VirtioPciCap.OFFSET);
    const length = c.getU32(cap + VirtioPciCap.LENGTH);
    const data = cap + VirtioPciCap.PCI_CFG_DATA;
    // Length 0 (as after reset) means no access was set up: a dump of configuration space
    // (lspci -xxx, sysfs) touches pci_cfg_data and must not count as a driver mistake.
    if (length === 0) return;
    // §4.1.4.9.1: length 1, 2 or 4, offset a multiple of length, inside the BAR.
    if (
      bar !== this.barIndex ||
      (length !== 1 && length !== 2 && length !== 4) ||
      offset % length !== 0 ||
      offset + length > this.layout.barSize
    ) {
      this.#invalid(
        'PCI_CFG_ACCESS_INVALID',
        `guest used the PCI configuration access capability with bar ${bar}, offset 0x${offset.toString(16)}, length ${length}`,
      );
      return;
    }
    const bytes = new Uint8Array(length);
    if (kind === 'read') {
      this.#barRead(offset, bytes);
      for (let i = 0; i < length; i++) c.setU8(data + i, bytes[i]!);
    } else {
      for (let i = 0; i < length; i++) bytes[i] = c.getU8(data + i);
      this.#barWrite(offset, bytes);
    }
  }

  #addMsixCap(vectors: number): number {
    const offset = this.config.addCapability(PciCapabilityId.MSIX, MsixCap.SIZE);
    const c = this.config;
    c.setU16(offset + MsixCap.CONTROL, vectors - 1);
    c.setWritable(offset + MsixCap.CONTROL, 2, MsixCap.CONTROL_ENABLE | MsixCap.CONTROL_MASK_ALL);
    c.setU32(offset + MsixCap.TABLE, this.layout.msixTable.offset | this.barIndex);
    c.setU32(offset + MsixCap.PBA, this.layout.msixPba.offset | this.barIndex);
    c.setStrictReadOnly(offset + MsixCap.TABLE, 8);
    c.watchWrites(offset + MsixCap.CONTROL, 2, () => {
      const control = c.getU16(offset + MsixCap.CONTROL);
      this.msix!.setControl(
        (control & MsixCap.CONTROL_ENABLE) !== 0,
        (control & MsixCap.CONTROL_MASK_ALL) !== 0,
      );
    });
    return offset;
  }

  // ---- BAR accesses ------------------------------------------------------------------------

  #barRead(offset: number, data: Uint8Array): void {
    const width = data.length;
    if (!this.#validBarAccess(offset, width)) {
      data.fill(0);
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest read ${width} bytes at BAR offset 0x${offset.toString(16)}`,
      );
      return;
    }
    const layout = this.layout;
    if (within(layout.common, offset, width)) {
      const value = this.#readCommon(offset - layout.common.offset, width);
      if (value === undefined) data.fill(0);
      else if (width === 8) {
        setAccessValue(data.subarray(0, 4), Number(value & 0xffff_ffffn));
        setAccessValue(data.subarray(4), Number(value >> 32n));
      } else setAccessValue(data, Number(value));
    } else if (within(layout.isr, offset, width)) {
      if (offset === layout.isr.offset && width === 1) {
        data[0] = this.#readIsr();
      } else {
        data.fill(0);
        this.#invalid(
          'REGISTER_ACCESS_INVALID',
          `guest read ${width} bytes at ISR offset ${offset - layout.isr.offset}; ISR status is one byte`,
        );
      }
    } else if (within(layout.device, offset, width)) {
      if (this.#configWidth(offset, width, 'read')) {
        this.controller.readConfig(offset - layout.device.offset, data);
      } else data.fill(0);
    } else if (within(layout.notify, offset, width)) {
      // Notify addresses are write-only; reading one has no effect. Past them is a hole.
      data.fill(0);
      if (offset - layout.notify.offset + width > this.#notifyLength) {
        this.#invalid(
          'REGISTER_ACCESS_INVALID',
          `guest read ${width} bytes at notify offset ${offset - layout.notify.offset}, past the notify structure`,
        );
      }
    } else if (this.msix && within(layout.msixTable, offset, width)) {
      this.msix.readTable(offset - layout.msixTable.offset, data);
    } else if (this.msix && within(layout.msixPba, offset, width)) {
      this.msix.readPba(offset - layout.msixPba.offset, data);
    } else {
      data.fill(0);
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest read ${width} bytes at BAR offset 0x${offset.toString(16)}, where nothing is mapped`,
      );
    }
  }

  #barWrite(offset: number, data: Uint8Array): void {
    const width = data.length;
    if (!this.#validBarAccess(offset, width)) {
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest wrote ${width} bytes at BAR offset 0x${offset.toString(16)}`,
      );
      return;
    }
    const layout = this.layout;
    if (within(layout.common, offset, width)) {
      this.#writeCommon(offset - layout.common.offset, data);
    } else if (within(layout.isr, offset, width)) {
      this.#invalid('REGISTER_ACCESS_INVALID', 'guest wrote ISR status, which is read-only');
    } else if (within(layout.device, offset, width)) {
      if (this.#configWidth(offset, width, 'write')) {
        this.controller.writeConfig(offset - layout.device.offset, data);
      }
    } else if (within(layout.notify, offset, width)) {
      this.#notify(offset - layout.notify.offset, data);
    } else if (this.msix && within(layout.msixTable, offset, width)) {
      this.msix.writeTable(offset - layout.msixTable.offset, data);
    } else if (this.msix && within(layout.msixPba, offset, width)) {
      this.msix.writePba(offset - layout.msixPba.offset, data);
    } else {
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest wrote ${width} bytes at BAR offset 0x${offset.toString(16)}, where nothing is mapped`,
      );
    }
  }

  /**
   * Device configuration takes 8-, 16- and 32-bit accesses aligned to their width (§4.1.3.1:
   * 16-bit fields take aligned 16-bit accesses, 32- and 64-bit fields aligned 32-bit ones), so
   * an 8-byte or misaligned access matches no field.
   */
  #configWidth(offset: number, width: number, kind: 'read' | 'write'): boolean {
    const relative = offset - this.layout.device.offset;
    if (width !== 8 && relative % width === 0) return true;
    this.#invalid(
      'REGISTER_ACCESS_INVALID',
      `guest ${kind === 'read' ? 'read' : 'wrote'} ${width} bytes at device configuration offset ${relative}; it takes aligned 8-, 16- and 32-bit accesses`,
    );
    return false;
  }

  #validBarAccess(offset: number, width: number): boolean {
    return (
      Number.isInteger(offset) &&
      offset >= 0 &&
      (width === 1 || width === 2 || width === 4 || width === 8) &&
      offset + width <= this.layout.barSize
    );
  }

  #notify(relative: number, data: Uint8Array): void {
    const width = data.length;
    if ((width !== 2 && width !== 4) || relative + width > this.#notifyLength) {
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest wrote ${width} bytes at notify offset ${relative}; notifications are 16-bit (32-bit with NOTIFICATION_DATA) writes`,
      );
      return;
    }
    const multiplier = this.notifyOffMultiplier;
    if (multiplier === 0) {
      // One shared address: the value says which queue (low 16 bits with NOTIFICATION_DATA).
      const value = accessValue(data);
      const negotiated = this.controller.negotiatedFeatures & NOTIFICATION_DATA;
      this.controller.notify(negotiated ? value & 0xffff : value);
      return;
    }
    if (relative % multiplier !== 0) {
      this.#invalid(
        'REGISTER_ACCESS_INVALID',
        `guest wrote notify offset ${relative}, between queue addresses (multiplier ${multiplier})`,
      );
      return;
    }
    // The address says which queue, as an ioeventfd without datamatch would see it.
    this.controller.notify(relative / multiplier);
  }

  #readCommon(offset: number, width: number): bigint | undefined {
    const c = this.controller;
    if (width === 8) {
      const area = QUEUE_ADDRESS_FIELDS.get(offset);
      const queue = c.queue(this.#queueSelect);
      if (area?.[1] !== 0 || offset % 8 !== 0) return this.#badCommon('read', offset, width);
      if (!queue) return 0n;
      const [low, high] = queue[area[0]];
      return (BigInt(high) << 32n) | BigInt(low);
    }
    if (COMMON_FIELD_WIDTH.get(offset) !== width) return this.#badCommon('read', offset, width);
    const queue = c.queue(this.#queueSelect);
    switch (offset) {
      case CommonCfg.DEVICE_FEATURE_SELECT:
        return BigInt(this.#deviceFeatureSelect);
      case CommonCfg.DEVICE_FEATURE:
        return BigInt(c.deviceFeaturesPage(this.#deviceFeatureSelect));
      case CommonCfg.DRIVER_FEATURE_SELECT:
        return BigInt(this.#driverFeatureSelect);
      case CommonCfg.DRIVER_FEATURE:
        return BigInt(c.driverFeaturesPage(this.#driverFeatureSelect));
      case CommonCfg.CONFIG_MSIX_VECTOR:
        return BigInt(this.#configVector);
      case CommonCfg.NUM_QUEUES:
        return BigInt(c.numQueues);
      case CommonCfg.DEVICE_STATUS:
        return BigInt(c.status);
      case CommonCfg.CONFIG_GENERATION:
        return BigInt(c.configGeneration & 0xff);
      case CommonCfg.QUEUE_SELECT:
        return BigInt(this.#queueSelect);
      case CommonCfg.QUEUE_SIZE:
        // §4.1.4.3.2: 0 for a queue that does not exist.
        return BigInt(queue?.size ?? 0);
      case CommonCfg.QUEUE_MSIX_VECTOR:
        return BigInt(this.queueVector(this.#queueSelect));
      case CommonCfg.QUEUE_ENABLE:
        return queue?.ready ? 1n : 0n;
      case CommonCfg.QUEUE_NOTIFY_OFF:
        // Queue i notifies at notify base + i * multiplier.
        return queue ? BigInt(this.#queueSelect) : 0n;
      default: {
        const area = QUEUE_ADDRESS_FIELDS.get(offset)!;
        return BigInt(queue ? queue[area[0]][area[1]] : 0);
      }
    }
  }

  #writeCommon(offset: number, data: Uint8Array): void {
    const width = data.length;
    const c = this.controller;
    if (width === 8) {
      const area = QUEUE_ADDRESS_FIELDS.get(offset);
      if (area?.[1] !== 0 || offset % 8 !== 0) {
        this.#badCommon('write', offset, width);
        return;
      }
      c.writeQueueAddress(this.#queueSelect, area[0], 0, accessValue(data.subarray(0, 4)));
      c.writeQueueAddress(this.#queueSelect, area[0], 1, accessValue(data.subarray(4)));
      return;
    }
    if (COMMON_FIELD_WIDTH.get(offset) !== width) {
      this.#badCommon('write', offset, width);
      return;
    }
    const value = accessValue(data);
    switch (offset) {
      case CommonCfg.DEVICE_FEATURE_SELECT:
        this.#deviceFeatureSelect = value;
        return;
      case CommonCfg.DRIVER_FEATURE_SELECT:
        this.#driverFeatureSelect = value;
        return;
      case CommonCfg.DRIVER_FEATURE:
        c.writeDriverFeaturesPage(this.#driverFeatureSelect, value);
        return;
      case CommonCfg.CONFIG_MSIX_VECTOR:
        this.#configVector = this.#mapVector(value);
        return;
      case CommonCfg.DEVICE_STATUS:
        this.#writeStatus(value);
        return;
      case CommonCfg.QUEUE_SELECT:
        // Any value may be selected; a queue that does not exist reads size 0 and the
        // controller refuses (and counts) writes that address it.
        this.#queueSelect = value;
        return;
      case CommonCfg.QUEUE_SIZE:
        c.writeQueueSize(this.#queueSelect, value);
        return;
      case CommonCfg.QUEUE_MSIX_VECTOR:
        if (this.#queueSelect >= this.#queueVectors.length) {
          this.#invalid(
            'QUEUE_INDEX_INVALID',
            `guest set the MSI-X vector of queue ${this.#queueSelect}, which does not exist`,
          );
          return;
        }
        this.#queueVectors[this.#queueSelect] = this.#mapVector(value);
        return;
      case CommonCfg.QUEUE_ENABLE:
        if (value > 1) {
          this.#invalid(
            'REGISTER_ACCESS_INVALID',
            `guest wrote ${value} to queue_enable, which takes 1`,
          );
          return;
        }
        c.writeQueueReady(this.#queueSelect, value === 1);
        return;
      case CommonCfg.DEVICE_FEATURE:
      case CommonCfg.NUM_QUEUES:
      case CommonCfg.CONFIG_GENERATION:
      case CommonCfg.QUEUE_NOTIFY_OFF:
        this.#invalid(
          'REGISTER_ACCESS_INVALID',
          `guest wrote read-only common configuration field 0x${offset.toString(16)}`,
        );
        return;
      default: {
        const area = QUEUE_ADDRESS_FIELDS.get(offset)!;
        c.writeQueueAddress(this.#queueSelect, area[0], area[1], value);
      }
    }
  }

  /**
   * §4.1.5.1.2: a vector the function cannot map (beyond the table, or no MSI-X at all) reads
   * back as NO_VECTOR, which is how Linux learns the mapping failed.
   */
  #mapVector(value: number): number {
    return this.msix && value < this.msix.size ? value : VIRTIO_MSI_NO_VECTOR;
  }

  #badCommon(kind: 'read' | 'write', offset: number, width: number): undefined {
    this.#invalid(
      'REGISTER_ACCESS_INVALID',
      `guest ${kind === 'read' ? 'read' : 'wrote'} ${width} bytes at common configuration offset 0x${offset.toString(16)}; fields take their natural width`,
    );
    return undefined;
  }

  #writeStatus(value: number): void {
    if (value === 0) {
      this.#deviceFeatureSelect = 0;
      this.#driverFeatureSelect = 0;
      this.#queueSelect = 0;
    }
    this.controller.writeStatus(value).catch((error: unknown) => {
      this.#log(`status write 0x${value.toString(16)} failed: ${String(error)}`);
    });
  }

  #invalid(code: string, message: string): void {
    this.violations.record({ code, message, needsReset: false });
    this.#log(message);
  }
}

function within(region: BarRegion, offset: number, width: number): boolean {
  return offset >= region.offset && offset + width <= region.offset + region.size;
}

function isPowerOfTwo(value: number): boolean {
  return value > 0 && (value & (value - 1)) === 0;
}
