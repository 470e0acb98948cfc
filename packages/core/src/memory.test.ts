import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from './errors.js';
import {
  GuestMemory,
  guestAddressFromBigInt,
  guestAddressFromParts,
  isSafeRange,
} from './memory.js';

function twoRegions(): GuestMemory {
  return new GuestMemory([
    { guestAddress: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestAddress: 0x2000, buffer: new SharedArrayBuffer(0x1000) },
    { guestAddress: 0x10000, buffer: new ArrayBuffer(0x1000) },
  ]);
}

describe('GuestMemory', () => {
  it('stores little-endian values of every width', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(64));
    memory.writeU8(0, 0xab);
    memory.writeU16(2, 0xbeef);
    memory.writeU32(4, 0xdeadbeef);
    memory.writeU64(8, 0x0123_4567_89ab_cdefn);
    expect(memory.readU8(0)).toBe(0xab);
    expect(memory.readU16(2)).toBe(0xbeef);
    expect(memory.readU8(2)).toBe(0xef);
    expect(memory.readU32(4)).toBe(0xdeadbeef);
    expect(memory.readU64(8)).toBe(0x0123_4567_89ab_cdefn);
    expect(memory.readU8(8)).toBe(0xef);
  });

  it('rejects every access that leaves guest RAM, including straddling the end', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(16), 0x100);
    expect(() => memory.readU8(0xff)).toThrow(GuestMemoryError);
    expect(() => memory.readU32(0x10d)).toThrow(GuestMemoryError);
    expect(() => memory.readU64(0x10c)).toThrow(GuestMemoryError);
    expect(() => memory.writeU16(0x110, 1)).toThrow(GuestMemoryError);
    expect(() => memory.read(0x108, new Uint8Array(9))).toThrow(GuestMemoryError);
    expect(() => memory.view(0x100, 17)).toThrow(GuestMemoryError);
    expect(memory.readU32(0x10c)).toBe(0);
  });

  it('refuses addresses that are not safe integers instead of rounding them', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(16));
    for (const bad of [-1, 0.5, Number.NaN, 2 ** 53, 2 ** 64, Number.POSITIVE_INFINITY]) {
      expect(() => memory.readU8(bad)).toThrow(GuestMemoryError);
      expect(memory.checkRange(bad, 1)).toBe(false);
    }
    expect(memory.checkRange(0, -1)).toBe(false);
    expect(memory.checkRange(1, Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(isSafeRange(Number.MAX_SAFE_INTEGER - 1, 1)).toBe(true);
    expect(isSafeRange(Number.MAX_SAFE_INTEGER, 1)).toBe(false);
  });

  it('stays exact for a region just below 2^53', () => {
    const top = 2 ** 53 - 0x1000; // a multiple of 8; the region ends at 2^53 - 0x800
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(0x800), top);
    memory.writeU64(top + 0x7f8, 0x1122_3344_5566_7788n);
    expect(memory.readU64(top + 0x7f8)).toBe(0x1122_3344_5566_7788n);
    expect(memory.readU8(top + 0x7ff)).toBe(0x11);
    expect(() => memory.readU16(top + 0x7ff)).toThrow(GuestMemoryError);
    expect(() => memory.readU8(top + 0x800)).toThrow(GuestMemoryError);
    // Lengths whose sum with the address is beyond 2^53 (where doubles stop being exact).
    for (const length of [0x801, 2 ** 53, Number.MAX_SAFE_INTEGER, 2 ** 64]) {
      expect(memory.checkRange(top, length)).toBe(false);
      expect(memory.findRegion(top, length)).toBeUndefined();
      expect(() => memory.view(top, length)).toThrow(GuestMemoryError);
    }
    expect(memory.view(top, 0x800).length).toBe(0x800);
    expect(memory.view(top + 0x800, 0).length).toBe(0);
  });

  it('joins 64-bit address halves only when the result is exact', () => {
    expect(guestAddressFromParts(0x1000, 0)).toBe(0x1000);
    expect(guestAddressFromParts(0xffffffff, 0x1fffff)).toBe(2 ** 53 - 1);
    expect(guestAddressFromParts(0, 0x200000)).toBeUndefined();
    expect(guestAddressFromParts(0, 0xffffffff)).toBeUndefined();
    expect(guestAddressFromBigInt(2n ** 53n)).toBeUndefined();
    expect(guestAddressFromBigInt(-1n)).toBeUndefined();
    expect(guestAddressFromBigInt(123n)).toBe(123);
  });

  it('finds regions and copies across adjacent ones, but not across holes', () => {
    const memory = twoRegions();
    expect(memory.totalSize).toBe(0x3000);
    expect(memory.findRegion(0x1ff0, 0x20)).toBeUndefined();
    expect(memory.checkRange(0x1ff0, 0x20)).toBe(true);
    expect(memory.checkRange(0x2ff0, 0x20)).toBe(false);
    expect(memory.checkRange(0x5000, 1)).toBe(false);
    const data = Uint8Array.from({ length: 0x20 }, (_, i) => i + 1);
    memory.write(0x1ff0, data);
    const back = new Uint8Array(0x20);
    memory.read(0x1ff0, back);
    expect(back).toEqual(data);
    expect(memory.readU8(0x2000)).toBe(0x11);
    expect(memory.views(0x1ff0, 0x20).map((v) => v.length)).toEqual([0x10, 0x10]);
    expect(() => memory.view(0x1ff0, 0x20)).toThrow(GuestMemoryError);
    expect(() => memory.write(0x2ff0, data)).toThrow(GuestMemoryError);
    expect(memory.readU32(0x10000)).toBe(0);
  });

  it('gives zero-copy views that alias guest RAM', () => {
    const buffer = new ArrayBuffer(0x100);
    const memory = GuestMemory.fromBuffer(buffer, 0x4000);
    const view = memory.view(0x4010, 4);
    view.set([1, 2, 3, 4]);
    expect(new Uint8Array(buffer, 0x10, 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    memory.fill(0x4010, 2, 0xff);
    expect([...view]).toEqual([0xff, 0xff, 3, 4]);
  });

  it('refuses overlapping or malformed regions', () => {
    expect(() => new GuestMemory([])).toThrow(/at least one region/);
    expect(
      () =>
        new GuestMemory([
          { guestAddress: 0, buffer: new ArrayBuffer(0x2000) },
          { guestAddress: 0x1000, buffer: new ArrayBuffer(0x1000) },
        ]),
    ).toThrow(/overlap/);
    expect(
      () => new GuestMemory([{ guestAddress: 0, buffer: new ArrayBuffer(16), byteOffset: 4 }]),
    ).toThrow(/multiple of 8/);
    expect(
      () => new GuestMemory([{ guestAddress: 0, buffer: new ArrayBuffer(16), size: 32 }]),
    ).toThrow(/does not fit/);
    expect(
      () => new GuestMemory([{ guestAddress: 2 ** 53 - 8, buffer: new ArrayBuffer(16) }]),
    ).toThrow(/not a valid range/);
  });

  it('refuses a resizable ArrayBuffer, which could shrink under its views', () => {
    // ES2024 constructor options; core's type library is ES2023.
    const Resizable = ArrayBuffer as unknown as new (
      length: number,
      options: { maxByteLength: number },
    ) => ArrayBuffer;
    expect(() => GuestMemory.fromBuffer(new Resizable(64, { maxByteLength: 128 }))).toThrow(
      /resizable ArrayBuffer/,
    );
  });

  it('maps a region at a byte offset inside a larger buffer', () => {
    const buffer = new ArrayBuffer(0x100);
    const memory = new GuestMemory([
      { guestAddress: 0x8000, buffer, byteOffset: 0x40, size: 0x40 },
    ]);
    memory.writeU32(0x8000, 0x11223344);
    expect(new DataView(buffer).getUint32(0x40, true)).toBe(0x11223344);
    expect(() => memory.readU8(0x8040)).toThrow(GuestMemoryError);
  });
});
