import { type BusDevice, VIRTIO_MSI_NO_VECTOR } from '@virtkit/core';
import { createTestMemory } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { PciWindowAllocator } from './allocator.js';
import { PciConfiguration, type PciFunction } from './configuration.js';
import { CommonCfg, MsixCap, PciCommand, PciConfig } from './constants.js';
import { VirtioPciFunction } from './function.js';
import { type PciBarChange, PciRoot, type PciRootOptions } from './root.js';
import { busRead, busWrite, EchoDevice } from './test-fixtures.js';

const MEM32 = { base: 0x4000_0000, size: 0x1000_0000 };
const MEM64 = { base: 0x1_0000_0000, size: 0x1_0000_0000 };

function virtio(options: Partial<ConstructorParameters<typeof VirtioPciFunction>[1]> = {}) {
  const guest = createTestMemory({ size: 1 << 20 });
  return new VirtioPciFunction(new EchoDevice(), { memory: guest.memory, ...options });
}

function makeRoot(options: PciRootOptions = {}) {
  const levels: [number, boolean][] = [];
  const root = new PciRoot({
    mem32: MEM32,
    mem64: MEM64,
    io: { base: 0xc000, size: 0x1000 },
    intx: [0, 1, 2, 3].map((i) => ({
      line: { setLevel: (l: boolean) => levels.push([i, l]) },
      irq: 32 + i,
    })),
    ...options,
  });
  return { root, levels };
}

/** Port I/O through the 8-port conf1 device, as `outl`/`inb` would do it. */
function port(device: BusDevice) {
  const at = (p: number) => p - 0xcf8;
  return {
    outb: (value: number, p: number) => busWrite(device, at(p), 1, value),
    outw: (value: number, p: number) => busWrite(device, at(p), 2, value),
    outl: (value: number, p: number) => busWrite(device, at(p), 4, value),
    inb: (p: number) => busRead(device, at(p), 1),
    inw: (p: number) => busRead(device, at(p), 2),
    inl: (p: number) => busRead(device, at(p), 4),
  };
}

/** Linux's pci_conf1_read (arch/x86/pci/direct.c). */
function conf1Read(root: PciRoot, bus: number, devfn: number, reg: number, len: 1 | 2 | 4): number {
  const io = port(root.conf1);
  io.outl(0x8000_0000 | (bus << 16) | (devfn << 8) | (reg & ~3), 0xcf8);
  if (len === 1) return io.inb(0xcfc + (reg & 3));
  if (len === 2) return io.inw(0xcfc + (reg & 2));
  return io.inl(0xcfc);
}

function conf1Write(
  root: PciRoot,
  bus: number,
  devfn: number,
  reg: number,
  len: 1 | 2 | 4,
  value: number,
) {
  const io = port(root.conf1);
  io.outl(0x8000_0000 | (bus << 16) | (devfn << 8) | (reg & ~3), 0xcf8);
  if (len === 1) io.outb(value, 0xcfc + (reg & 3));
  else if (len === 2) io.outw(value, 0xcfc + (reg & 2));
  else io.outl(value, 0xcfc);
}

const ecamOffset = (bus: number, device: number, fn: number, reg: number) =>
  (bus << 20) | (device << 15) | (fn << 12) | reg;

