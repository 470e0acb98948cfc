import {
  type ActivationContext,
  ConfigSpace,
  DeviceStatus,
  Feature,
  featureBit,
  SplitDriverQueue,
  VIRTIO_MMIO_MAGIC,
  type VirtioDevice,
} from '@virtkit/core';
import { createTestMemory, type TestMemory } from '@virtkit/core/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_VENDOR_ID, MMIO_WINDOW_SIZE, MmioRegister as R } from './constants.js';
import { MmioTransportError } from './errors.js';
import { type InterruptLine, MmioTransport, type MmioTransportOptions } from './transport.js';

const OWN_FEATURE = featureBit(3);
const HIGH_FEATURE = featureBit(Feature.RING_PACKED);

/** A small device: queues of 64 and 16, a 16-byte config space with a writable u32 at 8. */
class ProbeDevice implements VirtioDevice {
  readonly deviceType = 4;
  readonly queues = [{ maxSize: 64 }, { maxSize: 16 }];
  readonly config = new ConfigSpace(16, { writable: [{ offset: 8, length: 4 }] });
  readonly notified: number[] = [];
  features = OWN_FEATURE | HIGH_FEATURE;
  context: ActivationContext | undefined;
  resets = 0;
  /** When set, reset() returns this promise (a device that settles asynchronously). */
  resetPromise: Promise<void> | undefined;

  constructor() {
    this.config.setU64(0, 0x1122_3344_5566_7788n);
    this.config.setU16(12, 0xbeef);
    this.config.setU8(14, 0x5a);
  }
  activate(context: ActivationContext): void {
    this.context = context;
  }
  queueNotify(index: number): void {
    this.notified.push(index);
  }
  reset(): void | Promise<void> {
    this.resets++;
    this.context = undefined;
    return this.resetPromise;
  }
}

/** Records every setLevel call. */
class RecordingLine implements InterruptLine {
  readonly calls: boolean[] = [];
  level = false;
  setLevel(asserted: boolean): void {
    this.calls.push(asserted);
    this.level = asserted;
  }
}

let guest: TestMemory;
let device: ProbeDevice;
let line: RecordingLine;
let transport: MmioTransport;

function create(options: Partial<MmioTransportOptions> = {}, d = device): MmioTransport {
  return new MmioTransport(d, { memory: guest.memory, interrupt: line, ...options });
}

function bytes(width: number, value = 0): Uint8Array {
  const data = new Uint8Array(width);
  let rest = value;
  for (let i = 0; i < width; i++) {
    data[i] = rest & 0xff;
    rest = Math.floor(rest / 256);
  }
  return data;
}

function read(offset: number, width = 4, t = transport): number {
  const data = bytes(width, 0xa5a5a5a5);
  t.read(offset, data);
  let value = 0;
  for (let i = width - 1; i >= 0; i--) value = value * 256 + data[i]!;
  return value;
}

function write(offset: number, value: number, width = 4, t = transport): void {
  t.write(offset, bytes(width, value));
}

