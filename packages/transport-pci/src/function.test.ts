import {
  type BusDevice,
  DeviceStatus,
  DeviceType,
  Feature,
  featureBit,
  SplitDriverQueue,
  VIRTIO_MSI_NO_VECTOR,
  type VirtioDevice,
} from '@virtkit/core';
import { createTestMemory } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import {
  CommonCfg,
  MsixCap,
  PciCommand,
  PciConfig,
  PciStatus,
  VirtioPciCap,
  VirtioPciCapType,
} from './constants.js';
import { VirtioPciFunction, type VirtioPciFunctionOptions } from './function.js';
import { FIRECRACKER_LAYOUT } from './layout.js';
import { busRead, busWrite, EchoDevice } from './test-fixtures.js';

const S = DeviceStatus;

function setup(options: Partial<VirtioPciFunctionOptions> = {}, device = new EchoDevice()) {
  const guest = createTestMemory({ size: 1 << 20 });
  const levels: boolean[] = [];
  const messages: [bigint, number, number][] = [];
  const fn = new VirtioPciFunction(device, {
    memory: guest.memory,
    interrupt: { setLevel: (level) => levels.push(level) },
    msi: { signal: (address, data, vector) => messages.push([address, data, vector]) },
    ...options,
  });
  const config: BusDevice = {
    read: (offset, data) => fn.config.read(offset, data),
    write: (offset, data) => fn.config.write(offset, data),
  };
  const bar = fn.barDevice();
  const common = (offset: number) => fn.layout.common.offset + offset;
  return { guest, fn, device, config, bar, common, levels, messages };
}

type Setup = ReturnType<typeof setup>;