describe('config mechanism #1', () => {
  it("passes Linux's pci_check_type1 byte probe", () => {
    const { root } = makeRoot();
    const io = port(root.conf1);
    io.outl(0x8000_0810, 0xcf8); // something left by an earlier access
    io.outb(0x01, 0xcfb); // for old Intel chipsets: must not disturb CONFIG_ADDRESS
    const saved = io.inl(0xcf8);
    expect(saved).toBe(0x8000_0810);
    io.outl(0x8000_0000, 0xcf8);
    expect(io.inl(0xcf8)).toBe(0x8000_0000);
    io.outl(saved, 0xcf8);
    expect(root.conf1.addressRegister).toBe(0x8000_0810);
    // XFree86's probe: reserved bits read 0.
    io.outl(0xffff_ffff, 0xcf8);
    expect(io.inl(0xcf8)).toBe(0x80ff_fffc);
    expect(io.inb(0xcfb)).toBe(0x80);
    expect(root.violations.count()).toBe(0);
  });

  it('reads the host bridge at 00:00.0 and all ones for absent functions and buses', () => {
    const { root } = makeRoot();
    expect(conf1Read(root, 0, 0, PciConfig.VENDOR_ID, 2)).toBe(0x1b36);
    expect(conf1Read(root, 0, 0, PciConfig.CLASS_DEVICE, 2)).toBe(0x0600);
    expect(conf1Read(root, 0, 0, PciConfig.INTERRUPT_PIN, 1)).toBe(0);
    expect(conf1Read(root, 0, 1 << 3, 0, 4)).toBe(0xffff_ffff);
    expect(conf1Read(root, 0, 1, 0, 4)).toBe(0xffff_ffff); // 00:00.1
    expect(conf1Read(root, 1, 0, 0, 4)).toBe(0xffff_ffff);
  });

  it('serves byte and word accesses on each lane of CONFIG_DATA', () => {
    const { root } = makeRoot();
    root.addFunction(3, virtio());
    const devfn = 3 << 3;
    expect(conf1Read(root, 0, devfn, 0, 4)).toBe(0x1044_1af4);
    expect(conf1Read(root, 0, devfn, 1, 1)).toBe(0x1a);
    expect(conf1Read(root, 0, devfn, 2, 2)).toBe(0x1044);
    expect(conf1Read(root, 0, devfn, 3, 1)).toBe(0x10);
    const io = port(root.conf1);
    io.outl(0x8000_0000 | (devfn << 8) | 0, 0xcf8);
    expect(busRead(root.conf1, 5, 2)).toBe((0x1af4 >> 8) | (0x44 << 8)); // word at 0xCFD: reg 1-2
    conf1Write(root, 0, devfn, PciConfig.INTERRUPT_LINE, 1, 7);
    expect(conf1Read(root, 0, devfn, PciConfig.INTERRUPT_LINE, 1)).toBe(7);
  });

  it('reads all ones with the enable bit clear and counts accesses straddling CONFIG_DATA', () => {
    const { root } = makeRoot();
    const io = port(root.conf1);
    io.outl(0x0000_0000, 0xcf8);
    expect(io.inl(0xcfc)).toBe(0xffff_ffff);
    io.outl(0x8000_0000, 0xcf8);
    expect(busRead(root.conf1, 6, 4)).toBe(0xffff_ffff); // 0xCFE-0xD01
    expect(busRead(root.conf1, 3, 2)).toBe(0xffff); // 0xCFB-0xCFC
    root.conf1.read(4, new Uint8Array(3));
    expect(root.violations.count('CONFIG_ACCESS_INVALID')).toBe(3);
  });

  it('maps CONFIG_ADDRESS and CONFIG_DATA as two devices too', () => {
    const { root } = makeRoot();
    busWrite(root.conf1.address, 0, 4, 0x8000_0000 | (PciConfig.CLASS_PROG - 1));
    expect(busRead(root.conf1.data, 2, 2)).toBe(0x0600);
  });
});

