/**
 * A virtio-mmio register driver, written from Linux's drivers/virtio/virtio_mmio.c and
 * include/uapi/linux/virtio_mmio.h (its own offset table, not the transport's, so a wrong offset
 * on either side shows): 32-bit register accesses, 8/16/32-bit config accesses, all as
 * little-endian bytes through the transport's `BusDevice` window, as a CPU would make them.
 */

import { type BusDevice, type VirtioDevice, VirtkitError } from '@virtkit/core';
import type { TestMemory } from '@virtkit/core/testing';
import { type InterruptLine, MmioTransport } from '@virtkit/transport-mmio';
import type {
  ConfigWidth,
  DeviceIdentity,
  InterruptCauses,
  QueueAddresses,
  TransportCase,
  TransportDriver,
  TransportFixture,
} from './driver.js';

/** Offsets from Linux include/uapi/linux/virtio_mmio.h. */
const VIRTIO_MMIO = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  GUEST_PAGE_SIZE: 0x028, // legacy only
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_PFN: 0x040, // legacy only
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_AVAIL_LOW: 0x090,
  QUEUE_AVAIL_HIGH: 0x094,
  QUEUE_USED_LOW: 0x0a0,
  QUEUE_USED_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  QUEUE_RESET: 0x0c0,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;
const INT_VRING = 1;
const INT_CONFIG = 2;
const MAGIC = 0x74726976; // "virt"

/** An interrupt line that remembers its level and how often it was raised. */
export class RecordingLine implements InterruptLine {
  level = false;
  raised = 0;
  setLevel(asserted: boolean): void {
    if (asserted) this.raised++;
    this.level = asserted;
  }
}

function le(width: number, value: number): Uint8Array {
  const data = new Uint8Array(width);
  let rest = value >>> 0;
  for (let i = 0; i < Math.min(width, 4); i++) {
    data[i] = rest & 0xff;
    rest >>>= 8;
  }
  return data;
}

function fromLe(data: Uint8Array): number {
  let value = 0;
  for (let i = data.length - 1; i >= 0; i--) value = value * 256 + data[i]!;
  return value;
}

/**
 * The driver side of virtio-mmio over a `BusDevice` window and the interrupt line wired to it.
 *
 * @example
 * ```ts
 * const line = new RecordingLine();
 * const driver = new MmioDriver(new MmioTransport(device, { memory, interrupt: line }), line);
 * driver.probe(); // { deviceType, vendorId }
 * ```
 */
export class MmioDriver implements TransportDriver {
  readonly kind = 'mmio';
  readonly #bus: BusDevice;
  readonly #line: RecordingLine;

  constructor(bus: BusDevice, line: RecordingLine) {
    this.#bus = bus;
    this.#line = line;
  }

  /** A 32-bit register read (`readl`). */
  readl(offset: number): number {
    const data = new Uint8Array(4);
    this.#bus.read(offset, data);
    return fromLe(data);
  }

  /** A 32-bit register write (`writel`). */
  writel(offset: number, value: number): void {
    this.#bus.write(offset, le(4, value));
  }

  probe(): DeviceIdentity {
    const magic = this.readl(VIRTIO_MMIO.MAGIC_VALUE);
    if (magic !== MAGIC) {
      throw new VirtkitError('DRIVER', `wrong magic value 0x${magic.toString(16)}`);
    }
    const version = this.readl(VIRTIO_MMIO.VERSION);
    if (version !== 2) throw new VirtkitError('DRIVER', `version ${version} not supported`);
    const deviceType = this.readl(VIRTIO_MMIO.DEVICE_ID);
    // Device ID 0 is a placeholder with no function; Linux stops probing it.
    if (deviceType === 0) throw new VirtkitError('DRIVER', 'device ID 0: placeholder device');
    return { deviceType, vendorId: this.readl(VIRTIO_MMIO.VENDOR_ID) };
  }

  getStatus(): number {
    return this.readl(VIRTIO_MMIO.STATUS) & 0xff;
  }

  setStatus(status: number): void {
    if (status === 0) throw new VirtkitError('DRIVER', 'status 0 is a reset: call reset()');
    this.writel(VIRTIO_MMIO.STATUS, status);
  }

