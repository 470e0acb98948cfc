import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../errors.js';
import { GuestMemory } from '../memory.js';
import { DescriptorChain, type Segment } from './chain.js';

function setup(readable: Segment[], writable: Segment[]) {
  const memory = new GuestMemory([
    { guestAddress: 0, buffer: new ArrayBuffer(0x1000) },
    { guestAddress: 0x1000, buffer: new ArrayBuffer(0x1000) },
  ]);
  const sum = (s: Segment[]) => s.reduce((n, x) => n + x.len, 0);
  return {
    memory,
    chain: new DescriptorChain(memory, 3, readable, writable, sum(readable), sum(writable), 1),
  };
}

describe('ChainReader', () => {
  it('reads fields and bytes across segment boundaries', () => {
    const { memory, chain } = setup(
      [
        { addr: 0x100, len: 3 },
        { addr: 0x200, len: 9 },
      ],
      [],
    );
    memory.write(0x100, Uint8Array.of(0x01, 0x02, 0x03));
    memory.write(0x200, Uint8Array.of(0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c));
    const reader = chain.reader();
    expect(reader.length).toBe(12);
    expect(reader.readU16()).toBe(0x0201);
    expect(reader.readU32()).toBe(0x06050403); // straddles the two segments
    expect(reader.position).toBe(6);
    expect(reader.readU8()).toBe(0x07);
    expect(reader.readBytes(2)).toEqual(Uint8Array.of(0x08, 0x09));
    expect(reader.remaining).toBe(3);
    expect(() => reader.readU32()).toThrow(GuestMemoryError);
    expect(reader.readSome(new Uint8Array(10))).toBe(3);
    expect(reader.remaining).toBe(0);
  });

  it('gives zero-copy views and skips', () => {
    const { memory, chain } = setup(
      [
        { addr: 0xff0, len: 0x20 }, // spans the two regions
        { addr: 0x10, len: 4 },
      ],
      [],
    );
    const reader = chain.reader();
    expect(reader.skip(0x08)).toBe(0x08);
    const views = reader.views(0x1c);
    expect(views.map((v) => v.length)).toEqual([0x08, 0x10, 0x04]);
    views[2]![0] = 0x5a;
    expect(memory.readU8(0x10)).toBe(0x5a);
    expect(reader.remaining).toBe(0);
    expect(reader.skip(5)).toBe(0);
  });

  it('gives the next bytes as guest ranges, reusing whole segments', () => {
    const whole = { addr: 0x400, len: 0x20 };
    const { chain } = setup(
      [
        { addr: 0x100, len: 0x10 }, // a header, then data
        whole,
        { addr: 0x800, len: 0x30 },
      ],
      [],
    );
    const reader = chain.reader();
    reader.skip(0x0c);
    const ranges = reader.ranges(0x04 + 0x20 + 0x08);
    expect(ranges).toEqual([
      { addr: 0x10c, len: 0x04 },
      { addr: 0x400, len: 0x20 },
      { addr: 0x800, len: 0x08 },
    ]);
    expect(ranges[1]).toBe(whole); // no copy of a segment taken whole
    expect(reader.position).toBe(0x38);
    // At most what remains, then nothing.
    expect(reader.ranges(0x100)).toEqual([{ addr: 0x808, len: 0x28 }]);
    expect(reader.ranges()).toEqual([]);
  });

  it('reads u64 across regions', () => {
    const { memory, chain } = setup([{ addr: 0xffc, len: 8 }], []);
    memory.writeU32(0xffc, 0x44332211);
    memory.writeU32(0x1000, 0x88776655);
    expect(chain.reader().readU64()).toBe(0x8877665544332211n);
  });
});

describe('ChainWriter', () => {
  it('writes across segments and counts what it wrote', () => {
    const { memory, chain } = setup(
      [],
      [
        { addr: 0x300, len: 2 },
        { addr: 0x400, len: 6 },
      ],
    );
    const writer = chain.writer();
    writer.writeU8(0xaa);
    writer.writeU32(0x04030201);
    expect(writer.position).toBe(5);
    expect(memory.readU8(0x300)).toBe(0xaa);
    expect(memory.readU8(0x301)).toBe(0x01);
    expect(memory.readU8(0x400)).toBe(0x02);
    expect(writer.writeSome(Uint8Array.of(9, 9, 9, 9, 9))).toBe(3);
    expect(writer.remaining).toBe(0);
    expect(() => writer.writeU8(1)).toThrow(GuestMemoryError);
    expect(memory.readU8(0x406)).toBe(0); // nothing past the last segment
  });

  it('zeroes and writes u16/u64', () => {
    const { memory, chain } = setup([], [{ addr: 0x500, len: 12 }]);
    memory.fill(0x500, 12, 0xff);
    const writer = chain.writer();
    writer.zero(2);
    writer.writeU16(0xbeef);
    writer.writeU64(-1n);
    expect(memory.readU16(0x500)).toBe(0);
    expect(memory.readU16(0x502)).toBe(0xbeef);
    expect(memory.readU64(0x504)).toBe(0xffff_ffff_ffff_ffffn);
  });
});
