/**
 * A modern virtio-pci register driver, written from Linux's drivers/pci/probe.c (enumeration,
 * BAR sizing), drivers/pci/pci.c (capability walk), drivers/virtio/virtio_pci_modern_dev.c and
 * virtio_pci_modern.c (capabilities, common configuration, notify), and virtio_pci_common.c
 * (INTx and MSI-X interrupts). It has its own offset tables, not the transport's, so a wrong
 * offset on either side shows. It reaches the function only the way a CPU would: configuration
 * cycles through config mechanism #1 (ports 0xCF8/0xCFC) or ECAM, and memory accesses that the
 * PCI root routes to whichever BAR decodes them.
 */

import { type BusDevice, type VirtioDevice, VirtkitError } from '@virtkit/core';
import type { TestMemory } from '@virtkit/core/testing';
import {
  PciConfiguration,
  type PciFunction,
  type PciInterruptMap,
  PciRoot,
  VirtioPciFunction,
} from '@virtkit/transport-pci';
import type {
  ConfigWidth,
  DeviceIdentity,
  GuestWindow,
  InterruptCauses,
  QueueAddresses,
  TransportCase,
  TransportDriver,
  TransportFixture,
  WindowOverlap,
} from './driver.js';
import { CONFIG_FIELDS, RecordingLine } from './mmio-driver.js';

/** Linux include/uapi/linux/pci_regs.h. */
const PCI = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  HEADER_TYPE: 0x0e,
  BASE_ADDRESS_0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  COMMAND_MEMORY: 0x2,
  COMMAND_MASTER: 0x4,
  COMMAND_INTX_DISABLE: 0x400,
  STATUS_CAP_LIST: 0x10,
  CAP_ID_VNDR: 0x09,
  CAP_ID_MSIX: 0x11,
  MSIX_FLAGS: 2,
  MSIX_TABLE: 4,
  MSIX_PBA: 8,
  MSIX_FLAGS_QSIZE: 0x07ff,
  MSIX_FLAGS_MASKALL: 0x4000,
  MSIX_FLAGS_ENABLE: 0x8000,
  MSIX_ENTRY_SIZE: 16,
  MSIX_ENTRY_VECTOR_CTRL: 12,
  /** `__pci_find_next_cap_ttl`'s bound on list length. */
  FIND_CAP_TTL: 48,
} as const;

/** Linux include/uapi/linux/virtio_pci.h. */
const VIRTIO_PCI = {
  CAP_COMMON_CFG: 1,
  CAP_NOTIFY_CFG: 2,
  CAP_ISR_CFG: 3,
  CAP_DEVICE_CFG: 4,
  CAP_CFG_TYPE: 3,
  CAP_BAR: 4,
  CAP_OFFSET: 8,
  CAP_LENGTH: 12,
  NOTIFY_CAP_MULT: 16,
  COMMON_DFSELECT: 0,
  COMMON_DF: 4,
  COMMON_GFSELECT: 8,
  COMMON_GF: 12,
  COMMON_MSIX: 16,
  COMMON_NUMQ: 18,
  COMMON_STATUS: 20,
  COMMON_CFGGENERATION: 21,
  COMMON_Q_SELECT: 22,
  COMMON_Q_SIZE: 24,
  COMMON_Q_MSIX: 26,
  COMMON_Q_ENABLE: 28,
  COMMON_Q_NOFF: 30,
  COMMON_Q_DESCLO: 32,
  COMMON_Q_AVAILLO: 40,
  COMMON_Q_USEDLO: 48,
  /** sizeof(struct virtio_pci_common_cfg). */
  COMMON_CFG_SIZE: 56,
  ISR_CONFIG: 0x2,
  ISR_QUEUE: 0x1,
  MSI_NO_VECTOR: 0xffff,
} as const;

/** struct virtio_pci_common_cfg's fields at their widths, for random accesses. */
const COMMON_FIELDS: readonly (readonly [number, 1 | 2 | 4])[] = [
  [VIRTIO_PCI.COMMON_DFSELECT, 4],
  [VIRTIO_PCI.COMMON_DF, 4],
  [VIRTIO_PCI.COMMON_GFSELECT, 4],
  [VIRTIO_PCI.COMMON_GF, 4],
  [VIRTIO_PCI.COMMON_MSIX, 2],
  [VIRTIO_PCI.COMMON_NUMQ, 2],
  [VIRTIO_PCI.COMMON_STATUS, 1],
  [VIRTIO_PCI.COMMON_CFGGENERATION, 1],
  [VIRTIO_PCI.COMMON_Q_SELECT, 2],
  [VIRTIO_PCI.COMMON_Q_SIZE, 2],
  [VIRTIO_PCI.COMMON_Q_MSIX, 2],
  [VIRTIO_PCI.COMMON_Q_ENABLE, 2],
  [VIRTIO_PCI.COMMON_Q_NOFF, 2],
  ...[0, 4, 8, 12, 16, 20].map((i) => [VIRTIO_PCI.COMMON_Q_DESCLO + i, 4] as const),
  // The state machine's registers again, so random sequences get somewhere with them.
  [VIRTIO_PCI.COMMON_STATUS, 1],
  [VIRTIO_PCI.COMMON_STATUS, 1],
  [VIRTIO_PCI.COMMON_Q_ENABLE, 2],
  [VIRTIO_PCI.COMMON_Q_SELECT, 2],
];

