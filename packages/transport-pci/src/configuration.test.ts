import { describe, expect, it } from 'vitest';
import { type PciBarState, PciConfiguration } from './configuration.js';
import { PciCommand, PciConfig, PciStatus } from './constants.js';

function read32(config: PciConfiguration, offset: number): number {
  const data = new Uint8Array(4);
  config.read(offset, data);
  return new DataView(data.buffer).getUint32(0, true);
}

function write32(config: PciConfiguration, offset: number, value: number): void {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setUint32(0, value >>> 0, true);
  config.write(offset, data);
}

function read16(config: PciConfiguration, offset: number): number {
  const data = new Uint8Array(2);
  config.read(offset, data);
  return data[0]! | (data[1]! << 8);
}

function make(): PciConfiguration {
  return new PciConfiguration({
    vendorId: 0x1af4,
    deviceId: 0x1041,
    revisionId: 1,
    classCode: 0x020000,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1041,
    interruptPin: 1,
    bars: [
      { kind: 'mem64', size: 0x8_0000, prefetchable: true },
      undefined,
      { kind: 'mem32', size: 0x1000 },
      { kind: 'io', size: 0x20 },
    ],
  });
}

describe('PciConfiguration header', () => {
  it('presents the identity registers', () => {
    const config = make();
    expect(read32(config, 0x00)).toBe(0x1041_1af4);
    expect(read32(config, 0x08)).toBe(0x0200_0001);
    expect(read32(config, 0x2c)).toBe(0x1041_1af4);
    expect(config.getU8(PciConfig.HEADER_TYPE)).toBe(0);
    expect(config.getU8(PciConfig.INTERRUPT_PIN)).toBe(1);
    // No capabilities yet: status bit 4 clear, pointer 0.
    expect(read16(config, PciConfig.STATUS) & PciStatus.CAP_LIST).toBe(0);
    expect(config.getU8(PciConfig.CAPABILITY_LIST)).toBe(0);
  });

  it('keeps read-only registers and counts attempts to change identity bytes', () => {
    const config = make();
    const reports: string[] = [];
    config.onReadOnlyWrite((message) => reports.push(message));
    write32(config, 0x00, 0xdead_beef);
    expect(read32(config, 0x00)).toBe(0x1041_1af4);
    expect(reports).toHaveLength(1);
    // Writing the value already there is not a change attempt.
    write32(config, 0x00, 0x1041_1af4);
    expect(reports).toHaveLength(1);
    // Status takes writes (error bits are RW1C) silently; the interrupt bit is not the guest's.
    config.write(PciConfig.STATUS, new Uint8Array([0xff, 0xff]));
    expect(read16(config, PciConfig.STATUS)).toBe(0);
    expect(reports).toHaveLength(1);
    // Interrupt line, cache line size and latency timer are writable; the pin is not.
    config.write(PciConfig.INTERRUPT_LINE, new Uint8Array([11, 4]));
    expect(config.getU8(PciConfig.INTERRUPT_LINE)).toBe(11);
    expect(config.getU8(PciConfig.INTERRUPT_PIN)).toBe(1);
    expect(reports).toHaveLength(2);
    config.write(PciConfig.CACHE_LINE_SIZE, new Uint8Array([0x10, 0x40]));
    expect(config.getU16(PciConfig.CACHE_LINE_SIZE)).toBe(0x4010);
  });

  it('keeps only the command bits it implements', () => {
    const config = make();
    const seen: number[] = [];
    config.events.on('command', (value) => seen.push(value));
    config.write(PciConfig.COMMAND, new Uint8Array([0xff, 0xff]));
    expect(config.command).toBe(0x0547);
    expect(config.intxDisabled).toBe(true);
    expect(seen).toEqual([0x0547]);
  });

  it('reads all ones past the end and ignores writes there', () => {
    const config = make();
    const data = new Uint8Array(4);
    config.read(0xffe, data);
    expect([...data]).toEqual([0, 0, 0xff, 0xff]);
    expect(() => config.write(0x1000, new Uint8Array(4))).not.toThrow();
    // Extended space (no extended capabilities) reads 0.
    expect(read32(config, 0x100)).toBe(0);
  });
});