/** Drives the init sequence up to FEATURES_OK, with queue rings from the test memory. */
function negotiate(features = OWN_FEATURE | featureBit(Feature.VERSION_1)): void {
  write(R.STATUS, 0);
  write(R.STATUS, DeviceStatus.ACKNOWLEDGE);
  write(R.STATUS, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
  write(R.DRIVER_FEATURES_SEL, 0);
  write(R.DRIVER_FEATURES, Number(BigInt.asUintN(32, features)));
  write(R.DRIVER_FEATURES_SEL, 1);
  write(R.DRIVER_FEATURES, Number(features >> 32n));
  write(R.STATUS, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK);
}

const LIVE =
  DeviceStatus.ACKNOWLEDGE |
  DeviceStatus.DRIVER |
  DeviceStatus.FEATURES_OK |
  DeviceStatus.DRIVER_OK;

function setUpQueue(index: number, size: number): SplitDriverQueue {
  const queue = new SplitDriverQueue(guest.memory, {
    index,
    size,
    eventIdx: false,
    indirect: false,
    allocate: (n, a) => guest.allocate(n, a),
  });
  write(R.QUEUE_SEL, index);
  write(R.QUEUE_NUM, size);
  for (const [low, address] of [
    [R.QUEUE_DESC_LOW, queue.descAddr],
    [R.QUEUE_DRIVER_LOW, queue.driverAddr],
    [R.QUEUE_DEVICE_LOW, queue.deviceAddr],
  ] as const) {
    write(low, address % 2 ** 32);
    write(low + 4, Math.floor(address / 2 ** 32));
  }
  write(R.QUEUE_READY, 1);
  return queue;
}

/** Full bring-up: features, both queues, DRIVER_OK. */
async function bringUp(): Promise<void> {
  negotiate();
  setUpQueue(0, 64);
  setUpQueue(1, 16);
  write(R.STATUS, LIVE);
  await transport.settled();
}

beforeEach(() => {
  guest = createTestMemory({ size: 1 << 20 });
  device = new ProbeDevice();
  line = new RecordingLine();
  transport = create();
});

describe('identification registers', () => {
  it('reads magic, version, device id and vendor id', () => {
    expect(read(R.MAGIC_VALUE)).toBe(0x74726976);
    expect(read(R.MAGIC_VALUE)).toBe(VIRTIO_MMIO_MAGIC);
    expect(read(R.VERSION)).toBe(2);
    expect(read(R.DEVICE_ID)).toBe(4);
    expect(read(R.VENDOR_ID)).toBe(DEFAULT_VENDOR_ID);
    expect(read(R.VENDOR_ID)).toBe(0x554d4551);
    expect(transport.violations.count()).toBe(0);
  });

  it('reports the vendor id it was given and refuses one that is not a u32', () => {
    expect(read(R.VENDOR_ID, 4, create({ vendorId: 0x4b545256 }))).toBe(0x4b545256);
    expect(() => create({ vendorId: 2 ** 32 })).toThrow(MmioTransportError);
    expect(() => create({ vendorId: -1 })).toThrow(/not a 32-bit unsigned integer/);
  });

  it('refuses a device that offers RING_RESET, whose QueueReset register it lacks', () => {
    const resettable = new ProbeDevice();
    resettable.features |= featureBit(Feature.RING_RESET);
    expect(() => create({}, resettable)).toThrow(
      expect.objectContaining({ code: 'MMIO_UNSUPPORTED_FEATURE' }),
    );
  });

  it('reports no shared memory regions: length and base read all ones for any selector', () => {
    for (const selector of [0, 1, 255]) {
      write(R.SHM_SEL, selector);
      for (const register of [R.SHM_LEN_LOW, R.SHM_LEN_HIGH, R.SHM_BASE_LOW, R.SHM_BASE_HIGH]) {
        expect(read(register)).toBe(0xffff_ffff);
      }
    }
    expect(transport.violations.count()).toBe(0);
  });
});

describe('feature pages', () => {
  it('pages the offered features through DeviceFeaturesSel, VERSION_1 included', () => {
    write(R.DEVICE_FEATURES_SEL, 0);
    expect(read(R.DEVICE_FEATURES)).toBe(1 << 3);
    write(R.DEVICE_FEATURES_SEL, 1);
    // VERSION_1 (32) and RING_PACKED (34) are bits 0 and 2 of page 1.
    expect(read(R.DEVICE_FEATURES)).toBe(0b101);
    write(R.DEVICE_FEATURES_SEL, 2);
    expect(read(R.DEVICE_FEATURES)).toBe(0);
    write(R.DEVICE_FEATURES_SEL, 0xffff_ffff);
    expect(read(R.DEVICE_FEATURES)).toBe(0);
  });

  it('collects the driver pages selected by DriverFeaturesSel, masked to the offer', () => {
    write(R.STATUS, DeviceStatus.ACKNOWLEDGE);
    write(R.STATUS, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    write(R.DRIVER_FEATURES_SEL, 1);
    write(R.DRIVER_FEATURES, 0xffff_ffff);
    write(R.DRIVER_FEATURES_SEL, 0);
    write(R.DRIVER_FEATURES, 0xffff_ffff);
    expect(transport.controller.driverFeatures).toBe(
      OWN_FEATURE | HIGH_FEATURE | featureBit(Feature.VERSION_1),
    );
    // A page beyond 1 has no features; accepting some there is counted by the controller.
    write(R.DRIVER_FEATURES_SEL, 2);
    write(R.DRIVER_FEATURES, 1);
    expect(transport.controller.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
    expect(transport.controller.driverFeatures).toBe(
      OWN_FEATURE | HIGH_FEATURE | featureBit(Feature.VERSION_1),
    );
  });

  it('leaves FEATURES_OK clear when the driver did not accept VERSION_1', () => {
    negotiate(OWN_FEATURE);
    expect(read(R.STATUS)).toBe(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    expect(transport.controller.violations.count('FEATURES_NOT_ACCEPTED')).toBe(1);
  });

  it('ignores feature writes after FEATURES_OK', () => {
    negotiate();
    write(R.DRIVER_FEATURES_SEL, 0);
    write(R.DRIVER_FEATURES, 0);
    expect(transport.controller.negotiatedFeatures).toBe(
      OWN_FEATURE | featureBit(Feature.VERSION_1),
    );
    expect(transport.controller.violations.count('FEATURES_AFTER_FEATURES_OK')).toBe(1);
  });
});

describe('queue registers', () => {
  it('reads QueueNumMax per queue and 0 for a queue that does not exist', () => {
    write(R.QUEUE_SEL, 0);
    expect(read(R.QUEUE_NUM_MAX)).toBe(64);
    write(R.QUEUE_SEL, 1);
    expect(read(R.QUEUE_NUM_MAX)).toBe(16);
    for (const missing of [2, 0xffff, 0xffff_ffff]) {
      write(R.QUEUE_SEL, missing);
      expect(read(R.QUEUE_NUM_MAX)).toBe(0);
      expect(read(R.QUEUE_READY)).toBe(0);
    }
    expect(transport.violations.count()).toBe(0);
  });

  it('programs size and ring addresses of the selected queue and reads QueueReady back', () => {
    negotiate();
    write(R.QUEUE_SEL, 1);
    write(R.QUEUE_NUM, 8);
    write(R.QUEUE_DESC_LOW, 0x1000);
    write(R.QUEUE_DESC_HIGH, 0x1);
    write(R.QUEUE_DRIVER_LOW, 0x2000);
    write(R.QUEUE_DRIVER_HIGH, 0x2);
    write(R.QUEUE_DEVICE_LOW, 0x3000);
    write(R.QUEUE_DEVICE_HIGH, 0x3);
    expect(read(R.QUEUE_READY)).toBe(0);
    write(R.QUEUE_READY, 1);
    expect(read(R.QUEUE_READY)).toBe(1);
    const queue = transport.controller.queue(1)!;
    expect(queue).toMatchObject({
      size: 8,
      ready: true,
      desc: [0x1000, 1],
      driver: [0x2000, 2],
      device: [0x3000, 3],
    });
    // Queue 0 was not touched.
    expect(transport.controller.queue(0)).toMatchObject({ size: 64, ready: false, desc: [0, 0] });
    // Disabling before DRIVER_OK is allowed and reads back.
    write(R.QUEUE_READY, 0);
    expect(read(R.QUEUE_READY)).toBe(0);
  });

  it('ignores writes to a queue that does not exist (counted by the controller)', () => {
    negotiate();
    write(R.QUEUE_SEL, 7);
    write(R.QUEUE_NUM, 8);
    write(R.QUEUE_DESC_LOW, 0x1000);
    write(R.QUEUE_READY, 1);
    expect(read(R.QUEUE_READY)).toBe(0);
    expect(transport.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(3);
    for (const index of [0, 1]) {
      expect(transport.controller.queue(index)).toMatchObject({ ready: false, desc: [0, 0] });
    }
  });

  it('refuses a size above QueueNumMax or, with a split ring, not a power of two', () => {
    negotiate();
    write(R.QUEUE_SEL, 1);
    write(R.QUEUE_NUM, 32);
    write(R.QUEUE_NUM, 12);
    write(R.QUEUE_NUM, 0);
    expect(transport.controller.queue(1)!.size).toBe(16);
    expect(transport.controller.violations.count('QUEUE_SIZE_INVALID')).toBe(3);
  });

  it('counts a QueueReady value other than 0 or 1 and ignores it', () => {
    negotiate();
    write(R.QUEUE_SEL, 0);
    write(R.QUEUE_READY, 2);
    expect(read(R.QUEUE_READY)).toBe(0);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });

  it('keeps queue configuration fixed while QueueReady is 1, also before DRIVER_OK', () => {
    negotiate();
    write(R.QUEUE_SEL, 1);
    write(R.QUEUE_NUM, 8);
    write(R.QUEUE_DESC_LOW, 0x1000);
    write(R.QUEUE_READY, 1);
    // §4.2.2.2: with QueueReady set the driver must not touch QueueNum or the addresses.
    write(R.QUEUE_NUM, 4);
    write(R.QUEUE_DESC_LOW, 0x8000);
    write(R.QUEUE_DEVICE_HIGH, 1);
    expect(transport.controller.queue(1)).toMatchObject({
      size: 8,
      ready: true,
      desc: [0x1000, 0],
      device: [0, 0],
    });
    expect(transport.controller.violations.count('QUEUE_CONFIG_AFTER_DRIVER_OK')).toBe(3);
    // Once the driver disabled it again (allowed before DRIVER_OK) the queue takes setup again.
    write(R.QUEUE_READY, 0);
    write(R.QUEUE_NUM, 4);
    expect(transport.controller.queue(1)).toMatchObject({ size: 4, ready: false });
  });

  it('keeps queue configuration fixed after DRIVER_OK', async () => {
    await bringUp();
    write(R.QUEUE_SEL, 0);
    write(R.QUEUE_NUM, 32);
    write(R.QUEUE_DESC_LOW, 0x10);
    write(R.QUEUE_READY, 0);
    expect(read(R.QUEUE_READY)).toBe(1);
    expect(transport.controller.queue(0)!.size).toBe(64);
    expect(transport.controller.violations.count('QUEUE_CONFIG_AFTER_DRIVER_OK')).toBe(3);
  });
});

describe('status and reset', () => {
  it('activates the device on DRIVER_OK with the programmed queues', async () => {
    await bringUp();
    expect(read(R.STATUS)).toBe(LIVE);
    expect(device.context?.queues.map((q) => q?.size)).toEqual([64, 16]);
    expect(transport.controller.activation.state).toBe('active');
  });

  it('resets the device, every queue and InterruptStatus when the driver writes 0', async () => {
    await bringUp();
    device.config.setU32(0, 1); // config change: InterruptStatus bit 1, line up
    expect(read(R.INTERRUPT_STATUS)).toBe(2);
    write(R.DEVICE_FEATURES_SEL, 1);
    write(R.QUEUE_SEL, 1);
    write(R.STATUS, 0);
    await transport.settled();
    expect(read(R.STATUS)).toBe(0);
    expect(read(R.INTERRUPT_STATUS)).toBe(0);
    expect(line.level).toBe(false);
    expect(device.resets).toBe(1);
    for (const index of [0, 1]) {
      expect(transport.controller.queue(index)).toMatchObject({
        ready: false,
        desc: [0, 0],
        driver: [0, 0],
        device: [0, 0],
      });
      write(R.QUEUE_SEL, index);
      expect(read(R.QUEUE_READY)).toBe(0);
    }
    expect(transport.controller.queue(1)!.size).toBe(16);
    expect(transport.controller.driverFeatures).toBe(0n);
    // DeviceFeaturesSel starts over at page 0.
    expect(read(R.DEVICE_FEATURES)).toBe(1 << 3);
    // And the device can be initialized again.
    await bringUp();
    expect(read(R.STATUS)).toBe(LIVE);
  });

  it('keeps Status non-zero until an asynchronous device reset settles', async () => {
    await bringUp();
    let finish!: () => void;
    device.resetPromise = new Promise((resolve) => {
      finish = resolve;
    });
    device.context!.signalUsed(0);
    write(R.STATUS, 0);
    expect(read(R.STATUS)).not.toBe(0);
    // Interrupts pending before the reset are gone at once, not when the device settles.
    expect(read(R.INTERRUPT_STATUS)).toBe(0);
    expect(line.level).toBe(false);
    let settled = false;
    const waiting = transport.settled().then(() => {
      settled = true;
    });
    await Promise.resolve();
    expect(settled).toBe(false);
    finish();
    await waiting;
    expect(read(R.STATUS)).toBe(0);
  });

  it('clears InterruptStatus raised while a reset was settling', async () => {
    await bringUp();
    let finish!: () => void;
    device.resetPromise = new Promise((resolve) => {
      finish = resolve;
    });
    write(R.STATUS, 0);
    device.config.setU32(0, 2); // status is still non-zero with DRIVER_OK: config interrupt
    expect(read(R.INTERRUPT_STATUS)).toBe(2);
    finish();
    await transport.settled();
    expect(read(R.INTERRUPT_STATUS)).toBe(0);
    expect(line.level).toBe(false);
  });

  it('counts a status write with bits above 7 and ignores it', () => {
    write(R.STATUS, 0x101);
    expect(read(R.STATUS)).toBe(0);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });

  it('resets on request of the VMM', async () => {
    await bringUp();
    await transport.reset();
    expect(read(R.STATUS)).toBe(0);
    expect(device.resets).toBe(1);
  });
});

describe('interrupts', () => {
  it('sets bit 0 on used buffers and raises the line; ACK clears it and lowers the line', async () => {
    await bringUp();
    device.context!.signalUsed(0);
    expect(read(R.INTERRUPT_STATUS)).toBe(1);
    expect(transport.interruptStatus).toBe(1);
    expect(transport.interruptAsserted).toBe(true);
    expect(line.calls).toEqual([true]);
    write(R.INTERRUPT_ACK, 1);
    expect(read(R.INTERRUPT_STATUS)).toBe(0);
    expect(line.calls).toEqual([true, false]);
    expect(transport.interruptAsserted).toBe(false);
  });

  it('keeps the line up until every bit is acknowledged', async () => {
    await bringUp();
    device.context!.signalUsed(1);
    device.config.setU32(0, 7);
    expect(read(R.INTERRUPT_STATUS)).toBe(3);
    write(R.INTERRUPT_ACK, 1);
    expect(read(R.INTERRUPT_STATUS)).toBe(2);
    expect(line.level).toBe(true);
    write(R.INTERRUPT_ACK, 2);
    expect(line.level).toBe(false);
    expect(line.calls).toEqual([true, true, false]);
  });

  it('calls setLevel(true) for every event so edge consumers inject each one', async () => {
    await bringUp();
    device.context!.signalUsed(0);
    device.context!.signalUsed(0);
    device.context!.signalUsed(1);
    expect(line.calls).toEqual([true, true, true]);
    expect(read(R.INTERRUPT_STATUS)).toBe(1);
  });

  it('ignores ACK bits that are not interrupt causes, and an ACK with nothing pending', async () => {
    await bringUp();
    write(R.INTERRUPT_ACK, 0xffff_fffc);
    expect(line.calls).toEqual([]);
    device.context!.signalUsed(0);
    write(R.INTERRUPT_ACK, 0xfc);
    expect(read(R.INTERRUPT_STATUS)).toBe(1);
    expect(line.level).toBe(true);
  });

  it('does not let the guest set InterruptStatus by writing it', async () => {
    await bringUp();
    write(R.INTERRUPT_STATUS, 3);
    expect(read(R.INTERRUPT_STATUS)).toBe(0);
    expect(line.calls).toEqual([]);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });
});

describe('configuration space', () => {
  it('reads 8-, 16- and 32-bit fields little-endian at 0x100 onwards', () => {
    expect(read(R.CONFIG, 4)).toBe(0x5566_7788);
    expect(read(R.CONFIG + 4, 4)).toBe(0x1122_3344);
    expect(read(R.CONFIG + 12, 2)).toBe(0xbeef);
    expect(read(R.CONFIG + 14, 1)).toBe(0x5a);
    expect(read(R.CONFIG + 1, 1)).toBe(0x77);
    expect(transport.violations.count()).toBe(0);
  });

  it('writes a writable field and refuses read-only ones (counted by the controller)', () => {
    write(R.CONFIG + 8, 0xcafe_f00d, 4);
    expect(device.config.getU32(8)).toBe(0xcafe_f00d);
    write(R.CONFIG + 10, 0x1234, 2);
    expect(device.config.getU32(8)).toBe(0x1234_f00d);
    write(R.CONFIG + 12, 0, 2);
    expect(device.config.getU16(12)).toBe(0xbeef);
    expect(transport.controller.violations.count('CONFIG_WRITE_READ_ONLY')).toBe(1);
  });

  it('reads a 64-bit field as two aligned 32-bit halves, and nothing at a misaligned offset', () => {
    expect(read(R.CONFIG + 4, 4)).toBe(0x1122_3344);
    // The same bytes at a 16-bit boundary are no field's access (§4.2.2.2).
    expect(read(R.CONFIG + 2, 4)).toBe(0);
    expect(read(R.CONFIG + 13, 2)).toBe(0);
    write(R.CONFIG + 9, 0xffff, 2);
    expect(device.config.getU32(8)).toBe(0);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(3);
    expect(transport.controller.violations.count()).toBe(0);
  });

  it('reads 0 beyond the device config space (counted by the controller)', () => {
    expect(read(R.CONFIG + 16, 4)).toBe(0);
    expect(read(MMIO_WINDOW_SIZE - 4, 4)).toBe(0);
    expect(transport.controller.violations.count('CONFIG_ACCESS_OUT_OF_RANGE')).toBe(2);
    expect(transport.violations.count()).toBe(0);
  });

  it('bumps ConfigGeneration on each device change and interrupts once DRIVER_OK is set', async () => {
    const before = read(R.CONFIG_GENERATION);
    device.config.setU32(0, 42);
    expect(read(R.CONFIG_GENERATION)).toBe(before + 1);
    expect(read(R.INTERRUPT_STATUS)).toBe(0); // driver not live yet: no interrupt
    device.config.setU32(0, 42); // same bytes: no change, no bump
    expect(read(R.CONFIG_GENERATION)).toBe(before + 1);
    await bringUp();
    device.config.setU32(4, 43);
    expect(read(R.CONFIG_GENERATION)).toBe(before + 2);
    expect(read(R.INTERRUPT_STATUS)).toBe(2);
    expect(line.level).toBe(true);
    // A driver write to the config space is not a device change.
    write(R.CONFIG + 8, 5);
    expect(read(R.CONFIG_GENERATION)).toBe(before + 2);
  });
});

describe('hostile register accesses', () => {
  const cases: [string, number, number][] = [
    ['a byte read of Status', R.STATUS, 1],
    ['a 16-bit read of Status', R.STATUS, 2],
    ['a 64-bit read of QueueDescLow/High', R.QUEUE_DESC_LOW, 8],
    ['a misaligned 32-bit read', R.STATUS + 2, 4],
    ['a 3-byte read', R.MAGIC_VALUE, 3],
    ['an empty read', R.STATUS, 0],
    ['a register that does not exist', 0x018, 4],
    ['legacy GuestPageSize', 0x028, 4],
    ['legacy QueuePFN', 0x040, 4],
    ['QueueReset (RING_RESET not offered)', R.QUEUE_RESET, 4],
    ['a 64-bit config access', R.CONFIG, 8],
    ['a misaligned 16-bit config access', R.CONFIG + 1, 2],
    ['a 32-bit config access at a 16-bit boundary', R.CONFIG + 2, 4],
    ['a 32-bit config access at an odd offset', R.CONFIG + 5, 4],
    ['a config access crossing the end of the window', MMIO_WINDOW_SIZE - 2, 4],
    ['an access beyond the window', MMIO_WINDOW_SIZE, 1],
    ['a negative offset', -4, 4],
    ['a fractional offset', 0.5, 4],
  ];

  it.each(cases)('reads 0 for %s and counts it', (_, offset, width) => {
    expect(read(offset, width)).toBe(0);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });

  it.each(cases)('ignores a write as %s and counts it', async (_, offset, width) => {
    await bringUp();
    const status = read(R.STATUS);
    transport.write(offset, new Uint8Array(width).fill(0xff));
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
    expect(read(R.STATUS)).toBe(status);
    expect(transport.controller.queue(0)).toMatchObject({ size: 64, ready: true });
    expect(device.resets).toBe(0);
  });

  it.each([
    ['DeviceFeaturesSel', R.DEVICE_FEATURES_SEL],
    ['DriverFeatures', R.DRIVER_FEATURES],
    ['DriverFeaturesSel', R.DRIVER_FEATURES_SEL],
    ['QueueSel', R.QUEUE_SEL],
    ['QueueNum', R.QUEUE_NUM],
    ['QueueNotify', R.QUEUE_NOTIFY],
    ['InterruptACK', R.INTERRUPT_ACK],
    ['QueueDescLow', R.QUEUE_DESC_LOW],
    ['QueueDriverHigh', R.QUEUE_DRIVER_HIGH],
    ['QueueDeviceLow', R.QUEUE_DEVICE_LOW],
    ['SHMSel', R.SHM_SEL],
  ])('reads 0 from write-only %s and counts it', (_, offset) => {
    write(offset === R.QUEUE_NOTIFY ? R.QUEUE_SEL : offset, 5);
    expect(read(offset)).toBe(0);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });

  it.each([
    ['MagicValue', R.MAGIC_VALUE],
    ['Version', R.VERSION],
    ['DeviceID', R.DEVICE_ID],
    ['VendorID', R.VENDOR_ID],
    ['DeviceFeatures', R.DEVICE_FEATURES],
    ['QueueNumMax', R.QUEUE_NUM_MAX],
    ['SHMLenLow', R.SHM_LEN_LOW],
    ['SHMBaseHigh', R.SHM_BASE_HIGH],
    ['ConfigGeneration', R.CONFIG_GENERATION],
  ])('ignores a write to read-only %s and counts it', (_, offset) => {
    const before = read(offset);
    write(offset, 0x1234_5678);
    expect(read(offset)).toBe(before);
    expect(transport.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
  });

  it('counts exactly one violation per bad access and reports it through log', () => {
    const messages: string[] = [];
    const logged = create({ log: (message) => messages.push(message) });
    logged.read(R.STATUS, new Uint8Array(2));
    logged.write(0x018, new Uint8Array(4));
    logged.read(R.QUEUE_SEL, new Uint8Array(4));
    expect(logged.violations.count()).toBe(3);
    expect(logged.violations.toJSON()).toEqual({ REGISTER_ACCESS_INVALID: 3 });
    expect(messages).toEqual([
      'driver read 2 bytes at offset 0x70; registers take aligned 32-bit accesses',
      'driver wrote register 0x18, which is not writable',
      'driver read register 0x30, which is not readable',
    ]);
  });
});

describe('notifications', () => {
  it('passes the queue index written to QueueNotify to the device', async () => {
    await bringUp();
    write(R.QUEUE_NOTIFY, 1);
    write(R.QUEUE_NOTIFY, 0);
    expect(device.notified).toEqual([1, 0]);
  });

  it('ignores (and the controller counts) a notification for a queue that does not exist', async () => {
    await bringUp();
    write(R.QUEUE_NOTIFY, 9);
    expect(device.notified).toEqual([]);
    expect(transport.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(1);
  });

  it('ignores a notification before DRIVER_OK', () => {
    negotiate();
    write(R.QUEUE_NOTIFY, 0);
    expect(device.notified).toEqual([]);
    expect(transport.controller.violations.count('NOTIFY_BEFORE_DRIVER_OK')).toBe(1);
  });

  it('gives an ioeventfd address per queue and delivers eventfd notifications the same way', async () => {
    expect(transport.notifyAddress(0)).toEqual({ offset: 0x50, datamatch: 0, width: 4 });
    expect(transport.notifyAddresses()).toEqual([
      { offset: 0x50, datamatch: 0, width: 4 },
      { offset: 0x50, datamatch: 1, width: 4 },
    ]);
    expect(() => transport.notifyAddress(2)).toThrow(MmioTransportError);
    await bringUp();
    transport.notifyQueue(1);
    expect(device.notified).toEqual([1]);
    transport.notifyQueue(5);
    expect(device.notified).toEqual([1]);
    expect(transport.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(1);
  });

  it('takes the index from bits 0-15 once NOTIFICATION_DATA is negotiated', async () => {
    device.features |= featureBit(Feature.NOTIFICATION_DATA);
    transport = create();
    negotiate(featureBit(Feature.VERSION_1) | featureBit(Feature.NOTIFICATION_DATA));
    setUpQueue(0, 64);
    setUpQueue(1, 16);
    write(R.STATUS, LIVE);
    await transport.settled();
    write(R.QUEUE_NOTIFY, (5 << 16) | 1);
    expect(device.notified).toEqual([1]);
  });

  it('does not mask the value when NOTIFICATION_DATA is not negotiated', async () => {
    await bringUp();
    write(R.QUEUE_NOTIFY, (5 << 16) | 1);
    expect(device.notified).toEqual([]);
    expect(transport.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(1);
  });
});