/** How the driver makes configuration cycles. */
export interface ConfigAccess {
  readonly name: 'conf1' | 'ecam';
  read(bus: number, devfn: number, reg: number, width: ConfigWidth): number;
  write(bus: number, devfn: number, reg: number, width: ConfigWidth, value: number): void;
}

/** A CPU's physical memory accesses (the root routes them to BARs). */
export interface MemoryAccess {
  read(address: number, data: Uint8Array): void;
  write(address: number, data: Uint8Array): void;
}

function le(width: number, value: number): Uint8Array {
  const data = new Uint8Array(width);
  let rest = value;
  for (let i = 0; i < width; i++) {
    data[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  return data;
}

function fromLe(data: Uint8Array): number {
  let value = 0;
  for (let i = data.length - 1; i >= 0; i--) value = value * 256 + data[i]!;
  return value;
}

/**
 * Linux's `pci_conf1_read` / `pci_conf1_write` (arch/x86/pci/direct.c) over an 8-port bus
 * device mapped at 0xCF8.
 */
export function conf1Access(ports: BusDevice): ConfigAccess {
  const address = (bus: number, devfn: number, reg: number) =>
    (0x8000_0000 | (bus << 16) | (devfn << 8) | (reg & ~3)) >>> 0;
  return {
    name: 'conf1',
    read(bus, devfn, reg, width) {
      ports.write(0, le(4, address(bus, devfn, reg)));
      const data = new Uint8Array(width);
      ports.read(4 + (reg & (width === 2 ? 2 : width === 1 ? 3 : 0)), data);
      return fromLe(data);
    },
    write(bus, devfn, reg, width, value) {
      ports.write(0, le(4, address(bus, devfn, reg)));
      ports.write(4 + (reg & (width === 2 ? 2 : width === 1 ? 3 : 0)), le(width, value));
    },
  };
}

/** Linux's `pci_generic_config_read` over an ECAM window (`pci_ecam_map_bus`). */
export function ecamAccess(window: BusDevice): ConfigAccess {
  const offset = (bus: number, devfn: number, reg: number) => (bus << 20) | (devfn << 12) | reg;
  return {
    name: 'ecam',
    read(bus, devfn, reg, width) {
      const data = new Uint8Array(width);
      window.read(offset(bus, devfn, reg), data);
      return fromLe(data);
    },
    write(bus, devfn, reg, width, value) {
      window.write(offset(bus, devfn, reg), le(width, value));
    },
  };
}

/** A BAR as `__pci_read_base` found it. */
interface SizedBar {
  readonly index: number;
  readonly size: number;
  readonly is64: boolean;
  address: number;
}

/** A mapped virtio structure: where it is in physical memory and how long. */
interface Mapped {
  readonly address: number;
  readonly length: number;
}

/** Options of a {@link PciDriver}. */
export interface PciDriverOptions {
  /** Config mechanism #1 ports (0xCF8-0xCFF). */
  readonly conf1: BusDevice;
  /** ECAM window. */
  readonly ecam: BusDevice;
  /** Which of the two the driver uses after probing (it probes with both). */
  readonly configMechanism: 'conf1' | 'ecam';
  readonly memory: MemoryAccess;
  /** Interrupt mode: MSI-X (Linux's first choice) or INTx (its fallback). */
  readonly interrupts: 'msix' | 'intx';
  /** Where the driver moves the virtio BAR (Linux reassigning resources). */
  readonly barAddress: number;
  /** The platform's INTx inputs by IRQ number (what `pci_dev->irq` names). */
  readonly intxLines: ReadonlyMap<number, RecordingLine>;
  /** The host bridge's device-tree `interrupt-map` (the driver finds its IRQ there). */
  readonly interruptMap: PciInterruptMap;
  /** MSI-X messages the platform received, oldest first; the driver takes them. */
  readonly msiInbox: { address: bigint; data: number }[];
}

/** MSI-X message the driver programs for `vector` (an x86 LAPIC address and a vector number). */
const MSI_ADDRESS = 0xfee0_0000;
const MSI_DATA_BASE = 0x40;

/**
 * The driver side of modern virtio-pci, for the conformance suite. Probing (explicit, or on
 * first use) enumerates bus 0 through both conf1 and ECAM and insists they agree, sizes the
 * BARs with decoding off, moves the virtio BAR, enables memory decoding and bus mastering, and
 * walks the capability list the way Linux does.
 */
export class PciDriver implements TransportDriver {
  readonly kind: string;
  readonly bindConfigInterrupt?: () => void;
  readonly bindQueueInterrupt?: (index: number) => void;
  readonly #options: PciDriverOptions;
  readonly #config: ConfigAccess;
  #probed:
    | {
        devfn: number;
        identity: DeviceIdentity;
        common: Mapped;
        isr: Mapped;
        notify: Mapped;
        notifyMultiplier: number;
        device: Mapped | undefined;
        msix: { table: number; pba: number; size: number; control: number } | undefined;
        irq: number;
        bar: SizedBar;
      }
    | undefined;
  readonly #notifyOffsets = new Map<number, number>();
  #msixReady = false;

  constructor(options: PciDriverOptions) {
    this.#options = options;
    this.kind = options.interrupts === 'msix' ? 'pci-msix' : 'pci-intx';
    this.#config =
      options.configMechanism === 'conf1' ? conf1Access(options.conf1) : ecamAccess(options.ecam);
    if (options.interrupts === 'msix') {
      this.bindConfigInterrupt = () => this.#bindConfigVector();
      this.bindQueueInterrupt = (index) => this.#bindQueueVector(index);
    }
  }

  // ---- probing -----------------------------------------------------------------------------

  probe(): DeviceIdentity {
    const viaConf1 = findVirtio(conf1Access(this.#options.conf1));
    const viaEcam = findVirtio(ecamAccess(this.#options.ecam));
    if (viaConf1.devfn !== viaEcam.devfn || viaConf1.header.join() !== viaEcam.header.join()) {
      throw new VirtkitError(
        'DRIVER',
        `conf1 and ECAM disagree: ${viaConf1.devfn}/${viaConf1.header} vs ${viaEcam.devfn}/${viaEcam.header}`,
      );
    }
    const devfn = viaConf1.devfn;
    const c = this.#config;
    const deviceId = c.read(0, devfn, PCI.DEVICE_ID, 2);
    // vp_modern_probe: modern devices are 0x1040-0x107f, id.vendor is the subsystem vendor.
    const identity = {
      deviceType: deviceId - 0x1040,
      vendorId: c.read(0, devfn, PCI.SUBSYSTEM_VENDOR_ID, 2),
    };
    const bars = this.#sizeBars(devfn);
    const bar = this.#assign(devfn, bars);
    // pci_enable_device + pci_set_master.
    const command = c.read(0, devfn, PCI.COMMAND, 2);
    c.write(0, devfn, PCI.COMMAND, 2, command | PCI.COMMAND_MEMORY | PCI.COMMAND_MASTER);

    const common = this.#findVirtioCap(devfn, VIRTIO_PCI.CAP_COMMON_CFG, bars);
    const isr = this.#findVirtioCap(devfn, VIRTIO_PCI.CAP_ISR_CFG, bars);
    const notify = this.#findVirtioCap(devfn, VIRTIO_PCI.CAP_NOTIFY_CFG, bars);
    if (!common || !isr || !notify) {
      throw new VirtkitError('DRIVER', `missing capabilities ${common}/${isr}/${notify}`);
    }
    const device = this.#findVirtioCap(devfn, VIRTIO_PCI.CAP_DEVICE_CFG, bars);
    this.#probed = {
      devfn,
      identity,
      common: this.#map(devfn, common, bars, VIRTIO_PCI.COMMON_CFG_SIZE, 4),
      isr: this.#map(devfn, isr, bars, 1, 1),
      notify: this.#map(devfn, notify, bars, 2, 2),
      notifyMultiplier: c.read(0, devfn, notify + VIRTIO_PCI.NOTIFY_CAP_MULT, 4),
      device: device ? this.#map(devfn, device, bars, 0, 4) : undefined,
      msix: this.#findMsix(devfn, bars),
      irq: this.#intxIrq(devfn),
      bar,
    };
    const msix = this.#probed.msix;
    if (msix) {
      // pci_msix_init: MSI-X off until a driver asks for vectors, whatever was left enabled.
      const flags = c.read(0, devfn, msix.control, 2);
      c.write(0, devfn, msix.control, 2, flags & ~PCI.MSIX_FLAGS_ENABLE);
    }
    if (this.#options.interrupts === 'intx') {
      if (c.read(0, devfn, PCI.INTERRUPT_PIN, 1) === 0) {
        throw new VirtkitError('DRIVER', 'the function has no INTx pin');
      }
      // pci_intx(dev, 1): make sure INTx is not disabled.
      const cmd = c.read(0, devfn, PCI.COMMAND, 2);
      c.write(0, devfn, PCI.COMMAND, 2, cmd & ~PCI.COMMAND_INTX_DISABLE);
    }
    this.#notifyOffsets.clear();
    this.#msixReady = false;
    return identity;
  }

  /**
   * The platform IRQ of the function's INTx pin, found the way Linux does on a device-tree
   * machine (`of_irq_parse_and_map_pci`): the host bridge's `interrupt-map`, matched on the
   * masked child address (bus, device, function) and pin. The interrupt line register is only a
   * hint the guest may have overwritten. -1 if the pin is not mapped.
   */
  #intxIrq(devfn: number): number {
    const pin = this.#config.read(0, devfn, PCI.INTERRUPT_PIN, 1);
    const { mask, entries } = this.#options.interruptMap;
    const entry = entries.find(
      (e) => e.childAddress[0] === ((devfn << 8) & mask[0]) && e.pin === (pin & mask[3]),
    );
    return entry?.irq ?? -1;
  }

  /** `__pci_read_bases`: decoding off, all ones into each BAR, size from the read-back. */
  #sizeBars(devfn: number): SizedBar[] {
    const c = this.#config;
    const command = c.read(0, devfn, PCI.COMMAND, 2);
    c.write(0, devfn, PCI.COMMAND, 2, command & ~0x3);
    const bars: SizedBar[] = [];
    for (let index = 0; index < 6; index++) {
      const reg = PCI.BASE_ADDRESS_0 + 4 * index;
      const low = c.read(0, devfn, reg, 4);
      c.write(0, devfn, reg, 4, 0xffff_ffff);
      const lowSize = c.read(0, devfn, reg, 4);
      c.write(0, devfn, reg, 4, low);
      if (lowSize === 0 || lowSize === 0xffff_ffff || low & 1) continue; // absent or I/O
      const is64 = (low & 0x6) === 0x4;
      let mask = BigInt(lowSize & 0xffff_fff0);
      let address = (low & 0xffff_fff0) >>> 0;
      if (is64) {
        const high = c.read(0, devfn, reg + 4, 4);
        c.write(0, devfn, reg + 4, 4, 0xffff_ffff);
        const highSize = c.read(0, devfn, reg + 4, 4);
        c.write(0, devfn, reg + 4, 4, high);
        mask |= BigInt(highSize) << 32n;
        address += high * 0x1_0000_0000;
      }
      // pci_size: the lowest set bit of the mask is the size.
      const size = Number(mask & -mask);
      bars.push({ index, size, is64, address });
      if (is64) index++;
    }
    c.write(0, devfn, PCI.COMMAND, 2, command);
    return bars;
  }

  /** Moves the first memory BAR to the configured address (low half, then high half). */
  #assign(devfn: number, bars: SizedBar[]): SizedBar {
    const bar = bars[0];
    if (!bar) throw new VirtkitError('DRIVER', 'the function has no memory BAR');
    const address = this.#options.barAddress;
    if (address % bar.size !== 0) throw new VirtkitError('DRIVER', 'misaligned BAR address');
    this.#programBar(devfn, bar, address);
    bar.address = address;
    return bar;
  }

  /** Writes `address` into `bar`'s register(s), low half first, whatever the command register says. */
  #programBar(devfn: number, bar: SizedBar, address: number): void {
    const reg = PCI.BASE_ADDRESS_0 + 4 * bar.index;
    const c = this.#config;
    const flags = c.read(0, devfn, reg, 4) & 0xf;
    c.write(0, devfn, reg, 4, ((address % 0x1_0000_0000) | flags) >>> 0);
    if (bar.is64) c.write(0, devfn, reg + 4, 4, Math.floor(address / 0x1_0000_0000));
  }

  /** `pci_find_capability`: status bit, pointer at 0x34, a TTL against loops. */
  #capabilities(devfn: number): { id: number; pos: number }[] {
    const c = this.#config;
    if (!(c.read(0, devfn, PCI.STATUS, 2) & PCI.STATUS_CAP_LIST)) return [];
    const found: { id: number; pos: number }[] = [];
    let pos = c.read(0, devfn, PCI.CAPABILITY_LIST, 1);
    for (let ttl = PCI.FIND_CAP_TTL; ttl > 0 && pos >= 0x40; ttl--) {
      pos &= ~3;
      const entry = c.read(0, devfn, pos, 2);
      const id = entry & 0xff;
      if (id === 0xff) break;
      found.push({ id, pos });
      pos = entry >> 8;
    }
    return found;
  }

  /** `virtio_pci_find_capability`: the first vendor capability of `type` on a sized BAR. */
  #findVirtioCap(devfn: number, type: number, bars: SizedBar[]): number | undefined {
    const c = this.#config;
    for (const { id, pos } of this.#capabilities(devfn)) {
      if (id !== PCI.CAP_ID_VNDR) continue;
      const capType = c.read(0, devfn, pos + VIRTIO_PCI.CAP_CFG_TYPE, 1);
      const bar = c.read(0, devfn, pos + VIRTIO_PCI.CAP_BAR, 1);
      if (bar > 5) continue;
      if (capType === type && bars.some((b) => b.index === bar)) return pos;
    }
    return undefined;
  }

  /** `vp_modern_map_capability`'s checks, then the structure's physical address. */
  #map(devfn: number, pos: number, bars: SizedBar[], minlen: number, align: number): Mapped {
    const c = this.#config;
    const barIndex = c.read(0, devfn, pos + VIRTIO_PCI.CAP_BAR, 1);
    const offset = c.read(0, devfn, pos + VIRTIO_PCI.CAP_OFFSET, 4);
    const length = c.read(0, devfn, pos + VIRTIO_PCI.CAP_LENGTH, 4);
    const bar = bars.find((b) => b.index === barIndex)!;
    if (length < minlen) throw new VirtkitError('DRIVER', `bad capability len ${length}`);
    if (offset % align !== 0) throw new VirtkitError('DRIVER', `offset ${offset} not aligned`);
    if (minlen + offset > bar.size) {
      throw new VirtkitError('DRIVER', `map ${minlen}@${offset} out of range on bar ${barIndex}`);
    }
    return { address: bar.address + offset, length };
  }

  #findMsix(
    devfn: number,
    bars: SizedBar[],
  ): { table: number; pba: number; size: number; control: number } | undefined {
    const cap = this.#capabilities(devfn).find((entry) => entry.id === PCI.CAP_ID_MSIX);
    if (!cap) return undefined;
    const c = this.#config;
    const flags = c.read(0, devfn, cap.pos + PCI.MSIX_FLAGS, 2);
    const table = c.read(0, devfn, cap.pos + PCI.MSIX_TABLE, 4);
    const pba = c.read(0, devfn, cap.pos + PCI.MSIX_PBA, 4);
    const tableBar = bars.find((b) => b.index === (table & 7));
    const pbaBar = bars.find((b) => b.index === (pba & 7));
    if (!tableBar || !pbaBar) {
      throw new VirtkitError('DRIVER', 'MSI-X table or PBA in a BAR that is not there');
    }
    return {
      table: tableBar.address + (table & ~7),
      pba: pbaBar.address + (pba & ~7),
      size: (flags & PCI.MSIX_FLAGS_QSIZE) + 1,
      control: cap.pos + PCI.MSIX_FLAGS,
    };
  }

  #device() {
    if (!this.#probed) this.probe();
    return this.#probed!;
  }

  // ---- MMIO helpers ------------------------------------------------------------------------

  #read(address: number, width: number): number {
    const data = new Uint8Array(width);
    this.#options.memory.read(address, data);
    return fromLe(data);
  }

  #write(address: number, width: number, value: number): void {
    this.#options.memory.write(address, le(width, value));
  }

  #common(offset: number): number {
    return this.#device().common.address + offset;
  }

  // ---- TransportDriver ---------------------------------------------------------------------

  getStatus(): number {
    return this.#read(this.#common(VIRTIO_PCI.COMMON_STATUS), 1);
  }

  setStatus(status: number): void {
    if (status === 0) throw new VirtkitError('DRIVER', 'status 0 is a reset: call reset()');
    this.#write(this.#common(VIRTIO_PCI.COMMON_STATUS), 1, status);
  }

  /** `vp_reset`: write 0, poll until status reads 0, then synchronize vectors. */
  async reset(): Promise<void> {
    this.#write(this.#common(VIRTIO_PCI.COMMON_STATUS), 1, 0);
    for (let tries = 0; this.getStatus() !== 0; tries++) {
      if (tries >= 1000) throw new VirtkitError('DRIVER', 'status did not read 0 after reset');
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    // vp_synchronize_vectors: handlers of messages that arrived before the reset have run.
    this.#options.msiInbox.length = 0;
    this.#notifyOffsets.clear();
  }

  deviceFeaturesPage(select: number): number {
    this.#write(this.#common(VIRTIO_PCI.COMMON_DFSELECT), 4, select);
    return this.#read(this.#common(VIRTIO_PCI.COMMON_DF), 4);
  }

  deviceFeatures(): bigint {
    return BigInt(this.deviceFeaturesPage(0)) | (BigInt(this.deviceFeaturesPage(1)) << 32n);
  }

  writeDriverFeaturesPage(select: number, value: number): void {
    this.#write(this.#common(VIRTIO_PCI.COMMON_GFSELECT), 4, select);
    this.#write(this.#common(VIRTIO_PCI.COMMON_GF), 4, value);
  }

  writeDriverFeatures(features: bigint): void {
    this.writeDriverFeaturesPage(0, Number(BigInt.asUintN(32, features)));
    this.writeDriverFeaturesPage(1, Number(BigInt.asUintN(32, features >> 32n)));
  }

  queueCount(): number {
    return this.#read(this.#common(VIRTIO_PCI.COMMON_NUMQ), 2);
  }

  #select(index: number): void {
    this.#write(this.#common(VIRTIO_PCI.COMMON_Q_SELECT), 2, index & 0xffff);
  }

  queueMaxSize(index: number): number {
    this.#select(index);
    return this.#read(this.#common(VIRTIO_PCI.COMMON_Q_SIZE), 2);
  }

  setQueueSize(index: number, size: number): void {
    this.#select(index);
    // setup_vq reads queue_notify_off for the queue it sets up (vp_modern_map_vq_notify).
    if (this.#read(this.#common(VIRTIO_PCI.COMMON_Q_SIZE), 2) !== 0) {
      this.#notifyOffsets.set(index, this.#read(this.#common(VIRTIO_PCI.COMMON_Q_NOFF), 2));
    }
    this.#write(this.#common(VIRTIO_PCI.COMMON_Q_SIZE), 2, size);
  }

  setQueueAddresses(index: number, addresses: QueueAddresses): void {
    this.#select(index);
    for (const [low, address] of [
      [VIRTIO_PCI.COMMON_Q_DESCLO, addresses.desc],
      [VIRTIO_PCI.COMMON_Q_AVAILLO, addresses.driver],
      [VIRTIO_PCI.COMMON_Q_USEDLO, addresses.device],
    ] as const) {
      // vp_iowrite64_twopart: low half, then high half.
      this.#write(this.#common(low), 4, address % 0x1_0000_0000);
      this.#write(this.#common(low + 4), 4, Math.floor(address / 0x1_0000_0000));
    }
  }

  setQueueReady(index: number, ready: boolean): void {
    this.#select(index);
    this.#write(this.#common(VIRTIO_PCI.COMMON_Q_ENABLE), 2, ready ? 1 : 0);
  }

  queueReady(index: number): boolean {
    this.#select(index);
    return this.#read(this.#common(VIRTIO_PCI.COMMON_Q_ENABLE), 2) !== 0;
  }

  /**
   * Writes the queue index to the queue's notify address. A queue that was never set up gets
   * the address its index would have (`index * multiplier`), as a confused driver would use.
   */
  notify(index: number): void {
    const device = this.#device();
    const off = this.#notifyOffsets.get(index) ?? index;
    this.#write(device.notify.address + off * device.notifyMultiplier, 2, index & 0xffff);
  }

  readConfig(offset: number, width: ConfigWidth): number {
    const device = this.#device().device;
    if (!device) throw new VirtkitError('DRIVER', 'device has no configuration space');
    return this.#read(device.address + offset, width);
  }

  writeConfig(offset: number, width: ConfigWidth, value: number): void {
    const device = this.#device().device;
    if (!device) throw new VirtkitError('DRIVER', 'device has no configuration space');
    this.#write(device.address + offset, width, value);
  }

  configGeneration(): number {
    return this.#read(this.#common(VIRTIO_PCI.COMMON_CFGGENERATION), 1);
  }

  interruptPending(): boolean {
    if (this.#options.interrupts === 'msix') return this.#options.msiInbox.length > 0;
    return this.#options.intxLines.get(this.#device().irq)?.level ?? false;
  }

  handleInterrupt(): InterruptCauses {
    if (this.#options.interrupts === 'intx') {
      // vp_interrupt: reading the ISR clears it and de-asserts the line.
      const isr = this.#read(this.#device().isr.address, 1);
      return {
        used: (isr & VIRTIO_PCI.ISR_QUEUE) !== 0,
        config: (isr & VIRTIO_PCI.ISR_CONFIG) !== 0,
      };
    }
    // vp_config_changed on vector 0, vring_interrupt on each queue's own vector.
    const messages = this.#options.msiInbox.splice(0);
    let used = false;
    let config = false;
    for (const message of messages) {
      if (message.address !== BigInt(MSI_ADDRESS)) {
        throw new VirtkitError(
          'DRIVER',
          `MSI to unexpected address 0x${message.address.toString(16)}`,
        );
      }
      const vector = message.data - MSI_DATA_BASE;
      if (vector === 0) config = true;
      else used = true;
    }
    return { used, config };
  }

  // ---- MSI-X -------------------------------------------------------------------------------

  /**
   * `pci_alloc_irq_vectors(PCI_IRQ_MSIX)` then `vp_modern_config_vector`: enable with the
   * function masked, program and unmask every entry, unmask the function; map configuration
   * changes to vector 0 and check the read-back.
   */
  #bindConfigVector(): void {
    const device = this.#device();
    const msix = device.msix;
    if (!msix) throw new VirtkitError('DRIVER', 'the function has no MSI-X capability');
    if (!this.#msixReady) {
      const c = this.#config;
      const flags = c.read(0, device.devfn, msix.control, 2);
      c.write(
        0,
        device.devfn,
        msix.control,
        2,
        flags | PCI.MSIX_FLAGS_ENABLE | PCI.MSIX_FLAGS_MASKALL,
      );
      for (let vector = 0; vector < msix.size; vector++) {
        const entry = msix.table + vector * PCI.MSIX_ENTRY_SIZE;
        this.#write(entry, 4, MSI_ADDRESS);
        this.#write(entry + 4, 4, 0);
        this.#write(entry + 8, 4, MSI_DATA_BASE + vector);
        this.#write(entry + PCI.MSIX_ENTRY_VECTOR_CTRL, 4, 0);
      }
      c.write(
        0,
        device.devfn,
        msix.control,
        2,
        (flags | PCI.MSIX_FLAGS_ENABLE) & ~PCI.MSIX_FLAGS_MASKALL,
      );
      this.#msixReady = true;
    }
    this.#write(this.#common(VIRTIO_PCI.COMMON_MSIX), 2, 0);
    if (this.#read(this.#common(VIRTIO_PCI.COMMON_MSIX), 2) === VIRTIO_PCI.MSI_NO_VECTOR) {
      throw new VirtkitError('DRIVER', 'device refused the config vector');
    }
  }

  /** `vp_modern_queue_vector`: queue i on vector i + 1, read back to check. */
  #bindQueueVector(index: number): void {
    this.#select(index);
    this.#write(this.#common(VIRTIO_PCI.COMMON_Q_MSIX), 2, index + 1);
    if (this.#read(this.#common(VIRTIO_PCI.COMMON_Q_MSIX), 2) === VIRTIO_PCI.MSI_NO_VECTOR) {
      throw new VirtkitError('DRIVER', `device refused a vector for queue ${index}`);
    }
  }

  // ---- hostile accesses --------------------------------------------------------------------

  /**
   * Programs the virtio BAR over the first memory BAR of function `otherDevfn` with decoding
   * left on (Linux turns it off while it moves a BAR; a careless driver does not), reads
   * device_status and writes 0 (a reset) to it at the overlapped address, then moves the BAR
   * back and leaves the other function as it found it.
   */
  overlapBar(otherDevfn: number): { statusThroughOverlap: number; otherFunctionStatus: number } {
    const device = this.#device();
    const c = this.#config;
    const otherCommand = c.read(0, otherDevfn, PCI.COMMAND, 2);
    c.write(0, otherDevfn, PCI.COMMAND, 2, otherCommand | PCI.COMMAND_MEMORY);
    const otherBase = (c.read(0, otherDevfn, PCI.BASE_ADDRESS_0, 4) & 0xffff_fff0) >>> 0;
    const status = device.common.address - device.bar.address + VIRTIO_PCI.COMMON_STATUS;
    const otherFunctionStatus = this.#read(otherBase + status, 1);
    this.#programBar(device.devfn, device.bar, otherBase);
    const statusThroughOverlap = this.#read(otherBase + status, 1);
    this.#write(otherBase + status, 1, 0);
    this.#programBar(device.devfn, device.bar, device.bar.address);
    c.write(0, otherDevfn, PCI.COMMAND, 2, otherCommand);
    return { statusThroughOverlap, otherFunctionStatus };
  }

  /**
   * Accesses virtio 1.2 §4.1.3 / §4.1.4 and PCI forbid, each of which the function or the root
   * must ignore (writes) or read as 0 / all ones (reads) and count once. Returns how many.
   */
  hostileAccesses(unclaimedAddress: number): number {
    const device = this.#device();
    const { devfn } = device;
    const common = device.common.address;
    const isr = device.isr.address;
    const notify = device.notify.address;
    const config = device.device!.address;
    const table = device.msix!.table;
    const pba = device.msix!.pba;
    const m = this.#options.memory;
    const ones = (width: number) => new Uint8Array(width).fill(0xff);
    const memory: [kind: 'read' | 'write', address: number, data: Uint8Array][] = [
      ['read', common + VIRTIO_PCI.COMMON_STATUS, new Uint8Array(2)], // 8-bit field as 16
      ['write', common + VIRTIO_PCI.COMMON_CFGGENERATION, le(1, 9)], // read-only
      ['write', common + VIRTIO_PCI.COMMON_Q_SELECT, le(4, 1)], // 16-bit field as 32
      ['write', common + VIRTIO_PCI.COMMON_Q_DESCLO + 4, ones(8)], // 64-bit at the high half
      ['read', common + 2, new Uint8Array(4)], // misaligned
      ['write', common + VIRTIO_PCI.COMMON_NUMQ, le(2, 7)],
      ['write', common + VIRTIO_PCI.COMMON_DF, le(4, 0)],
      ['write', common + VIRTIO_PCI.COMMON_Q_NOFF, le(2, 3)],
      ['read', common + VIRTIO_PCI.COMMON_CFG_SIZE, new Uint8Array(2)], // past the structure
      ['write', common + VIRTIO_PCI.COMMON_Q_ENABLE, le(2, 2)],
      ['read', common, new Uint8Array(3)], // odd width
      ['read', isr, new Uint8Array(4)], // ISR is one byte (and must not clear)
      ['write', isr, le(1, 0)],
      ['write', notify, le(1, 0)], // notifications are 16-bit
      ['write', notify + 2, le(2, 0)], // between two queues' addresses
      ['read', notify + 0x100, new Uint8Array(4)], // past the notify structure
      ['read', config, new Uint8Array(8)], // device config takes up to 32 bits
      ['read', config + 1, new Uint8Array(2)], // device config accesses are aligned to their width
      ['read', config + 6, new Uint8Array(4)],
      ['write', config + 9, ones(2)], // would reach the echo device's writable `scratch`
      ['read', table + 16 * device.msix!.size, new Uint8Array(4)], // past the MSI-X table
      ['write', table + 16 * device.msix!.size, le(4, 0x1234)],
      ['write', pba, ones(8)], // the PBA is read-only
      ['write', table, le(2, 0)], // 16-bit table access
      ['read', table + 2, new Uint8Array(4)], // misaligned
      ['write', table + 4, ones(8)], // 64-bit access at a 32-bit boundary
      ['write', unclaimedAddress, ones(4)], // nothing decodes there
      ['read', unclaimedAddress, new Uint8Array(4)],
    ];
    for (const [kind, address, data] of memory) {
      if (kind === 'read') m.read(address, data);
      else m.write(address, data);
    }
    const c = this.#config;
    // Identity and capability fields are read-only.
    c.write(0, devfn, PCI.VENDOR_ID, 2, 0x1234);
    c.write(0, devfn, PCI.CAPABILITY_LIST, 1, 0x80);
    // Configuration cycles that cross a dword or straddle CONFIG_DATA.
    this.#options.ecam.read((devfn << 12) | 2, new Uint8Array(4));
    this.#options.ecam.write((devfn << 12) | 0x3f, new Uint8Array(2));
    this.#options.conf1.write(0, le(4, 0x8000_0000 | (devfn << 8)));
    this.#options.conf1.read(6, new Uint8Array(4));
    return memory.length + 5;
  }
}