describe('ECAM', () => {
  it('gives exactly what conf1 gives, for every function and register', () => {
    const { root } = makeRoot();
    const first = virtio();
    root.addFunction(1, first);
    root.addFunction(2, virtio({ layout: 'compact', bar64: false }));
    root.addFunction(2, virtio({ msixVectors: 0 }), { function: 3 });
    let compared = 0;
    for (let device = 0; device < 32; device++) {
      for (let fn = 0; fn < 8; fn++) {
        for (let reg = 0; reg < 256; reg += 4) {
          const viaEcam = busRead(root.ecam, ecamOffset(0, device, fn, reg), 4);
          expect(viaEcam).toBe(conf1Read(root, 0, (device << 3) | fn, reg, 4));
          compared++;
        }
      }
    }
    expect(compared).toBe(32 * 8 * 64);
    // Dumping configuration space (pci_cfg_data included) is not a driver mistake.
    expect(first.violations.count()).toBe(0);
    expect(root.violations.count()).toBe(0);
    // Narrow reads agree as well.
    for (let reg = 0; reg < 0x40; reg++) {
      expect(busRead(root.ecam, ecamOffset(0, 2, 0, reg), 1)).toBe(
        conf1Read(root, 0, 2 << 3, reg, 1),
      );
    }
  });

  it('sees writes made through conf1 and the other way round', () => {
    const { root } = makeRoot();
    root.addFunction(1, virtio());
    conf1Write(
      root,
      0,
      1 << 3,
      PciConfig.COMMAND,
      2,
      PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER,
    );
    expect(busRead(root.ecam, ecamOffset(0, 1, 0, PciConfig.COMMAND), 2)).toBe(6);
    busWrite(root.ecam, ecamOffset(0, 1, 0, PciConfig.INTERRUPT_LINE), 1, 0x2a);
    expect(conf1Read(root, 0, 1 << 3, PciConfig.INTERRUPT_LINE, 1)).toBe(0x2a);
  });

  it('reads extended space of a present function as 0 and absent ones as all ones', () => {
    const { root } = makeRoot({ ecamBuses: 2 });
    root.addFunction(1, virtio());
    expect(busRead(root.ecam, ecamOffset(0, 1, 0, 0x100), 4)).toBe(0);
    expect(busRead(root.ecam, ecamOffset(0, 5, 0, 0x100), 4)).toBe(0xffff_ffff);
    expect(busRead(root.ecam, ecamOffset(1, 0, 0, 0), 4)).toBe(0xffff_ffff);
  });

  it('counts accesses crossing a dword or of odd widths and reads them as all ones', () => {
    const { root } = makeRoot();
    expect(busRead(root.ecam, ecamOffset(0, 0, 0, 2), 4)).toBe(0xffff_ffff);
    expect(busRead(root.ecam, ecamOffset(0, 0, 0, 0), 8)).toBe(2 ** 64 - 1);
    root.ecam.write(ecamOffset(0, 0, 0, 3), new Uint8Array(2));
    root.ecam.read(root.ecamSize, new Uint8Array(1));
    expect(root.violations.count('CONFIG_ACCESS_INVALID')).toBe(4);
  });

  it('sets the multi-function bit of function 0 when the device has more', () => {
    const { root } = makeRoot();
    root.addFunction(4, virtio());
    expect(conf1Read(root, 0, 4 << 3, PciConfig.HEADER_TYPE, 1)).toBe(0);
    root.addFunction(4, virtio(), { function: 1 });
    expect(conf1Read(root, 0, 4 << 3, PciConfig.HEADER_TYPE, 1)).toBe(0x80);
    expect(conf1Read(root, 0, 4 << 3, PciConfig.CACHE_LINE_SIZE, 4)).toBe(0x0080_0000);
    expect(conf1Read(root, 0, (4 << 3) | 1, PciConfig.HEADER_TYPE, 1)).toBe(0);
  });
});