  async reset(): Promise<void> {
    this.writel(VIRTIO_MMIO.STATUS, 0);
    for (let tries = 0; this.getStatus() !== 0; tries++) {
      if (tries >= 1000) throw new VirtkitError('DRIVER', 'status did not read 0 after reset');
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  deviceFeaturesPage(select: number): number {
    this.writel(VIRTIO_MMIO.DEVICE_FEATURES_SEL, select);
    return this.readl(VIRTIO_MMIO.DEVICE_FEATURES);
  }

  deviceFeatures(): bigint {
    return BigInt(this.deviceFeaturesPage(0)) | (BigInt(this.deviceFeaturesPage(1)) << 32n);
  }

  writeDriverFeaturesPage(select: number, value: number): void {
    this.writel(VIRTIO_MMIO.DRIVER_FEATURES_SEL, select);
    this.writel(VIRTIO_MMIO.DRIVER_FEATURES, value);
  }

  writeDriverFeatures(features: bigint): void {
    this.writeDriverFeaturesPage(0, Number(BigInt.asUintN(32, features)));
    this.writeDriverFeaturesPage(1, Number(BigInt.asUintN(32, features >> 32n)));
  }

  queueCount(): undefined {
    return undefined;
  }

  queueMaxSize(index: number): number {
    this.writel(VIRTIO_MMIO.QUEUE_SEL, index);
    return this.readl(VIRTIO_MMIO.QUEUE_NUM_MAX);
  }

  setQueueSize(index: number, size: number): void {
    this.writel(VIRTIO_MMIO.QUEUE_SEL, index);
    this.writel(VIRTIO_MMIO.QUEUE_NUM, size);
  }

  setQueueAddresses(index: number, addresses: QueueAddresses): void {
    this.writel(VIRTIO_MMIO.QUEUE_SEL, index);
    const pairs: [number, number][] = [
      [VIRTIO_MMIO.QUEUE_DESC_LOW, addresses.desc],
      [VIRTIO_MMIO.QUEUE_AVAIL_LOW, addresses.driver],
      [VIRTIO_MMIO.QUEUE_USED_LOW, addresses.device],
    ];
    for (const [low, address] of pairs) {
      this.writel(low, address % 0x1_0000_0000);
      this.writel(low + 4, Math.floor(address / 0x1_0000_0000));
    }
  }

  setQueueReady(index: number, ready: boolean): void {
    this.writel(VIRTIO_MMIO.QUEUE_SEL, index);
    this.writel(VIRTIO_MMIO.QUEUE_READY, ready ? 1 : 0);
  }

  queueReady(index: number): boolean {
    this.writel(VIRTIO_MMIO.QUEUE_SEL, index);
    return this.readl(VIRTIO_MMIO.QUEUE_READY) !== 0;
  }

  notify(index: number): void {
    this.writel(VIRTIO_MMIO.QUEUE_NOTIFY, index);
  }

  readConfig(offset: number, width: ConfigWidth): number {
    const data = new Uint8Array(width);
    this.#bus.read(VIRTIO_MMIO.CONFIG + offset, data);
    return fromLe(data);
  }

  writeConfig(offset: number, width: ConfigWidth, value: number): void {
    this.#bus.write(VIRTIO_MMIO.CONFIG + offset, le(width, value));
  }

  configGeneration(): number {
    return this.readl(VIRTIO_MMIO.CONFIG_GENERATION);
  }

  interruptPending(): boolean {
    return this.#line.level;
  }

  /** Linux `vm_interrupt`: read InterruptStatus, acknowledge exactly those bits. */
  handleInterrupt(): InterruptCauses {
    const status = this.readl(VIRTIO_MMIO.INTERRUPT_STATUS);
    this.writel(VIRTIO_MMIO.INTERRUPT_ACK, status);
    return { used: (status & INT_VRING) !== 0, config: (status & INT_CONFIG) !== 0 };
  }
}

/**
 * Accesses §4.2.2.2 forbids, each of which the transport must ignore (writes) or read as 0
 * (reads) and count once. Returns how many there were.
 */
function mmioHostileAccesses(bus: BusDevice): number {
  const R = VIRTIO_MMIO;
  const ones = (width: number) => new Uint8Array(width).fill(0xff);
  const accesses: [kind: 'read' | 'write', offset: number, data: Uint8Array][] = [
    ['write', R.STATUS, new Uint8Array(1)], // a byte-wide "reset"
    ['read', R.STATUS, new Uint8Array(2)],
    ['write', R.STATUS + 1, ones(1)],
    ['write', R.QUEUE_NOTIFY, le(2, 0)],
    ['write', R.QUEUE_DESC_LOW, ones(8)], // 64-bit access to a register pair
    ['read', R.QUEUE_NUM_MAX + 2, new Uint8Array(4)], // misaligned
    ['write', R.QUEUE_READY + 1, le(4, 0)],
    ['write', R.MAGIC_VALUE, le(4, 0)], // read-only
    ['write', R.INTERRUPT_STATUS, le(4, 3)],
    ['write', R.CONFIG_GENERATION, le(4, 9)],
    ['read', R.QUEUE_SEL, new Uint8Array(4)], // write-only
    ['read', R.INTERRUPT_ACK, new Uint8Array(4)],
    ['read', R.QUEUE_DESC_HIGH, new Uint8Array(4)],
    ['write', R.GUEST_PAGE_SIZE, le(4, 4096)], // legacy registers are not there in version 2
    ['write', R.QUEUE_PFN, le(4, 1)],
    ['read', R.QUEUE_RESET, new Uint8Array(4)], // RING_RESET not offered
    ['write', R.QUEUE_RESET, le(4, 1)],
    ['read', 0x0c4, new Uint8Array(4)], // unassigned
    ['write', R.SHM_LEN_LOW, le(4, 0)],
    ['read', R.CONFIG, new Uint8Array(8)], // config takes 8-, 16-, 32-bit accesses only
    ['write', R.CONFIG + 4, ones(3)],
    ['read', R.CONFIG + 1, new Uint8Array(2)], // config accesses are aligned to their width
    ['read', R.CONFIG + 6, new Uint8Array(4)],
    ['write', R.CONFIG + 9, ones(2)], // would reach the echo device's writable `scratch`
    ['read', 0xffe, new Uint8Array(4)], // crosses the end of the window
    ['write', 0x1000, ones(4)], // outside the window
  ];
  for (const [kind, offset, data] of accesses) {
    if (kind === 'read') bus.read(offset, data);
    else bus.write(offset, data);
  }
  return accesses.length;
}

/** Fields of a small device configuration space (the echo device's), for random accesses. */
export const CONFIG_FIELDS: readonly (readonly [number, 1 | 2 | 4])[] = [
  [0, 4],
  [4, 4],
  [8, 4],
  [8, 2],
  [10, 2],
  [12, 2],
  [14, 1],
  [15, 1],
];

/** The conformance case for virtio-mmio. */
export const mmioCase: TransportCase = {
  name: 'mmio',
  create(device: VirtioDevice, guest: TestMemory): TransportFixture {
    const line = new RecordingLine();
    const transport = new MmioTransport(device, { memory: guest.memory, interrupt: line });
    return {
      driver: new MmioDriver(transport, line),
      controller: transport.controller,
      transportViolations: () => transport.violations.count(),
      hostileAccesses: () => mmioHostileAccesses(transport),
      windows: () => [
        {
          name: 'window',
          size: 0x1000,
          device: transport,
          // The state machine's registers twice, so random sequences get somewhere with them.
          registers: [
            ...Object.values(VIRTIO_MMIO),
            ...[VIRTIO_MMIO.STATUS, VIRTIO_MMIO.STATUS, VIRTIO_MMIO.QUEUE_READY],
            ...[VIRTIO_MMIO.QUEUE_NOTIFY, VIRTIO_MMIO.QUEUE_SEL, VIRTIO_MMIO.INTERRUPT_ACK],
          ].map((offset) => [offset, 4] as const),
        },
        {
          name: 'config',
          size: 0x20,
          device: {
            read: (offset, data) => transport.read(VIRTIO_MMIO.CONFIG + offset, data),
            write: (offset, data) => transport.write(VIRTIO_MMIO.CONFIG + offset, data),
          },
          registers: CONFIG_FIELDS,
        },
      ],
      transportState: () => ({
        interruptStatus: transport.interruptStatus,
        asserted: transport.interruptAsserted,
        raised: line.raised,
      }),
    };
  },
};