/**
 * A function with one 32-bit memory BAR and no driver: something else on the bus for the
 * virtio function's BAR to be programmed over. Its BAR reads 0x5a everywhere.
 */
class BystanderFunction implements PciFunction {
  readonly config = new PciConfiguration({
    vendorId: 0x1b36,
    deviceId: 0x0005, // QEMU's "PCI test device"
    classCode: 0xff_00_00,
    bars: [{ kind: 'mem32', size: 0x8_0000 }],
  });
  accesses = 0;

  constructor() {
    this.config.seal();
  }

  readBar(_index: number, _offset: number, data: Uint8Array): void {
    this.accesses++;
    data.fill(0x5a);
  }

  writeBar(): void {
    this.accesses++;
  }
}

/** Finds the first modern virtio function on bus 0 (Linux's `pci_scan_slot` over 32 devices). */
function findVirtio(config: ConfigAccess): { devfn: number; header: number[] } {
  for (let device = 0; device < 32; device++) {
    const functions = config.read(0, device << 3, PCI.HEADER_TYPE, 1) & 0x80 ? 8 : 1;
    for (let fn = 0; fn < functions; fn++) {
      const devfn = (device << 3) | fn;
      const id = config.read(0, devfn, PCI.VENDOR_ID, 4);
      if (id === 0xffff_ffff || (id & 0xffff) === 0xffff) continue;
      const vendor = id & 0xffff;
      const deviceId = id >>> 16;
      if (vendor === 0x1af4 && deviceId >= 0x1040 && deviceId <= 0x107f) {
        const header = Array.from({ length: 16 }, (_, i) => config.read(0, devfn, i * 4, 4));
        return { devfn, header };
      }
    }
  }
  throw new VirtkitError('DRIVER', `no virtio-pci function found through ${config.name}`);
}