describe('BAR assignment and routing', () => {
  it('assigns naturally aligned BARs from the windows, 64-bit ones above 4 GiB', () => {
    const { root } = makeRoot();
    root.addFunction(1, virtio());
    root.addFunction(2, virtio({ bar64: false, layout: 'compact' }));
    root.addFunction(3, virtio());
    expect(
      root.barAssignments().map((b) => [b.device, b.kind, b.address, b.size, b.decoding]),
    ).toEqual([
      [1, 'mem64', 0x1_0000_0000, 0x8_0000, false],
      [2, 'mem32', 0x4000_0000, 0x8000, false],
      [3, 'mem64', 0x1_0008_0000, 0x8_0000, false],
    ]);
    // The guest sees the same through config space.
    expect(conf1Read(root, 0, 3 << 3, 0x10, 4)).toBe(0x0008_000c);
    expect(conf1Read(root, 0, 3 << 3, 0x14, 4)).toBe(1);
  });

  it('places 64-bit BARs in the 32-bit window when there is no 64-bit one', () => {
    const root = new PciRoot({ mem32: MEM32 });
    root.addFunction(1, virtio());
    expect(root.barAssignments()[0]?.address).toBe(0x4000_0000);
  });

  it('refuses a taken slot and BARs that do not fit', () => {
    const { root } = makeRoot();
    expect(() => root.addFunction(0, virtio())).toThrow(/already taken/);
    const small = new PciRoot({ mem32: { base: 0x4000_0000, size: 0x4_0000 } });
    expect(() => small.addFunction(1, virtio())).toThrow(/no room/);
    expect(() => root.addFunction(32, virtio())).toThrow(/device number/);
    // Nothing is assigned without windows.
    expect(() => new PciRoot().addFunction(1, virtio())).toThrow(/no room/);
    const unassigned = new PciRoot();
    unassigned.addFunction(1, virtio(), { assign: false });
    expect(unassigned.barAssignments()[0]?.address).toBe(0);
  });

  it('routes accesses to the BAR that decodes them, following what the guest programs', () => {
    const { root } = makeRoot();
    const fn = virtio();
    root.addFunction(1, fn);
    const changes: PciBarChange[] = [];
    root.events.on('bar-change', (change) => changes.push(change));
    const numQueues = 0x1_0000_0000 + CommonCfg.NUM_QUEUES;
    const data = new Uint8Array(2);
    // Memory decoding off: nobody claims the access.
    expect(root.mmioRead(numQueues, data)).toBe(false);
    expect([...data]).toEqual([0xff, 0xff]);
    expect(root.violations.count('UNCLAIMED_ACCESS')).toBe(1);
    conf1Write(root, 0, 1 << 3, PciConfig.COMMAND, 2, PciCommand.MEMORY_SPACE);
    expect(root.mmioRead(numQueues, data)).toBe(true);
    expect(data[0]).toBe(2);
    // The guest moves the BAR (decoding off while it does, as Linux does for 64-bit BARs).
    conf1Write(root, 0, 1 << 3, PciConfig.COMMAND, 2, 0);
    conf1Write(root, 0, 1 << 3, 0x10, 4, 0x4800_0000);
    conf1Write(root, 0, 1 << 3, 0x14, 4, 0);
    conf1Write(root, 0, 1 << 3, PciConfig.COMMAND, 2, PciCommand.MEMORY_SPACE);
    expect(root.mmioRead(numQueues, data)).toBe(false);
    expect(root.mmioRead(0x4800_0000 + CommonCfg.NUM_QUEUES, data)).toBe(true);
    expect(data[0]).toBe(2);
    expect(changes.map((c) => [c.device, c.bar.address, c.bar.decoding])).toEqual([
      [1, 0x1_0000_0000, true],
      [1, 0x1_0000_0000, false],
      [1, 0x1_4800_0000, false],
      [1, 0x4800_0000, false],
      [1, 0x4800_0000, true],
    ]);
    // The window device routes the same way.
    const window = root.windowDevice('mem32');
    expect(busRead(window, 0x0800_0000 + CommonCfg.NUM_QUEUES, 2)).toBe(2);
    expect(root.notifyAddresses()[1]).toMatchObject({ device: 1, queue: 1, address: 0x4800_6004 });
  });

  it('counts a BAR programmed over another and routes to the lower device', () => {
    const { root } = makeRoot({ enableDecode: true });
    const first = virtio();
    const second = virtio();
    root.addFunction(1, first);
    root.addFunction(2, second);
    const overlaps: number[][] = [];
    root.events.on('bar-overlap', (a, b) => overlaps.push([a.device, b.device]));
    // Guest moves device 2's BAR onto device 1's (low half first: a transient address).
    conf1Write(root, 0, 2 << 3, 0x10, 4, 0);
    expect(root.violations.count('BAR_OVERLAP')).toBe(1);
    expect(overlaps).toEqual([[1, 2]]);
    expect(root.overlaps()).toHaveLength(1);
    // Both decode the same range; device 1 wins, every time.
    busWrite(root.windowDevice('mem64'), CommonCfg.DEVICE_STATUS, 1, 1);
    expect(first.controller.status).toBe(1);
    expect(second.controller.status).toBe(0);
    // Reprogramming the same overlap again is the same pair: not counted twice.
    conf1Write(root, 0, 2 << 3, 0x14, 4, 1);
    expect(root.violations.count('BAR_OVERLAP')).toBe(1);
    // Moving it away ends the overlap; moving it back is a new one.
    conf1Write(root, 0, 2 << 3, 0x10, 4, 0x0010_0000);
    expect(root.overlaps()).toHaveLength(0);
    conf1Write(root, 0, 2 << 3, 0x10, 4, 0x0004_0000); // half-overlapping
    expect(root.violations.count('BAR_OVERLAP')).toBe(2);
    expect(() => root.mmioRead(0x1_0004_0000, new Uint8Array(4))).not.toThrow();
  });

  it('puts the BARs back where it assigned them on reset', async () => {
    const { root } = makeRoot({ enableDecode: true });
    const fn = virtio();
    root.addFunction(1, fn);
    conf1Write(root, 0, 1 << 3, 0x10, 4, 0x4800_0000);
    conf1Write(root, 0, 1 << 3, 0x14, 4, 0);
    await root.reset();
    expect(root.barAssignments()[0]).toMatchObject({ address: 0x1_0000_0000, decoding: true });
  });

  it('reports I/O BARs of other functions in the I/O space', () => {
    const { root } = makeRoot({ enableDecode: true });
    const seen: number[] = [];
    const fn: PciFunction = {
      config: new PciConfiguration({
        vendorId: 1,
        deviceId: 2,
        classCode: 0,
        bars: [{ kind: 'io', size: 0x20 }],
      }),
      readBar: (_bar, offset, data) => {
        seen.push(offset);
        data.fill(0x5a);
      },
      writeBar: () => {},
    };
    root.addFunction(5, fn);
    const data = new Uint8Array(1);
    expect(root.ioRead(0xc004, data)).toBe(true);
    expect(seen).toEqual([4]);
    expect(data[0]).toBe(0x5a);
    expect(root.mmioRead(0xc004, data)).toBe(false);
  });
});