describe('BAR sizing and programming', () => {
  it('answers the all-ones sizing write with the size mask and flags', () => {
    const config = make();
    // 64-bit prefetchable memory: flags 0xC; 512 KiB -> low mask 0xFFF80000.
    expect(read32(config, 0x10)).toBe(0x0000_000c);
    write32(config, 0x10, 0xffff_ffff);
    write32(config, 0x14, 0xffff_ffff);
    expect(read32(config, 0x10)).toBe(0xfff8_000c);
    expect(read32(config, 0x14)).toBe(0xffff_ffff);
    // 32-bit non-prefetchable memory, 4 KiB.
    write32(config, 0x18, 0xffff_ffff);
    expect(read32(config, 0x18)).toBe(0xffff_f000);
    // I/O, 32 ports: bit 0 set, bit 1 reserved.
    write32(config, 0x1c, 0xffff_ffff);
    expect(read32(config, 0x1c)).toBe(0xffff_ffe1);
    // Unimplemented BARs and the expansion ROM read 0: size 0, "not implemented".
    write32(config, 0x20, 0xffff_ffff);
    write32(config, 0x24, 0xffff_ffff);
    write32(config, PciConfig.ROM_ADDRESS, 0xffff_ffff);
    expect(read32(config, 0x20)).toBe(0);
    expect(read32(config, 0x24)).toBe(0);
    expect(read32(config, PciConfig.ROM_ADDRESS)).toBe(0);
  });

  it('computes the size like Linux pci_size() from the sizing read', () => {
    const config = make();
    write32(config, 0x10, 0xffff_ffff);
    write32(config, 0x14, 0xffff_ffff);
    const low = read32(config, 0x10);
    const high = read32(config, 0x14);
    const mask = (BigInt(high) << 32n) | BigInt(low & 0xffff_fff0);
    const size = BigInt.asUintN(64, ~mask) + 1n;
    expect(size).toBe(0x8_0000n);
  });

  it('tracks addresses the guest programs and decodes only with the space enabled', () => {
    const config = make();
    const changes: [PciBarState, PciBarState][] = [];
    config.events.on('bar-change', (bar, previous) => changes.push([bar, previous]));
    write32(config, 0x10, 0x1234_5678); // low bits below the size are dropped
    write32(config, 0x14, 0x0000_0001);
    expect(read32(config, 0x10)).toBe(0x1230_000c);
    expect(config.bar(0)).toMatchObject({ address: 0x1_1230_0000, decoding: false });
    expect(config.bar(1)).toBe(config.bar(0)); // upper half of the same BAR
    config.write(PciConfig.COMMAND, new Uint8Array([PciCommand.MEMORY_SPACE, 0]));
    expect(config.bar(0)).toMatchObject({ address: 0x1_1230_0000, decoding: true });
    expect(config.bar(3)).toMatchObject({ kind: 'io', decoding: false });
    expect(changes.map(([bar]) => [bar.index, bar.address, bar.decoding])).toEqual([
      [0, 0x1230_0000, false],
      [0, 0x1_1230_0000, false],
      [0, 0x1_1230_0000, true],
      [2, 0, true],
    ]);
  });

  it('takes byte-wide BAR writes, merging them like the hardware does', () => {
    const config = make();
    config.write(0x1b, new Uint8Array([0xab]));
    config.write(0x19, new Uint8Array([0xcd]));
    expect(read32(config, 0x18)).toBe(0xab00_c000 >>> 0);
    expect(config.bar(2)?.address).toBe(0xab00_c000);
  });

  it('stops decoding a 64-bit BAR moved above 2^53', () => {
    const config = make();
    config.setCommand(PciCommand.MEMORY_SPACE);
    write32(config, 0x14, 0xffff_0000);
    expect(config.bar(0)).toMatchObject({ address: undefined, decoding: false });
  });

  it('lets the VMM assign aligned addresses and refuses misaligned ones', () => {
    const config = make();
    config.setBarAddress(0, 0x2_0008_0000);
    expect(read32(config, 0x10)).toBe(0x0008_000c);
    expect(read32(config, 0x14)).toBe(2);
    expect(() => config.setBarAddress(0, 0x1000)).toThrow(/does not fit/);
    expect(() => config.setBarAddress(2, 0x1_0000_0000)).toThrow(/does not fit/);
    expect(() => config.setBarAddress(4, 0)).toThrow(/not implemented/);
  });

  it('refuses impossible BAR definitions', () => {
    const base = { vendorId: 1, deviceId: 2, classCode: 0 };
    expect(() => new PciConfiguration({ ...base, bars: [{ kind: 'mem32', size: 24 }] })).toThrow(
      /power of two/,
    );
    expect(
      () =>
        new PciConfiguration({
          ...base,
          bars: [
            { kind: 'mem64', size: 16 },
            { kind: 'mem32', size: 16 },
          ],
        }),
    ).toThrow(/upper half/);
    expect(
      () =>
        new PciConfiguration({
          ...base,
          bars: [
            undefined,
            undefined,
            undefined,
            undefined,
            undefined,
            { kind: 'mem64', size: 16 },
          ],
        }),
    ).toThrow(/upper half/);
  });
});

describe('capability list', () => {
  it('chains capabilities from 0x40, dword aligned, and sets the status bit', () => {
    const config = make();
    const first = config.addCapability(0x09, 16);
    const second = config.addCapability(0x09, 19);
    const third = config.addCapability(0x11, 12);
    expect([first, second, third]).toEqual([0x40, 0x50, 0x64]);
    expect(read16(config, PciConfig.STATUS) & PciStatus.CAP_LIST).toBe(PciStatus.CAP_LIST);
    const walk: [number, number][] = [];
    for (let at = config.getU8(PciConfig.CAPABILITY_LIST); at !== 0; at = config.getU8(at + 1)) {
      walk.push([at, config.getU8(at)]);
    }
    expect(walk).toEqual([
      [0x40, 0x09],
      [0x50, 0x09],
      [0x64, 0x11],
    ]);
  });

  it('refuses a capability that does not fit in the first 256 bytes', () => {
    const config = make();
    for (let i = 0; i < 12; i++) config.addCapability(0x09, 16);
    expect(() => config.addCapability(0x09, 16)).toThrow(/no room/);
  });
});

describe('function-level reset', () => {
  it('returns every register to its sealed value and reports the BAR change', () => {
    const config = make();
    config.seal();
    config.setBarAddress(2, 0x8000_0000);
    config.setCommand(PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER);
    config.setInterruptLine(9);
    const changes: number[] = [];
    config.events.on('bar-change', (bar) => changes.push(bar.index));
    config.reset();
    expect(config.command).toBe(0);
    expect(config.bar(2)).toMatchObject({ address: 0, decoding: false });
    expect(config.getU8(PciConfig.INTERRUPT_LINE)).toBe(0);
    // BAR 0 stayed at 0 but stopped decoding with the command register cleared.
    expect(changes).toEqual([0, 2]);
  });
});