/** Bus layout of the conformance machine. */
const MEM32 = { base: 0x4000_0000, size: 0x1000_0000 };
const MEM64 = { base: 0x1_0000_0000, size: 0x1_0000_0000 };
const IRQ_BASE = 32;
/** Slot of the bystander function (before the virtio function's slot 3, so it wins overlaps). */
const BYSTANDER_SLOT = 2;

function pciCase(interrupts: 'msix' | 'intx'): TransportCase {
  return {
    name: interrupts === 'msix' ? 'pci-msix' : 'pci-intx',
    create(device: VirtioDevice, guest: TestMemory): TransportFixture {
      const lines = new Map<number, RecordingLine>();
      for (let i = 0; i < 4; i++) lines.set(IRQ_BASE + i, new RecordingLine());
      const msiInbox: { address: bigint; data: number }[] = [];
      const root = new PciRoot({
        mem32: MEM32,
        mem64: MEM64,
        intx: [...lines].map(([irq, line]) => ({ line, irq })),
        msi: { signal: (address, data) => msiInbox.push({ address, data }) },
      });
      const fn = new VirtioPciFunction(device, { memory: guest.memory });
      // A function before the virtio one on the bus, whose BAR the hostile driver overlaps.
      const bystander = new BystanderFunction();
      root.addFunction(BYSTANDER_SLOT, bystander);
      root.addFunction(3, fn);
      const driver = new PciDriver({
        conf1: root.conf1,
        ecam: root.ecam,
        // MSI-X case on ECAM (as on a RISC-V or ACPI machine), INTx case on conf1.
        configMechanism: interrupts === 'msix' ? 'ecam' : 'conf1',
        memory: {
          read: (address, data) => root.mmioRead(address, data),
          write: (address, data) => root.mmioWrite(address, data),
        },
        interrupts,
        // Linux moving the BAR: high in the 64-bit window, or below 4 GiB.
        barAddress: interrupts === 'msix' ? 0x1_2000_0000 : 0x4800_0000,
        intxLines: lines,
        interruptMap: root.interruptMap(),
        msiInbox,
      });
      const transportViolations = () => fn.violations.count() + root.violations.count();
      return {
        driver,
        controller: fn.controller,
        transportViolations,
        hostileAccesses: () => driver.hostileAccesses(MEM32.base + MEM32.size - 0x1000),
        transportState: () => ({
          bars: root.barAssignments(),
          command: fn.config.command,
          msix: root.msixRoutes(),
          msixEnabled: fn.msix?.enabled,
          msixFunctionMasked: fn.msix?.functionMasked,
          pending: Array.from({ length: fn.msix?.size ?? 0 }, (_, v) => fn.msix?.isPending(v)),
          configVector: fn.configVector,
          queueVectors: Array.from({ length: fn.controller.numQueues }, (_, q) =>
            fn.queueVector(q),
          ),
          isr: fn.isrStatus,
          intx: fn.interruptAsserted,
        }),
        windows: (): GuestWindow[] => {
          const bar = fn.barDevice();
          type Registers = GuestWindow['registers'];
          const part = (
            name: string,
            base: number,
            size: number,
            device: BusDevice,
            registers: Registers,
          ): GuestWindow => ({
            name,
            size,
            registers,
            device: {
              read: (offset, data) => device.read(base + offset, data),
              write: (offset, data) => device.write(base + offset, data),
            },
          });
          const { layout, capabilityOffsets: caps } = fn;
          const dwords = (count: number) =>
            Array.from({ length: count }, (_, i) => [4 * i, 4] as const);
          const header: Registers = [
            [PCI.COMMAND, 2],
            [PCI.STATUS, 2],
            [PCI.BASE_ADDRESS_0, 4],
            [PCI.BASE_ADDRESS_0 + 4, 4],
            [PCI.INTERRUPT_LINE, 1],
            [caps.msix! + PCI.MSIX_FLAGS, 2],
            [caps.pciCfg + VIRTIO_PCI.CAP_BAR, 1],
            [caps.pciCfg + VIRTIO_PCI.CAP_OFFSET, 4],
            [caps.pciCfg + VIRTIO_PCI.CAP_LENGTH, 4],
            [caps.pciCfg + 16, 4],
            [caps.pciCfg + 16, 1],
          ];
          return [
            {
              name: 'conf1',
              size: 8,
              device: root.conf1,
              registers: [
                [0, 4],
                [4, 4],
                [5, 1],
                [6, 2],
              ],
            },
            { name: 'ecam', size: root.ecamSize, device: root.ecam, registers: [] },
            part('ecam 00:03.0', 3 << 15, 0x1000, root.ecam, header),
            { name: 'bar', size: layout.barSize, device: bar, registers: [] },
            part('common', layout.common.offset, 0x40, bar, COMMON_FIELDS),
            part('isr', layout.isr.offset, 4, bar, [[0, 1]]),
            part('device config', layout.device.offset, 0x20, bar, CONFIG_FIELDS),
            part('notify', layout.notify.offset, 0x10, bar, [
              [0, 2],
              [4, 2],
            ]),
            part('msix table', layout.msixTable.offset, 0x40, bar, dwords(16)),
            part('msix pba', layout.msixPba.offset, 0x10, bar, dwords(2)),
          ];
        },
        overlapWindow: (): WindowOverlap => {
          const violations = transportViolations();
          const accesses = bystander.accesses;
          const seen = driver.overlapBar(BYSTANDER_SLOT << 3);
          return {
            ...seen,
            violations: transportViolations() - violations,
            otherFunctionAccesses: bystander.accesses - accesses,
          };
        },
      };
    },
  };
}

/** The conformance case for virtio-pci with MSI-X (one vector for config, one per queue). */
export const pciMsixCase: TransportCase = pciCase('msix');
/** The conformance case for virtio-pci with INTx and the ISR (MSI-X left disabled). */
export const pciIntxCase: TransportCase = pciCase('intx');