describe('interrupt routing', () => {
  it('swizzles pins onto the host inputs and writes the IRQ into the interrupt line', () => {
    const { root } = makeRoot();
    root.addFunction(1, virtio());
    root.addFunction(2, virtio({ interruptPin: 2 }));
    root.addFunction(6, virtio());
    expect(root.intxRoutes().map((r) => [r.device, r.pin, r.input, r.irq])).toEqual([
      [1, 1, 1, 33],
      [2, 2, 3, 35],
      [6, 1, 2, 34],
    ]);
    expect(conf1Read(root, 0, 2 << 3, PciConfig.INTERRUPT_LINE, 1)).toBe(35);
  });

  it('describes the swizzle as a device-tree interrupt-map', () => {
    const { root } = makeRoot();
    const map = root.interruptMap();
    expect(map.mask).toEqual([0x1800, 0, 0, 7]);
    expect(map.entries).toHaveLength(16);
    expect(map.entries[0]).toEqual({ childAddress: [0, 0, 0], pin: 1, input: 0, irq: 32 });
    expect(map.entries[5]).toEqual({ childAddress: [0x800, 0, 0], pin: 2, input: 2, irq: 34 });
    // Every device's route agrees with the map entry its masked address selects.
    for (const device of [1, 5, 13, 30]) {
      for (let pin = 1; pin <= 4; pin++) {
        const entry = map.entries.find(
          (e) => e.childAddress[0] === ((device << 11) & map.mask[0]) && e.pin === pin,
        );
        expect(entry?.input).toBe((device + pin - 1) % 4);
      }
    }
    const three = new PciRoot({ intx: [0, 1, 2].map(() => ({ line: { setLevel() {} } })) });
    expect(three.interruptMap().mask[0]).toBe(0xf800);
    expect(three.interruptMap().entries).toHaveLength(128);
  });

  it('wire-ORs functions that share an input', async () => {
    const { root, levels } = makeRoot();
    // Devices 1 and 5 both drive input 1 with INTA.
    const a = virtio({ msixVectors: 0 });
    const b = virtio({ msixVectors: 0 });
    root.addFunction(1, a);
    root.addFunction(5, b);
    for (const fn of [a, b]) {
      await initializeBare(fn);
      (fn.controller.device as EchoDevice).changeConfig(2);
    }
    expect(levels).toEqual([
      [1, true],
      [1, true],
    ]);
    busRead(a.barDevice(), a.layout.isr.offset, 1);
    expect(levels).toHaveLength(2); // b still asserts the line
    busRead(b.barDevice(), b.layout.isr.offset, 1);
    expect(levels.at(-1)).toEqual([1, false]);
  });

  it('connects MSI-X to the root sink and lists routes for KVM', () => {
    const messages: bigint[] = [];
    const { root } = makeRoot({ msi: { signal: (address) => messages.push(address) } });
    const fn = virtio();
    root.addFunction(1, fn);
    const changes: (number | undefined)[] = [];
    root.events.on('msix-change', (_address, vector) => changes.push(vector));
    busWrite(
      root.ecam,
      ecamOffset(0, 1, 0, fn.capabilityOffsets.msix! + MsixCap.CONTROL),
      2,
      MsixCap.CONTROL_ENABLE,
    );
    const entry = fn.layout.msixTable.offset + 16;
    busWrite(fn.barDevice(), entry, 4, 0xfee0_0000);
    busWrite(fn.barDevice(), entry + 12, 4, 0);
    expect(changes).toEqual([undefined, 1, 1]);
    expect(root.msixRoutes()[1]).toEqual({
      device: 1,
      function: 0,
      vector: 1,
      address: 0xfee0_0000n,
      data: 0,
      masked: false,
      enabled: true,
    });
    fn.msix!.signal(1);
    expect(messages).toEqual([0xfee0_0000n]);
    expect(fn.queueVector(0)).toBe(VIRTIO_MSI_NO_VECTOR);
  });
});