/** Linux's initialization over the common configuration (virtio_pci_modern.c). */
async function initialize(t: Setup, queues = 2): Promise<SplitDriverQueue<number>[]> {
  const { bar, common, fn } = t;
  busWrite(bar, common(CommonCfg.DEVICE_STATUS), 1, 0);
  await fn.settled();
  busWrite(bar, common(CommonCfg.DEVICE_STATUS), 1, S.ACKNOWLEDGE);
  busWrite(bar, common(CommonCfg.DEVICE_STATUS), 1, S.ACKNOWLEDGE | S.DRIVER);
  busWrite(bar, common(CommonCfg.DEVICE_FEATURE_SELECT), 4, 1);
  const high = busRead(bar, common(CommonCfg.DEVICE_FEATURE), 4);
  busWrite(bar, common(CommonCfg.DRIVER_FEATURE_SELECT), 4, 0);
  busWrite(bar, common(CommonCfg.DRIVER_FEATURE), 4, 0);
  busWrite(bar, common(CommonCfg.DRIVER_FEATURE_SELECT), 4, 1);
  busWrite(bar, common(CommonCfg.DRIVER_FEATURE), 4, high & 1); // VERSION_1 only
  busWrite(bar, common(CommonCfg.DEVICE_STATUS), 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  expect(busRead(bar, common(CommonCfg.DEVICE_STATUS), 1) & S.FEATURES_OK).toBe(S.FEATURES_OK);
  const result: SplitDriverQueue<number>[] = [];
  for (let index = 0; index < queues; index++) {
    const queue = new SplitDriverQueue<number>(t.guest.memory, {
      index,
      size: 8,
      eventIdx: false,
      indirect: false,
      allocate: (size, align) => t.guest.allocate(size, align),
    });
    busWrite(bar, common(CommonCfg.QUEUE_SELECT), 2, index);
    busWrite(bar, common(CommonCfg.QUEUE_SIZE), 2, 8);
    for (const [offset, address] of [
      [CommonCfg.QUEUE_DESC_LO, queue.descAddr],
      [CommonCfg.QUEUE_DRIVER_LO, queue.driverAddr],
      [CommonCfg.QUEUE_DEVICE_LO, queue.deviceAddr],
    ] as const) {
      busWrite(bar, common(offset), 4, address % 2 ** 32);
      busWrite(bar, common(offset + 4), 4, Math.floor(address / 2 ** 32));
    }
    busWrite(bar, common(CommonCfg.QUEUE_ENABLE), 2, 1);
    result.push(queue);
  }
  busWrite(
    bar,
    common(CommonCfg.DEVICE_STATUS),
    1,
    S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK,
  );
  await t.fn.settled();
  return result;
}

/** Posts "abc" on `queue` and notifies through the notify structure. */
function kick(t: Setup, queue: SplitDriverQueue<number>, token = 1): void {
  const input = t.guest.allocate(3);
  t.guest.memory.write(input, new Uint8Array([0x61, 0x62, 0x63]));
  const output = t.guest.allocate(3);
  queue.add([{ addr: input, len: 3 }], [{ addr: output, len: 3 }], token);
  queue.publish();
  const notify = t.fn.notifyAddress(queue.index);
  busWrite(t.bar, notify.offset, 2, queue.index);
}

/** Walks the capability list like Linux's pci_find_capability / virtio_pci_find_capability. */
function walkVirtioCaps(config: BusDevice): Map<number, number> {
  const found = new Map<number, number>();
  let guard = 0;
  for (let at = busRead(config, PciConfig.CAPABILITY_LIST, 1) & ~3; at && guard++ < 48; ) {
    if (busRead(config, at, 1) === 0x09) {
      const type = busRead(config, at + VirtioPciCap.CFG_TYPE, 1);
      if (!found.has(type)) found.set(type, at);
    }
    at = busRead(config, at + 1, 1) & ~3;
  }
  return found;
}

describe('VirtioPciFunction identity', () => {
  it('is a modern virtio function with the class of its device type', () => {
    const { config } = setup();
    expect(busRead(config, PciConfig.VENDOR_ID, 2)).toBe(0x1af4);
    expect(busRead(config, PciConfig.DEVICE_ID, 2)).toBe(0x1040 + DeviceType.ENTROPY);
    expect(busRead(config, PciConfig.REVISION_ID, 1)).toBe(1);
    expect(busRead(config, PciConfig.CLASS_PROG, 3)).toBe(0xff_00_00);
    expect(busRead(config, PciConfig.SUBSYSTEM_VENDOR_ID, 2)).toBe(0x1af4);
    expect(busRead(config, PciConfig.SUBSYSTEM_ID, 2)).toBe(0x1044);
    expect(busRead(config, PciConfig.INTERRUPT_PIN, 1)).toBe(1);
    expect(busRead(config, PciConfig.HEADER_TYPE, 1)).toBe(0);
    expect(busRead(config, PciConfig.STATUS, 2) & PciStatus.CAP_LIST).toBe(PciStatus.CAP_LIST);
  });

  it.each([
    [DeviceType.NET, 0x1041, 0x02_00_00],
    [DeviceType.BLOCK, 0x1042, 0x01_80_00],
    [DeviceType.CONSOLE, 0x1043, 0x07_80_00],
    [DeviceType.VSOCK, 0x1053, 0xff_00_00],
  ])('device type %i is device ID %s with class %s', (type, deviceId, classCode) => {
    const device: VirtioDevice = {
      deviceType: type,
      features: 0n,
      queues: [{ maxSize: 4 }],
      activate() {},
      queueNotify() {},
      reset() {},
    };
    const { config } = setup({}, device as EchoDevice);
    expect(busRead(config, PciConfig.DEVICE_ID, 2)).toBe(deviceId);
    expect(busRead(config, PciConfig.CLASS_PROG, 3)).toBe(classCode);
  });

  it.each([
    [Feature.SR_IOV, 'SR_IOV'],
    [Feature.NOTIF_CONFIG_DATA, 'NOTIF_CONFIG_DATA'],
    [Feature.RING_RESET, 'RING_RESET'],
    [Feature.ADMIN_VQ, 'ADMIN_VQ'],
  ])('refuses feature %i (%s), whose registers it lacks', (bit, name) => {
    // NOTIF_CONFIG_DATA, RING_RESET and ADMIN_VQ need common config fields past 0x38
    // (queue_notify_data, queue_reset, admin_queue_*): Linux checks common_len for them.
    const device = new EchoDevice();
    Object.defineProperty(device, 'features', { value: featureBit(bit) });
    expect(() => setup({}, device)).toThrow(new RegExp(name));
  });
});

describe('capabilities and BAR', () => {
  it('chains every virtio structure, found the way Linux looks for them', () => {
    const { config, fn } = setup();
    const caps = walkVirtioCaps(config);
    expect([...caps.keys()].sort()).toEqual([1, 2, 3, 4, 5]);
    const describe = (type: number) => {
      const at = caps.get(type)!;
      return {
        len: busRead(config, at + VirtioPciCap.LEN, 1),
        bar: busRead(config, at + VirtioPciCap.BAR, 1),
        offset: busRead(config, at + VirtioPciCap.OFFSET, 4),
        length: busRead(config, at + VirtioPciCap.LENGTH, 4),
      };
    };
    expect(describe(VirtioPciCapType.COMMON_CFG)).toEqual({
      len: 16,
      bar: 0,
      offset: 0,
      length: 0x38,
    });
    expect(describe(VirtioPciCapType.ISR_CFG)).toEqual({
      len: 16,
      bar: 0,
      offset: 0x2000,
      length: 1,
    });
    expect(describe(VirtioPciCapType.DEVICE_CFG)).toEqual({
      len: 16,
      bar: 0,
      offset: 0x4000,
      length: 8,
    });
    // Two queues, 4 bytes apart, room for a 32-bit write at the last.
    expect(describe(VirtioPciCapType.NOTIFY_CFG)).toEqual({
      len: 20,
      bar: 0,
      offset: 0x6000,
      length: 8,
    });
    const notify = caps.get(VirtioPciCapType.NOTIFY_CFG)!;
    expect(busRead(config, notify + VirtioPciCap.NOTIFY_OFF_MULTIPLIER, 4)).toBe(4);
    expect(describe(VirtioPciCapType.PCI_CFG).len).toBe(20);
    // MSI-X: 3 vectors (2 queues + config), table and PBA in BAR 0 (BIR 0).
    const msix = fn.capabilityOffsets.msix!;
    expect(busRead(config, msix, 1)).toBe(0x11);
    expect(busRead(config, msix + MsixCap.CONTROL, 2)).toBe(2);
    expect(busRead(config, msix + MsixCap.TABLE, 4)).toBe(0x8000);
    expect(busRead(config, msix + MsixCap.PBA, 4)).toBe(0x4_8000);
  });

  it('sizes its 64-bit BAR at 512 KiB with the Firecracker layout', () => {
    const { config } = setup();
    expect(busRead(config, 0x10, 4)).toBe(0xc);
    busWrite(config, 0x10, 4, 0xffff_ffff);
    busWrite(config, 0x14, 4, 0xffff_ffff);
    expect(busRead(config, 0x10, 4)).toBe(0xfff8_000c);
    expect(busRead(config, 0x14, 4)).toBe(0xffff_ffff);
  });

  it('can use a compact layout in a 32-bit BAR', () => {
    const { config, fn } = setup({
      layout: 'compact',
      bar64: false,
      prefetchable: false,
      barIndex: 2,
    });
    // common, ISR, device, notify, table, PBA: six pages -> 32 KiB.
    expect(fn.layout.barSize).toBe(0x8000);
    busWrite(config, 0x18, 4, 0xffff_ffff);
    expect(busRead(config, 0x18, 4)).toBe(0xffff_8000);
    expect(busRead(config, 0x10, 4)).toBe(0);
    const caps = walkVirtioCaps(config);
    expect(busRead(config, caps.get(VirtioPciCapType.COMMON_CFG)! + VirtioPciCap.BAR, 1)).toBe(2);
  });

  it('leaves MSI-X out when asked for no vectors', () => {
    const { fn, config } = setup({ msixVectors: 0 });
    expect(fn.msix).toBeUndefined();
    const ids: number[] = [];
    for (
      let at = busRead(config, PciConfig.CAPABILITY_LIST, 1);
      at;
      at = busRead(config, at + 1, 1)
    ) {
      ids.push(busRead(config, at, 1));
    }
    expect(ids).not.toContain(0x11);
  });

  it('refuses a layout that does not hold the device', () => {
    expect(() =>
      setup({ layout: { ...FIRECRACKER_LAYOUT, isr: { offset: 0x100, size: 0x100 } } }),
    ).toThrow(/overlap/);
    expect(() => setup({ notifyOffMultiplier: 3 })).toThrow(/power of two/);
  });
});

describe('common configuration', () => {
  it('reads features, queue counts and queue registers', () => {
    const { bar, common } = setup();
    busWrite(bar, common(CommonCfg.DEVICE_FEATURE_SELECT), 4, 1);
    // VERSION_1 (bit 32) and RING_PACKED (bit 34).
    expect(busRead(bar, common(CommonCfg.DEVICE_FEATURE), 4)).toBe(0b101);
    expect(busRead(bar, common(CommonCfg.NUM_QUEUES), 2)).toBe(2);
    busWrite(bar, common(CommonCfg.QUEUE_SELECT), 2, 1);
    expect(busRead(bar, common(CommonCfg.QUEUE_SIZE), 2)).toBe(16);
    expect(busRead(bar, common(CommonCfg.QUEUE_NOTIFY_OFF), 2)).toBe(1);
    expect(busRead(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    busWrite(bar, common(CommonCfg.QUEUE_DESC_LO), 4, 0x1000);
    busWrite(bar, common(CommonCfg.QUEUE_DESC_HI), 4, 0x2);
    expect(busRead(bar, common(CommonCfg.QUEUE_DESC_LO), 8)).toBe(0x2_0000_1000);
    // A queue that does not exist has size 0 and no vector (§4.1.4.3.2).
    busWrite(bar, common(CommonCfg.QUEUE_SELECT), 2, 7);
    expect(busRead(bar, common(CommonCfg.QUEUE_SIZE), 2)).toBe(0);
    expect(busRead(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2)).toBe(VIRTIO_MSI_NO_VECTOR);
  });

  it('maps vectors inside the table and reads NO_VECTOR back for the others', () => {
    const { bar, common, fn } = setup();
    busWrite(bar, common(CommonCfg.CONFIG_MSIX_VECTOR), 2, 0);
    expect(busRead(bar, common(CommonCfg.CONFIG_MSIX_VECTOR), 2)).toBe(0);
    busWrite(bar, common(CommonCfg.QUEUE_SELECT), 2, 1);
    busWrite(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2, 2);
    expect(busRead(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2)).toBe(2);
    busWrite(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2, 3); // the table has 0-2
    expect(busRead(bar, common(CommonCfg.QUEUE_MSIX_VECTOR), 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    busWrite(bar, common(CommonCfg.CONFIG_MSIX_VECTOR), 2, 0x800);
    expect(fn.configVector).toBe(VIRTIO_MSI_NO_VECTOR);
    // Without MSI-X every mapping fails.
    const plain = setup({ msixVectors: 0 });
    busWrite(plain.bar, plain.common(CommonCfg.CONFIG_MSIX_VECTOR), 2, 0);
    expect(busRead(plain.bar, plain.common(CommonCfg.CONFIG_MSIX_VECTOR), 2)).toBe(
      VIRTIO_MSI_NO_VECTOR,
    );
  });

  it('counts wrong widths, read-only fields and holes without acting on them', () => {
    const { bar, common, fn } = setup();
    const data = new Uint8Array(4).fill(0xaa);
    bar.read(common(CommonCfg.NUM_QUEUES), data); // 16-bit field read as 32
    expect([...data]).toEqual([0, 0, 0, 0]);
    busWrite(bar, common(CommonCfg.DEVICE_STATUS), 2, S.ACKNOWLEDGE); // 8-bit field
    expect(fn.controller.status).toBe(0);
    busWrite(bar, common(CommonCfg.NUM_QUEUES), 2, 9);
    expect(busRead(bar, common(CommonCfg.NUM_QUEUES), 2)).toBe(2);
    busWrite(bar, common(CommonCfg.QUEUE_ENABLE), 2, 2);
    expect(busRead(bar, 0x1000, 4)).toBe(0); // reserved rest of the common region
    expect(busRead(bar, 0x7000, 4)).toBe(0); // past the notify structure
    bar.read(0, new Uint8Array(3)); // odd width
    bar.write(0x8_0000 - 2, new Uint8Array(4)); // runs past the BAR
    busWrite(bar, 0x2000, 1, 0xff); // ISR is read-only
    bar.read(0x4000, new Uint8Array(8)); // device config takes up to 32 bits
    expect(fn.violations.count('REGISTER_ACCESS_INVALID')).toBe(10);
    expect(fn.controller.queue(0)?.ready).toBe(false);
  });

  it('takes device configuration accesses aligned to their width only (§4.1.3.1)', () => {
    const { bar, device, fn } = setup();
    expect(busRead(bar, 0x4000, 2)).toBe(0xffee);
    expect(busRead(bar, 0x4002, 2)).toBe(0xc0);
    expect(busRead(bar, 0x4001, 1)).toBe(0xff);
    expect(fn.violations.count()).toBe(0);
    expect(busRead(bar, 0x4001, 2)).toBe(0);
    expect(busRead(bar, 0x4002, 4)).toBe(0);
    busWrite(bar, 0x4005, 2, 0xffff);
    busWrite(bar, 0x4006, 4, 0xffff_ffff);
    expect(device.config.getU32(4)).toBe(0);
    expect(fn.violations.count('REGISTER_ACCESS_INVALID')).toBe(4);
    expect(fn.controller.violations.count()).toBe(0);
  });

  it('passes device configuration through with its generation', () => {
    const { bar, device, fn } = setup();
    expect(busRead(bar, 0x4000, 4)).toBe(0xc0ffee);
    busWrite(bar, 0x4004, 4, 0x1234);
    expect(device.config.getU32(4)).toBe(0x1234);
    busWrite(bar, 0x4000, 4, 1); // read-only field
    expect(fn.controller.violations.count('CONFIG_WRITE_READ_ONLY')).toBe(1);
    const before = busRead(bar, CommonCfg.CONFIG_GENERATION, 1);
    device.changeConfig(5);
    expect(busRead(bar, CommonCfg.CONFIG_GENERATION, 1)).toBe((before + 1) & 0xff);
  });

  it('reaches the BAR through the PCI configuration access capability', () => {
    const { config, fn } = setup();
    const cap = fn.capabilityOffsets.pciCfg;
    busWrite(config, cap + VirtioPciCap.BAR, 1, 0);
    busWrite(config, cap + VirtioPciCap.OFFSET, 4, CommonCfg.NUM_QUEUES);
    busWrite(config, cap + VirtioPciCap.LENGTH, 4, 2);
    // The BAR is not decoding (command register 0): the window works regardless.
    expect(fn.config.command & PciCommand.MEMORY_SPACE).toBe(0);
    expect(busRead(config, cap + VirtioPciCap.PCI_CFG_DATA, 4) & 0xffff).toBe(2);
    busWrite(config, cap + VirtioPciCap.OFFSET, 4, CommonCfg.DEVICE_STATUS);
    busWrite(config, cap + VirtioPciCap.LENGTH, 4, 1);
    busWrite(config, cap + VirtioPciCap.PCI_CFG_DATA, 4, S.ACKNOWLEDGE);
    expect(fn.controller.status).toBe(S.ACKNOWLEDGE);
    // Misaligned for its length: ignored and counted.
    busWrite(config, cap + VirtioPciCap.OFFSET, 4, 0x13);
    busWrite(config, cap + VirtioPciCap.LENGTH, 4, 2);
    busRead(config, cap + VirtioPciCap.PCI_CFG_DATA, 4);
    busWrite(config, cap + VirtioPciCap.BAR, 1, 3);
    busRead(config, cap + VirtioPciCap.PCI_CFG_DATA, 4);
    expect(fn.violations.count('PCI_CFG_ACCESS_INVALID')).toBe(2);
    // Its type and length fields are read-only.
    busWrite(config, cap + VirtioPciCap.CFG_TYPE, 1, 1);
    expect(busRead(config, cap + VirtioPciCap.CFG_TYPE, 1)).toBe(5);
    expect(fn.violations.count('CONFIG_WRITE_READ_ONLY')).toBe(1);
  });
});

describe('PCI configuration access capability and the ISR', () => {
  it('reads (and so clears) the ISR through the window, as a BAR read would', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    kick(t, queue0!);
    expect(t.fn.interruptAsserted).toBe(true);
    const cap = t.fn.capabilityOffsets.pciCfg;
    busWrite(t.config, cap + VirtioPciCap.BAR, 1, t.fn.barIndex);
    busWrite(t.config, cap + VirtioPciCap.OFFSET, 4, t.fn.layout.isr.offset);
    busWrite(t.config, cap + VirtioPciCap.LENGTH, 4, 1);
    expect(busRead(t.config, cap + VirtioPciCap.PCI_CFG_DATA, 1)).toBe(1);
    expect(t.fn.isrStatus).toBe(0);
    expect(t.fn.interruptAsserted).toBe(false);
    expect(t.levels).toEqual([true, false]);
    // Offsets past the BAR are refused, whatever the length.
    busWrite(t.config, cap + VirtioPciCap.OFFSET, 4, t.fn.layout.barSize);
    busRead(t.config, cap + VirtioPciCap.PCI_CFG_DATA, 4);
    expect(t.fn.violations.count('PCI_CFG_ACCESS_INVALID')).toBe(1);
  });
});

describe('INTx and ISR', () => {
  it('raises INTx with ISR bit 0 for used buffers and drops it when ISR is read', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    kick(t, queue0!);
    expect(queue0!.takeUsed()).toEqual({ token: 1, len: 3 });
    expect(t.levels).toEqual([true]);
    expect(t.fn.interruptAsserted).toBe(true);
    expect(busRead(t.config, PciConfig.STATUS, 2) & PciStatus.INTERRUPT).toBe(PciStatus.INTERRUPT);
    expect(busRead(t.bar, 0x2000, 1)).toBe(1);
    expect(t.levels).toEqual([true, false]);
    expect(busRead(t.bar, 0x2000, 1)).toBe(0);
    expect(busRead(t.config, PciConfig.STATUS, 2) & PciStatus.INTERRUPT).toBe(0);
    expect(t.messages).toEqual([]);
  });

  it('sets ISR bit 1 for a configuration change', async () => {
    const t = setup();
    await initialize(t);
    t.device.changeConfig(9);
    expect(t.levels).toEqual([true]);
    expect(busRead(t.bar, 0x2000, 1)).toBe(2);
  });

  it('honours the command register INTx disable bit', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    busWrite(t.config, PciConfig.COMMAND, 2, PciCommand.INTX_DISABLE | PciCommand.MEMORY_SPACE);
    kick(t, queue0!);
    expect(t.levels).toEqual([]);
    // The status bit still says an interrupt is pending (PCI 3.0 §6.2.3).
    expect(busRead(t.config, PciConfig.STATUS, 2) & PciStatus.INTERRUPT).toBe(PciStatus.INTERRUPT);
    busWrite(t.config, PciConfig.COMMAND, 2, PciCommand.MEMORY_SPACE);
    expect(t.levels).toEqual([true]);
    busWrite(t.config, PciConfig.COMMAND, 2, PciCommand.INTX_DISABLE);
    expect(t.levels).toEqual([true, false]);
  });

  it('clears ISR and vectors on reset', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    busWrite(t.bar, CommonCfg.CONFIG_MSIX_VECTOR, 2, 0);
    kick(t, queue0!);
    busWrite(t.bar, CommonCfg.DEVICE_STATUS, 1, 0);
    await t.fn.settled();
    expect(t.fn.isrStatus).toBe(0);
    expect(t.levels).toEqual([true, false]);
    expect(t.fn.configVector).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(busRead(t.bar, CommonCfg.DEVICE_STATUS, 1)).toBe(0);
    expect(t.device.resets).toBe(1);
  });
});

describe('MSI-X', () => {
  /** Enables MSI-X like Linux's msix_capability_init: enable + mask all, program, unmask. */
  function enableMsix(t: Setup, vectors: number[]): void {
    const control = t.fn.capabilityOffsets.msix! + MsixCap.CONTROL;
    busWrite(t.config, control, 2, MsixCap.CONTROL_ENABLE | MsixCap.CONTROL_MASK_ALL);
    for (const vector of vectors) {
      const entry = t.fn.layout.msixTable.offset + vector * 16;
      busWrite(t.bar, entry, 4, 0xfee0_0000 + vector * 0x1000);
      busWrite(t.bar, entry + 4, 4, 0);
      busWrite(t.bar, entry + 8, 4, 0x40 + vector);
      busWrite(t.bar, entry + 12, 4, 0);
    }
    busWrite(t.config, control, 2, MsixCap.CONTROL_ENABLE);
  }

  it('sends each queue and config event to its vector and never uses INTx', async () => {
    const t = setup();
    const [queue0, queue1] = await initialize(t);
    enableMsix(t, [0, 1, 2]);
    busWrite(t.bar, CommonCfg.CONFIG_MSIX_VECTOR, 2, 0);
    for (const index of [0, 1]) {
      busWrite(t.bar, CommonCfg.QUEUE_SELECT, 2, index);
      busWrite(t.bar, CommonCfg.QUEUE_MSIX_VECTOR, 2, index + 1);
    }
    kick(t, queue1!);
    kick(t, queue0!, 2);
    t.device.changeConfig(3);
    expect(t.messages).toEqual([
      [0xfee0_2000n, 0x42, 2],
      [0xfee0_1000n, 0x41, 1],
      [0xfee0_0000n, 0x40, 0],
    ]);
    expect(t.levels).toEqual([]);
    // The config bit is still set in ISR (§4.1.4.5.2); the queue bit is not.
    expect(t.fn.isrStatus).toBe(2);
  });

  it('holds a masked vector pending and delivers it on unmask', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    enableMsix(t, [1]);
    busWrite(t.bar, CommonCfg.QUEUE_SELECT, 2, 0);
    busWrite(t.bar, CommonCfg.QUEUE_MSIX_VECTOR, 2, 1);
    const entry = t.fn.layout.msixTable.offset + 16;
    busWrite(t.bar, entry + 12, 4, 1);
    kick(t, queue0!);
    expect(t.messages).toEqual([]);
    expect(busRead(t.bar, t.fn.layout.msixPba.offset, 4)).toBe(0b10);
    busWrite(t.bar, entry + 12, 4, 0);
    expect(t.messages).toEqual([[0xfee0_1000n, 0x41, 1]]);
    expect(busRead(t.bar, t.fn.layout.msixPba.offset, 8)).toBe(0);
  });

  it('drops events of a queue mapped to NO_VECTOR', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    enableMsix(t, [0, 1, 2]);
    kick(t, queue0!);
    expect(queue0!.takeUsed()).toEqual({ token: 1, len: 3 });
    expect(t.messages).toEqual([]);
    expect(t.levels).toEqual([]);
    // Nothing is left behind for INTx to deliver if MSI-X is turned off later.
    expect(t.fn.isrStatus).toBe(0);
  });

  it('falls back to INTx when MSI-X is disabled again', async () => {
    const t = setup();
    const [queue0] = await initialize(t);
    enableMsix(t, [0]);
    t.device.changeConfig(1); // config vector NO_VECTOR: ISR bit 1 only
    expect(t.levels).toEqual([]);
    busWrite(t.config, t.fn.capabilityOffsets.msix! + MsixCap.CONTROL, 2, 0);
    expect(t.levels).toEqual([true]);
    expect(busRead(t.bar, 0x2000, 1)).toBe(2);
    kick(t, queue0!);
    expect(t.levels).toEqual([true, false, true]);
  });

  it('ignores table accesses beyond the table and reads them as 0', () => {
    const t = setup();
    const beyond = t.fn.layout.msixTable.offset + 3 * 16;
    busWrite(t.bar, beyond, 4, 0x1234);
    expect(busRead(t.bar, beyond, 4)).toBe(0);
    expect(t.fn.violations.count('MSIX_ACCESS_INVALID')).toBe(2);
  });
});