describe('PciWindowAllocator', () => {
  it('aligns each range to its size and fills gaps first', () => {
    const allocator = new PciWindowAllocator({ base: 0x1000, size: 0x10000 });
    expect(allocator.allocate(0x1000)).toBe(0x1000);
    expect(allocator.allocate(0x4000)).toBe(0x4000);
    expect(allocator.allocate(0x2000)).toBe(0x2000);
    expect(allocator.allocate(0x8000)).toBe(0x8000);
    expect(allocator.allocate(0x8000)).toBeUndefined();
    expect(allocator.allocate(0x1000)).toBe(0x10000);
  });
});

/** Minimal driver setup over common config: features, DRIVER_OK, no queues. */
async function initializeBare(fn: VirtioPciFunction): Promise<void> {
  const bar = fn.barDevice();
  busWrite(bar, CommonCfg.DEVICE_STATUS, 1, 1);
  busWrite(bar, CommonCfg.DEVICE_STATUS, 1, 3);
  busWrite(bar, CommonCfg.DRIVER_FEATURE_SELECT, 4, 1);
  busWrite(bar, CommonCfg.DRIVER_FEATURE, 4, 1);
  busWrite(bar, CommonCfg.DEVICE_STATUS, 1, 11);
  busWrite(bar, CommonCfg.DEVICE_STATUS, 1, 15);
  await fn.settled();
}