describe('notifications', () => {
  it('tells a VMM where each queue is notified', () => {
    const t = setup();
    expect(t.fn.notifyAddresses()).toEqual([
      { queue: 0, bar: 0, offset: 0x6000, address: undefined, width: 2, datamatch: 0 },
      { queue: 1, bar: 0, offset: 0x6004, address: undefined, width: 2, datamatch: 1 },
    ]);
    t.fn.config.setBarAddress(0, 0x1_0000_0000);
    t.fn.config.setCommand(PciCommand.MEMORY_SPACE);
    expect(t.fn.notifyAddress(1).address).toBe(0x1_0000_6004);
    expect(() => t.fn.notifyAddress(2)).toThrow(/no queue 2/);
  });

  it('delivers a notification that arrived through an ioeventfd like a write', async () => {
    const t = setup();
    const [, queue1] = await initialize(t);
    const input = t.guest.allocate(2);
    const output = t.guest.allocate(2);
    queue1!.add([{ addr: input, len: 2 }], [{ addr: output, len: 2 }], 9);
    queue1!.publish();
    t.fn.notifyQueue(1);
    expect(queue1!.takeUsed()).toEqual({ token: 9, len: 2 });
    expect(t.levels).toEqual([true]);
    t.fn.notifyQueue(2);
    expect(t.fn.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(1);
    expect(t.fn.violations.count()).toBe(0);
  });

  it('finds the queue from the value with a multiplier of 0', async () => {
    const t = setup({ notifyOffMultiplier: 0 });
    const [, queue1] = await initialize(t);
    const input = t.guest.allocate(1);
    const output = t.guest.allocate(1);
    queue1!.add([{ addr: input, len: 1 }], [{ addr: output, len: 1 }], 5);
    queue1!.publish();
    busWrite(t.bar, 0x6000, 2, 1);
    expect(queue1!.takeUsed()).toEqual({ token: 5, len: 1 });
  });

  it('counts notifications between queue addresses', async () => {
    const t = setup();
    await initialize(t);
    busWrite(t.bar, 0x6002, 2, 0);
    busWrite(t.bar, 0x6000, 1, 0);
    expect(t.fn.violations.count('REGISTER_ACCESS_INVALID')).toBe(2);
  });
});
