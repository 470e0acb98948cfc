import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from '../constants.js';
import { type ProtocolViolation, QueueConfigError, VirtkitError } from '../errors.js';
import { GuestMemory, type GuestRegionInit } from '../memory.js';
import type { DescriptorChain } from './chain.js';
import { type PackedDescriptor, PackedDeviceQueue } from './packed.js';
import type { QueuePosition } from './types.js';

const DESC = 0x1000;
const DRIVER_EVENT = 0x3000;
const DEVICE_EVENT = 0x3010;
const TABLE = 0x4000;
const DATA = 0x8000;

/** One descriptor as the driver would write it; `flags` excludes AVAIL/USED unless `raw`. */
interface Desc {
  addr?: number;
  /** High 32 bits of the address, to write addresses beyond 2^53. */
  high?: number;
  len?: number;
  id?: number;
  flags?: number;
}

interface RingOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  regions?: GuestRegionInit[];
  position?: QueuePosition;
  shared?: boolean;
  onViolation?: (v: ProtocolViolation) => void;
}

/**
 * A packed ring in guest memory written by hand, the way a (possibly hostile) driver would, and
 * the device queue under test.
 */
function ring(options: RingOptions = {}) {
  const size = options.size ?? 8;
  const Buffer = options.shared ? SharedArrayBuffer : ArrayBuffer;
  const memory = new GuestMemory(
    options.regions ?? [{ guestAddress: 0, buffer: new Buffer(0x10000) }],
  );
  const violations: ProtocolViolation[] = [];
  const queue = new PackedDeviceQueue(
    {
      index: 3,
      size,
      descAddr: DESC,
      driverAddr: DRIVER_EVENT,
      deviceAddr: DEVICE_EVENT,
      eventIdx: options.eventIdx ?? false,
      indirect: options.indirect ?? false,
    },
    {
      memory,
      onViolation: options.onViolation ?? ((v) => violations.push(v)),
      ...(options.position ? { position: options.position } : {}),
    },
  );
  let cursor = options.position?.nextAvail ?? 0;
  let wrap = options.position?.availWrap ?? true;

  const availBits = (w: boolean) => (w ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
  const write = (slot: number, d: Desc, flags: number) => {
    const at = DESC + 16 * slot;
    const addr = d.addr ?? DATA;
    memory.writeU32(at, addr >>> 0);
    memory.writeU32(at + 4, d.high ?? Math.floor(addr / 2 ** 32));
    memory.writeU32(at + 8, d.len ?? 16);
    memory.writeU16(at + 12, d.id ?? 0);
    memory.writeU16(at + 14, flags);
  };

  return {
    memory,
    queue,
    violations,
    size,
    /** Writes a descriptor list at the driver's cursor, head flags last; returns the head slot. */
    chain(descs: Desc[], id = 0): number {
      const head = cursor;
      let headFlags = 0;
      descs.forEach((d, i) => {
        const last = i === descs.length - 1;
        const flags = (d.flags ?? 0) | (last ? 0 : VIRTQ_DESC_F_NEXT) | availBits(wrap);
        write(cursor, { ...d, id: last ? id : (d.id ?? 0xbeef) }, i === 0 ? 0 : flags);
        if (i === 0) headFlags = flags;
        cursor++;
        if (cursor === size) {
          cursor = 0;
          wrap = !wrap;
        }
      });
      memory.writeU16(DESC + 16 * head + 14, headFlags);
      return head;
    },
    /** Writes one descriptor with exactly these flags (no AVAIL/USED added) at `slot`. */
    raw(slot: number, d: Desc & { flags: number }) {
      write(slot, d, d.flags);
    },
    availBits,
    /** Writes an indirect table of `entries` at `address`. */
    table(entries: Desc[], address = TABLE) {
      entries.forEach((d, i) => {
        const at = address + 16 * i;
        const addr = d.addr ?? DATA;
        memory.writeU32(at, addr >>> 0);
        memory.writeU32(at + 4, d.high ?? Math.floor(addr / 2 ** 32));
        memory.writeU32(at + 8, d.len ?? 16);
        memory.writeU16(at + 12, d.id ?? 0);
        memory.writeU16(at + 14, d.flags ?? 0);
      });
      return entries.length * 16;
    },
    /** The descriptor at `slot` as the driver would read it back. */
    read(slot: number) {
      const at = DESC + 16 * slot;
      return {
        len: memory.readU32(at + 8),
        id: memory.readU16(at + 12),
        flags: memory.readU16(at + 14),
      };
    },
    setDriverEvent(flags: number, offset = 0, wrapBit = 1) {
      memory.writeU16(DRIVER_EVENT, offset | (wrapBit << 15));
      memory.writeU16(DRIVER_EVENT + 2, flags);
    },
    deviceEvent() {
      const offWrap = memory.readU16(DEVICE_EVENT);
      return {
        flags: memory.readU16(DEVICE_EVENT + 2),
        offset: offWrap & 0x7fff,
        wrap: offWrap >> 15,
      };
    },
  };
}

type Ring = ReturnType<typeof ring>;

function popOk(r: Ring): DescriptorChain {
  const chain = r.queue.pop();
  expect(r.violations).toEqual([]);
  expect(chain).not.toBeNull();
  return chain!;
}

/** Pops expecting exactly one violation of `code`, and checks the queue stays stopped. */
function expectViolation(r: Ring, code: string): ProtocolViolation {
  let chain: DescriptorChain | null = null;
  expect(() => {
    chain = r.queue.pop();
  }).not.toThrow();
  expect(chain).toBeNull();
  expect(r.violations.map((v) => v.code)).toEqual([code]);
  const violation = r.violations[0]!;
  expect(violation).toMatchObject({ queue: 3, needsReset: true });
  expect(violation.message.length).toBeGreaterThan(10);
  expect(r.queue.broken).toBe(true);
  // A broken queue hands out nothing more, even when the ring has good chains.
  r.chain([{ addr: DATA, len: 8 }], 1);
  expect(r.queue.hasAvailable()).toBe(false);
  expect(r.queue.pop()).toBeNull();
  expect(r.queue.enableNotifications()).toBe(false);
  expect(r.violations).toHaveLength(1);
  return violation;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('PackedDeviceQueue setup', () => {
  const memory = () => GuestMemory.fromBuffer(new ArrayBuffer(0x10000));
  const make = (overrides: Partial<Parameters<typeof queueWith>[0]>, mem = memory()) =>
    queueWith(
      { size: 8, descAddr: DESC, driverAddr: DRIVER_EVENT, deviceAddr: DEVICE_EVENT, ...overrides },
      mem,
    );
  function queueWith(
    s: { size: number; descAddr: number; driverAddr: number; deviceAddr: number },
    mem: GuestMemory,
    position?: QueuePosition,
  ) {
    return new PackedDeviceQueue(
      { index: 0, eventIdx: false, indirect: false, ...s },
      { memory: mem, onViolation: () => {}, ...(position ? { position } : {}) },
    );
  }

  it('accepts any size from 1 to 32768, powers of two or not', () => {
    for (const size of [1, 3, 100, 256, 32768]) {
      const mem = GuestMemory.fromBuffer(new ArrayBuffer(0x100000));
      expect(make({ size }, mem).size).toBe(size);
    }
  });

  it('refuses size 0, sizes above 32768 and non-integers', () => {
    for (const size of [0, 32769, 2.5, -1, Number.NaN]) {
      expect(() => make({ size }, GuestMemory.fromBuffer(new ArrayBuffer(0x100000)))).toThrow(
        QueueConfigError,
      );
    }
  });

  it('refuses misaligned parts (§2.8.10.1)', () => {
    expect(() => make({ descAddr: DESC + 8 })).toThrow(/16-byte aligned/);
    expect(() => make({ driverAddr: DRIVER_EVENT + 2 })).toThrow(/4-byte aligned/);
    expect(() => make({ deviceAddr: DEVICE_EVENT + 1 })).toThrow(QueueConfigError);
    expect(() => make({ descAddr: Number.NaN })).toThrow(QueueConfigError);
  });

  it('refuses parts outside guest memory', () => {
    expect(() => make({ descAddr: 0x10000 - 16 * 4 })).toThrow(
      /not inside one guest memory region/,
    );
    expect(() => make({ driverAddr: 0x10000 })).toThrow(QueueConfigError);
    expect(() => make({ deviceAddr: 2 ** 60 })).toThrow(QueueConfigError);
  });

  it('refuses a ring or event structure straddling two regions, even adjacent ones', () => {
    const mem = new GuestMemory([
      { guestAddress: 0, buffer: new ArrayBuffer(0x1000) },
      { guestAddress: 0x1000, buffer: new ArrayBuffer(0x1000) },
      { guestAddress: 0x4000, buffer: new ArrayBuffer(0x1000) },
    ]);
    // Both regions are guest RAM and adjacent, but the ring must be one mapping.
    expect(mem.checkRange(0xfc0, 128)).toBe(true);
    expect(() =>
      queueWith({ size: 8, descAddr: 0xfc0, driverAddr: 0x4000, deviceAddr: 0x4004 }, mem),
    ).toThrow(/not inside one guest memory region/);
    expect(() =>
      queueWith({ size: 8, descAddr: 0x1000, driverAddr: 0x1ffe, deviceAddr: 0x4004 }, mem),
    ).toThrow(QueueConfigError);
    // Each part inside one region, the parts in different regions: fine.
    expect(
      queueWith({ size: 8, descAddr: 0x1000, driverAddr: 0x0, deviceAddr: 0x4ffc }, mem).size,
    ).toBe(8);
  });

  it('refuses a position that is not a slot or has used ahead of available', () => {
    const s = { size: 8, descAddr: DESC, driverAddr: DRIVER_EVENT, deviceAddr: DEVICE_EVENT };
    expect(() => queueWith(s, memory(), { nextAvail: 8, nextUsed: 0 })).toThrow(/nextAvail 8/);
    expect(() => queueWith(s, memory(), { nextAvail: 0, nextUsed: -1 })).toThrow(/nextUsed/);
    expect(() => queueWith(s, memory(), { nextAvail: 1, nextUsed: 2 })).toThrow(/ahead/);
    expect(() =>
      queueWith(s, memory(), { nextAvail: 3, nextUsed: 2, availWrap: false, usedWrap: true }),
    ).toThrow(/ahead/);
    // Available a full lap ahead of used: the ring is full, which is allowed.
    const full = queueWith(s, memory(), {
      nextAvail: 2,
      nextUsed: 2,
      availWrap: false,
      usedWrap: true,
    });
    expect(full.position()).toEqual({
      nextAvail: 2,
      nextUsed: 2,
      availWrap: false,
      usedWrap: true,
    });
  });
});

describe('PackedDeviceQueue.pop', () => {
  it('sees nothing in a zero-initialized ring', () => {
    const r = ring();
    expect(r.queue.hasAvailable()).toBe(false);
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.broken).toBe(false);
  });

  it('pops a readable-then-writable chain with the id of its last descriptor', () => {
    const r = ring();
    r.chain(
      [
        { addr: DATA, len: 16, id: 9 },
        { addr: DATA + 0x100, len: 32, id: 9 },
        { addr: DATA + 0x200, len: 64, flags: VIRTQ_DESC_F_WRITE },
      ],
      5,
    );
    expect(r.queue.hasAvailable()).toBe(true);
    const chain = popOk(r);
    expect(chain.id).toBe(5);
    expect(chain.readable).toEqual([
      { addr: DATA, len: 16 },
      { addr: DATA + 0x100, len: 32 },
    ]);
    expect(chain.writable).toEqual([{ addr: DATA + 0x200, len: 64 }]);
    expect(chain.readableLength).toBe(48);
    expect(chain.writableLength).toBe(64);
    expect(chain.ringSlots).toBe(3);
    expect(chain.memory).toBe(r.memory);
    expect(r.queue.inFlight).toBe(1);
    expect(r.queue.position()).toEqual({
      nextAvail: 3,
      availWrap: true,
      nextUsed: 0,
      usedWrap: true,
    });
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.hasAvailable()).toBe(false);
  });

  it('does not see a chain until its head flags are written', () => {
    const r = ring();
    r.chain([{ len: 4 }, { len: 4 }], 1);
    r.memory.writeU16(DESC + 14, 0); // undo the head: the rest of the list is already written
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.broken).toBe(false);
  });

  it('reads a chain that wraps around the end of the ring and flips the wrap counter', () => {
    const r = ring({ size: 4, position: { nextAvail: 2, nextUsed: 2 } });
    r.chain(
      [
        { addr: DATA, len: 1 },
        { addr: DATA + 1, len: 2 },
        { addr: DATA + 3, len: 3 },
      ],
      3,
    );
    // The third descriptor went to slot 0 with the flipped wrap counter: AVAIL=0, USED=1.
    expect(r.read(0).flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)).toBe(VIRTQ_DESC_F_USED);
    const chain = popOk(r);
    expect(chain.readable.map((s) => s.len)).toEqual([1, 2, 3]);
    expect(chain.ringSlots).toBe(3);
    expect(r.queue.position()).toMatchObject({ nextAvail: 1, availWrap: false });
  });

  it('keeps in step with the driver over many laps of a ring whose size is not a power of two', () => {
    const r = ring({ size: 5 });
    let expectedId = 0;
    for (let lap = 0; lap < 45; lap++) {
      const length = (lap % 3) + 1;
      r.chain(
        Array.from({ length }, (_, i) => ({ addr: DATA + i * 16, len: 16 })),
        expectedId,
      );
      const chain = popOk(r);
      expect(chain.id).toBe(expectedId);
      expect(chain.ringSlots).toBe(length);
      r.queue.addUsed(chain, 0);
      r.queue.publishUsed();
      expectedId = (expectedId + 1) % 5;
    }
    // 15 × (1 + 2 + 3) = 90 slots: 18 laps of 5, so both wrap counters are back at 1.
    expect(r.queue.position()).toEqual({
      nextAvail: 0,
      availWrap: true,
      nextUsed: 0,
      usedWrap: true,
    });
  });

  it('starts at a restored position', () => {
    const r = ring({
      size: 8,
      position: { nextAvail: 5, nextUsed: 3, availWrap: false, usedWrap: false },
    });
    r.chain([{ len: 8 }], 4);
    const chain = popOk(r);
    expect(chain.id).toBe(4);
    expect(r.queue.position()).toEqual({
      nextAvail: 6,
      availWrap: false,
      nextUsed: 3,
      usedWrap: false,
    });
    r.queue.addUsed(chain, 0);
    expect(r.queue.publishUsed()).toBe(true);
    // Used at slot 3 with the device wrap counter 0: AVAIL = USED = 0.
    expect(r.read(3)).toMatchObject({ id: 4, flags: 0 });
  });

  it('reads all entries of an indirect table, ignoring NEXT and ids inside it (§2.8.7)', () => {
    const r = ring({ indirect: true });
    const len = r.table([
      { addr: DATA, len: 10 },
      { addr: DATA + 0x10, len: 20, flags: VIRTQ_DESC_F_NEXT, id: 77 },
      { addr: DATA + 0x20, len: 30, flags: VIRTQ_DESC_F_WRITE },
      { addr: DATA + 0x40, len: 40, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT },
    ]);
    // WRITE on the indirect descriptor itself is reserved and ignored.
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE }], 6);
    const chain = popOk(r);
    expect(chain.id).toBe(6);
    expect(chain.ringSlots).toBe(1);
    expect(chain.readable).toEqual([
      { addr: DATA, len: 10 },
      { addr: DATA + 0x10, len: 20 },
    ]);
    expect(chain.writable).toEqual([
      { addr: DATA + 0x20, len: 30 },
      { addr: DATA + 0x40, len: 40 },
    ]);
    expect(chain.writableLength).toBe(70);
  });

  it('mixes direct and indirect buffers in one ring', () => {
    const r = ring({ indirect: true });
    r.chain([{ len: 1 }, { len: 2, flags: VIRTQ_DESC_F_WRITE }], 0);
    r.chain([{ addr: TABLE, len: r.table([{ len: 3 }]), flags: VIRTQ_DESC_F_INDIRECT }], 1);
    r.chain([{ len: 4 }], 2);
    expect([popOk(r), popOk(r), popOk(r)].map((c) => [c.id, c.ringSlots])).toEqual([
      [0, 2],
      [1, 1],
      [2, 1],
    ]);
  });

  it('leaves zero-length descriptors out of the segments', () => {
    const r = ring();
    r.chain([{ len: 0 }, { len: 5 }, { len: 0, flags: VIRTQ_DESC_F_WRITE }], 2);
    const chain = popOk(r);
    expect(chain.readable).toEqual([{ addr: DATA, len: 5 }]);
    expect(chain.writable).toEqual([]);
    expect(chain.ringSlots).toBe(3);
  });

  it('accepts a buffer spanning two adjacent regions and 64-bit addresses above 4 GiB', () => {
    const high = 2 ** 40;
    const r = ring({
      regions: [
        { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
        { guestAddress: 0x10000, buffer: new ArrayBuffer(0x1000) },
        { guestAddress: high, buffer: new ArrayBuffer(0x1000) },
      ],
    });
    r.chain(
      [
        { addr: 0xff00, len: 0x200 },
        { addr: high + 0x10, len: 0x100, flags: VIRTQ_DESC_F_WRITE },
      ],
      1,
    );
    const chain = popOk(r);
    expect(chain.readable).toEqual([{ addr: 0xff00, len: 0x200 }]);
    expect(chain.writable).toEqual([{ addr: high + 0x10, len: 0x100 }]);
  });

  it('works over a SharedArrayBuffer', () => {
    const r = ring({ shared: true });
    r.chain([{ len: 8 }], 7);
    expect(popOk(r).id).toBe(7);
  });

  it('accepts a chain exactly as long as the queue', () => {
    const r = ring({ size: 4 });
    r.chain([{ len: 1 }, { len: 1 }, { len: 1 }, { len: 1 }], 0);
    expect(popOk(r).ringSlots).toBe(4);
  });
});

describe('PackedDeviceQueue.pop with a hostile driver', () => {
  it('CHAIN_TOO_LONG: every slot available with NEXT set', () => {
    const r = ring({ size: 4 });
    for (let slot = 0; slot < 4; slot++) {
      r.raw(slot, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
    }
    expect(expectViolation(r, 'CHAIN_TOO_LONG').message).toMatch(/longer than queue size 4/);
  });

  it('CHAIN_TOO_LONG: NEXT into a slot that is not available', () => {
    const r = ring({ size: 8 });
    r.raw(0, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
    // slot 1 is still zero: AVAIL=0 does not match the wrap counter 1.
    expect(expectViolation(r, 'CHAIN_TOO_LONG').message).toMatch(
      /slot 1, which the driver has not made available/,
    );
  });

  it('CHAIN_TOO_LONG: NEXT into a slot marked used', () => {
    const r = ring({ size: 8 });
    r.raw(0, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
    r.raw(1, { flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED });
    expectViolation(r, 'CHAIN_TOO_LONG');
  });

  it('CHAIN_TOO_LONG: a chain wrapping into slots with the old wrap counter', () => {
    const r = ring({ size: 4, position: { nextAvail: 3, nextUsed: 3 } });
    r.raw(3, { flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
    // Slot 0 carries last lap's "available" marking, which is not available in the new lap.
    r.raw(0, { flags: VIRTQ_DESC_F_AVAIL });
    expectViolation(r, 'CHAIN_TOO_LONG');
  });

  it('CHAIN_TOO_LARGE: lengths summing to 2^32', () => {
    const mib16 = 16 << 20;
    const r = ring({
      size: 8,
      indirect: true,
      regions: [{ guestAddress: 0, buffer: new ArrayBuffer(mib16) }],
    });
    // 256 entries of 16 MiB each, all over the same memory: 2^32 bytes in total.
    const entries = Array.from({ length: 256 }, () => ({ addr: 0, len: mib16 }));
    r.chain([{ addr: TABLE, len: r.table(entries), flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expect(expectViolation(r, 'CHAIN_TOO_LARGE').message).toMatch(/2\^32/);
  });

  it('CHAIN_TOO_LARGE: one byte short of 2^32 is fine', () => {
    const mib16 = 16 << 20;
    const r = ring({
      indirect: true,
      regions: [{ guestAddress: 0, buffer: new ArrayBuffer(mib16) }],
    });
    const entries = Array.from({ length: 256 }, (_, i) => ({
      addr: 0,
      len: i === 0 ? mib16 - 1 : mib16,
    }));
    r.chain([{ addr: TABLE, len: r.table(entries), flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expect(popOk(r).readableLength).toBe(2 ** 32 - 1);
  });

  const outOfMemory: [string, Desc][] = [
    ['past the end of RAM', { addr: 0x10000, len: 1 }],
    ['running off the end of RAM', { addr: 0xfff0, len: 0x20 }],
    ['with the maximum length', { addr: DATA, len: 0xffff_ffff }],
    ['at a 64-bit address beyond 2^53', { addr: 0, high: 0xffff_ffff, len: 1 }],
    ['at exactly 2^53', { addr: 0, high: 0x20_0000, len: 1 }],
    ['just below 2^53 but not RAM', { addr: 0xffff_f000, high: 0x1f_ffff, len: 1 }],
    ['that would wrap around 2^64', { addr: 0xffff_fff0, high: 0xffff_ffff, len: 0x20 }],
  ];
  for (const [name, desc] of outOfMemory) {
    it(`DESCRIPTOR_OUT_OF_MEMORY: a buffer ${name}`, () => {
      const r = ring();
      r.chain([{ len: 4 }, desc], 0);
      expect(expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY').message).toMatch(
        /outside guest memory/,
      );
    });
  }

  it('DESCRIPTOR_OUT_OF_MEMORY: a buffer spanning a hole between regions', () => {
    const r = ring({
      regions: [
        { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
        { guestAddress: 0x20000, buffer: new ArrayBuffer(0x1000) },
      ],
    });
    r.chain([{ addr: 0xff00, len: 0x200 }], 0);
    expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY');
  });

  it('DESCRIPTOR_OUT_OF_MEMORY: an indirect table entry outside RAM', () => {
    const r = ring({ indirect: true });
    const len = r.table([{ len: 4 }, { addr: 0, high: 0x8000_0000, len: 4 }]);
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expect(expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY').message).toMatch(
      /entry 1 of the indirect table/,
    );
  });

  it('READABLE_AFTER_WRITABLE: in the ring', () => {
    const r = ring();
    r.chain([{ len: 4 }, { len: 4, flags: VIRTQ_DESC_F_WRITE }, { len: 4 }], 0);
    expectViolation(r, 'READABLE_AFTER_WRITABLE');
  });

  it('READABLE_AFTER_WRITABLE: after a zero-length writable descriptor', () => {
    const r = ring();
    r.chain([{ len: 0, flags: VIRTQ_DESC_F_WRITE }, { len: 4 }], 0);
    expectViolation(r, 'READABLE_AFTER_WRITABLE');
  });

  it('READABLE_AFTER_WRITABLE: in an indirect table', () => {
    const r = ring({ indirect: true });
    const len = r.table([{ len: 4, flags: VIRTQ_DESC_F_WRITE }, { len: 4 }]);
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expectViolation(r, 'READABLE_AFTER_WRITABLE');
  });

  it('INDIRECT_NOT_NEGOTIATED', () => {
    const r = ring({ indirect: false });
    r.chain([{ addr: TABLE, len: r.table([{ len: 4 }]), flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expectViolation(r, 'INDIRECT_NOT_NEGOTIATED');
  });

  it('INDIRECT_WITH_NEXT: an indirect head that continues', () => {
    const r = ring({ indirect: true });
    const len = r.table([{ len: 4 }]);
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }, { len: 4 }], 0);
    expectViolation(r, 'INDIRECT_WITH_NEXT');
  });

  it('INDIRECT_WITH_NEXT: an indirect descriptor inside a NEXT-linked list', () => {
    const r = ring({ indirect: true });
    const len = r.table([{ len: 4 }]);
    r.chain([{ len: 4 }, { addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expectViolation(r, 'INDIRECT_WITH_NEXT');
  });

  it('INDIRECT_NESTED', () => {
    const r = ring({ indirect: true });
    const len = r.table([
      { len: 4 },
      { addr: TABLE + 0x100, len: 16, flags: VIRTQ_DESC_F_INDIRECT },
    ]);
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expectViolation(r, 'INDIRECT_NESTED');
  });

  for (const len of [0, 8, 24, 16 * 32769, 0xffff_fff0]) {
    it(`INDIRECT_BAD_LENGTH: table length ${len}`, () => {
      const r = ring({
        indirect: true,
        regions: [{ guestAddress: 0, buffer: new ArrayBuffer(0x100000) }],
      });
      r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
      expectViolation(r, 'INDIRECT_BAD_LENGTH');
    });
  }

  it('accepts the largest indirect table, 32768 entries', () => {
    const r = ring({
      indirect: true,
      regions: [{ guestAddress: 0, buffer: new ArrayBuffer(0x100000) }],
    });
    const len = r.table(Array.from({ length: 32768 }, () => ({ len: 1 })));
    r.chain([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    const chain = popOk(r);
    expect(chain.readable).toHaveLength(32768);
    expect(chain.ringSlots).toBe(1);
  });

  const tablesOutside: [string, Desc][] = [
    ['past the end of RAM', { addr: 0x10000 - 16, len: 32 }],
    ['at a 64-bit address', { addr: 0, high: 0xffff_ffff, len: 16 }],
  ];
  for (const [name, desc] of tablesOutside) {
    it(`INDIRECT_OUT_OF_MEMORY: a table ${name}`, () => {
      const r = ring({ indirect: true });
      r.chain([{ ...desc, flags: VIRTQ_DESC_F_INDIRECT }], 0);
      expectViolation(r, 'INDIRECT_OUT_OF_MEMORY');
    });
  }

  it('INDIRECT_OUT_OF_MEMORY: a table straddling two adjacent regions', () => {
    const r = ring({
      indirect: true,
      regions: [
        { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
        { guestAddress: 0x10000, buffer: new ArrayBuffer(0x1000) },
      ],
    });
    r.table([{ len: 1 }, { len: 1 }], 0x10000 - 16);
    r.chain([{ addr: 0x10000 - 16, len: 32, flags: VIRTQ_DESC_F_INDIRECT }], 0);
    expectViolation(r, 'INDIRECT_OUT_OF_MEMORY');
  });

  it('BUFFER_ID_OUT_OF_RANGE', () => {
    const r = ring({ size: 8 });
    r.chain([{ len: 4 }], 8);
    expect(expectViolation(r, 'BUFFER_ID_OUT_OF_RANGE').message).toMatch(/buffer id 8/);
  });

  it('BUFFER_ID_OUT_OF_RANGE: only the last descriptor’s id counts', () => {
    const r = ring({ size: 8 });
    r.chain([{ len: 4, id: 1 }, { len: 4 }], 0xffff);
    expectViolation(r, 'BUFFER_ID_OUT_OF_RANGE');
  });

  it('BUFFER_ID_IN_USE: an id reused before the device returned it', () => {
    const r = ring();
    r.chain([{ len: 4 }], 2);
    r.chain([{ len: 4 }], 2);
    popOk(r);
    expect(expectViolation(r, 'BUFFER_ID_IN_USE').message).toMatch(/already in flight/);
  });

  it('accepts an id again once it was returned', () => {
    const r = ring();
    r.chain([{ len: 4 }], 2);
    r.chain([{ len: 4 }], 2);
    r.queue.addUsed(popOk(r), 0);
    expect(popOk(r).id).toBe(2);
  });

  it('AVAIL_INDEX_JUMP: slots made available again before they were used', () => {
    const r = ring({ size: 4 });
    for (let id = 0; id < 4; id++) r.chain([{ len: 4 }], id);
    for (let i = 0; i < 4; i++) popOk(r);
    // The driver has seen nothing used, yet marks slot 0 available for the next lap.
    r.chain([{ len: 4 }], 0);
    expectViolation(r, 'AVAIL_INDEX_JUMP');
  });

  it('AVAIL_INDEX_JUMP: counts slots of returned but restored-away chains', () => {
    // Restored with two slots still in flight (1 and 2); the driver may use at most 2 more.
    const r = ring({ size: 4, position: { nextAvail: 3, nextUsed: 1 } });
    r.chain([{ len: 1 }, { len: 1 }], 0);
    expect(popOk(r).ringSlots).toBe(2);
    r.chain([{ len: 1 }], 1);
    expectViolation(r, 'AVAIL_INDEX_JUMP');
  });

  it('reports only the first problem and keeps the position', () => {
    const r = ring();
    r.chain([{ len: 4 }], 0);
    r.chain(
      [
        { len: 4, flags: VIRTQ_DESC_F_WRITE },
        { addr: 2 ** 40, len: 4 },
      ],
      9,
    );
    popOk(r);
    expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY');
    expect(r.queue.position()).toMatchObject({ nextAvail: 1 });
    expect(r.queue.inFlight).toBe(1);
  });

  it('never lets a throwing violation sink escape pop', () => {
    const r = ring({
      onViolation: () => {
        throw new Error('sink bug');
      },
    });
    r.chain([{ len: 4 }], 99);
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.broken).toBe(true);
  });
});

describe('PackedDeviceQueue.addUsed and publishUsed', () => {
  it('writes the used descriptor at the used slot, visible only after publishUsed', () => {
    const r = ring();
    r.chain([{ len: 4 }, { len: 100, flags: VIRTQ_DESC_F_WRITE }], 6);
    const chain = popOk(r);
    const before = r.read(0).flags;
    r.queue.addUsed(chain, 40);
    expect(r.read(0).flags).toBe(before);
    expect(r.queue.inFlight).toBe(0);
    expect(r.queue.publishUsed()).toBe(true);
    expect(r.read(0)).toEqual({
      id: 6,
      len: 40,
      flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE,
    });
    expect(r.queue.position()).toEqual({
      nextAvail: 2,
      availWrap: true,
      nextUsed: 2,
      usedWrap: true,
    });
    expect(r.queue.publishUsed()).toBe(false);
  });

  it('clamps the used length to the writable bytes and sets WRITE only when len > 0 (§2.8.3)', () => {
    const r = ring();
    for (let id = 0; id < 4; id++)
      r.chain([{ len: 4 }, { len: 10, flags: VIRTQ_DESC_F_WRITE }], id);
    const lens = [25, 0, -3, Number.NaN];
    for (const len of lens) r.queue.addUsed(popOk(r), len);
    r.queue.publishUsed();
    expect([0, 2, 4, 6].map((slot) => r.read(slot))).toEqual([
      { id: 0, len: 10, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE },
      { id: 1, len: 0, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED },
      { id: 2, len: 0, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED },
      { id: 3, len: 0, flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED },
    ]);
  });

  it('completes out of order, advancing by each chain’s ring slots', () => {
    const r = ring({ size: 8 });
    r.chain([{ len: 1 }, { len: 1 }, { len: 8, flags: VIRTQ_DESC_F_WRITE }], 5); // slots 0-2
    r.chain([{ len: 8, flags: VIRTQ_DESC_F_WRITE }], 2); // slot 3
    r.chain([{ len: 1 }, { len: 8, flags: VIRTQ_DESC_F_WRITE }], 7); // slots 4-5
    const [a, b, c] = [popOk(r), popOk(r), popOk(r)];
    r.queue.addUsed(b, 1);
    r.queue.addUsed(c, 2);
    r.queue.addUsed(a, 3);
    r.queue.publishUsed();
    // One used descriptor per buffer, in completion order, at positions 0, 0+1, 0+1+2.
    expect(r.read(0)).toMatchObject({ id: 2, len: 1 });
    expect(r.read(1)).toMatchObject({ id: 7, len: 2 });
    expect(r.read(3)).toMatchObject({ id: 5, len: 3 });
    expect(r.queue.position()).toMatchObject({ nextUsed: 6, usedWrap: true });
    expect(r.queue.inFlight).toBe(0);
  });

  it('flips the used wrap counter and writes AVAIL = USED = 0 on the next lap', () => {
    const r = ring({ size: 2 });
    for (let lap = 0; lap < 2; lap++) {
      r.chain([{ len: 4 }], 0);
      r.chain([{ len: 4 }], 1);
      const first = popOk(r);
      const second = popOk(r);
      r.queue.addUsed(second, 0);
      r.queue.addUsed(first, 0);
      r.queue.publishUsed();
    }
    expect(r.read(0)).toEqual({ id: 1, len: 0, flags: 0 });
    expect(r.read(1)).toEqual({ id: 0, len: 0, flags: 0 });
    expect(r.queue.position()).toEqual({
      nextAvail: 0,
      availWrap: true,
      nextUsed: 0,
      usedWrap: true,
    });
  });

  it('publishes a batch by writing the first descriptor’s flags last, with Atomics.store', () => {
    const r = ring();
    for (let id = 0; id < 3; id++) r.chain([{ len: 4 }], id);
    const chains = [popOk(r), popOk(r), popOk(r)];
    const store = vi.spyOn(Atomics, 'store');
    for (const chain of chains) r.queue.addUsed(chain, 0);
    const used = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
    // Later descriptors of the batch are complete already; the first still reads "available",
    // so a driver polling slot 0 sees none of them.
    expect(r.read(0).flags).toBe(VIRTQ_DESC_F_AVAIL);
    expect(r.read(1).flags).toBe(used);
    expect(r.read(2).flags).toBe(used);
    expect(store).not.toHaveBeenCalled();
    r.queue.publishUsed();
    expect(store).toHaveBeenCalledTimes(1);
    expect(store.mock.calls[0]![1]).toBe(7); // u16 index of slot 0's flags
    expect(store.mock.calls[0]![2]).toBe(used);
    expect(r.read(0).flags).toBe(used);
  });

  it('throws a DEVICE_STATE error when a chain is returned twice', () => {
    const r = ring();
    r.chain([{ len: 4 }], 1);
    const chain = popOk(r);
    r.queue.addUsed(chain, 0);
    expect(() => r.queue.addUsed(chain, 0)).toThrow(VirtkitError);
    try {
      r.queue.addUsed(chain, 0);
    } catch (error) {
      expect((error as VirtkitError).code).toBe('DEVICE_STATE');
    }
  });

  it('throws DEVICE_STATE for a chain popped from another queue, even one whose id is in flight here', () => {
    const a = ring();
    const b = ring();
    a.chain([{ len: 4 }], 1);
    b.chain([{ len: 4 }], 1);
    const mine = popOk(a);
    const theirs = popOk(b);
    expect(theirs.id).toBe(mine.id);
    expect(() => a.queue.addUsed(theirs, 0)).toThrow(
      expect.objectContaining({ code: 'DEVICE_STATE' }),
    );
    a.queue.addUsed(mine, 0);
    expect(a.queue.inFlight).toBe(0);
    expect(b.queue.inFlight).toBe(1);
  });

  it('still returns chains popped before the queue broke', () => {
    const r = ring();
    r.chain([{ len: 4 }], 1);
    const chain = popOk(r);
    r.chain([{ len: 4 }], 99);
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.broken).toBe(true);
    r.queue.addUsed(chain, 0);
    expect(r.queue.publishUsed()).toBe(true);
    expect(r.read(0)).toMatchObject({ id: 1 });
  });

  it('writes nothing after detach', () => {
    const r = ring();
    r.chain([{ len: 4 }], 1);
    r.chain([{ len: 4 }], 2);
    const chain = popOk(r);
    const snapshot = r.memory.view(0, 0x10000).slice();
    r.queue.detach();
    r.queue.addUsed(chain, 0);
    expect(r.queue.publishUsed()).toBe(false);
    r.queue.disableNotifications();
    expect(r.queue.enableNotifications()).toBe(false);
    expect(r.queue.hasAvailable()).toBe(false);
    expect(r.queue.pop()).toBeNull();
    const after = r.memory.view(0, 0x10000);
    expect(after.findIndex((byte, i) => byte !== snapshot[i])).toBe(-1);
  });
});

describe('PackedDeviceQueue used buffer notifications (driver event suppression)', () => {
  function completeOne(r: Ring, id: number): boolean {
    r.chain([{ len: 4 }], id);
    r.queue.addUsed(popOk(r), 0);
    return r.queue.publishUsed();
  }

  it('ENABLE notifies, DISABLE does not', () => {
    const r = ring();
    r.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
    expect(completeOne(r, 0)).toBe(true);
    r.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    expect(completeOne(r, 1)).toBe(false);
  });

  it('treats DESC without EVENT_IDX, and the reserved value 3, as ENABLE', () => {
    const r = ring({ eventIdx: false });
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 7, 1);
    expect(completeOne(r, 0)).toBe(true);
    r.setDriverEvent(3);
    expect(completeOne(r, 1)).toBe(true);
  });

  it('DESC notifies when the used position passes the given offset and wrap', () => {
    const r = ring({ size: 4, eventIdx: true });
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 2, 1);
    expect(completeOne(r, 0)).toBe(false); // used slot 0
    expect(completeOne(r, 1)).toBe(false); // used slot 1
    expect(completeOne(r, 2)).toBe(true); // used slot 2: the one asked for
    expect(completeOne(r, 3)).toBe(false); // slot 3 has been passed already
    // Next lap (device wrap counter now 0): asking for slot 1 of wrap 0.
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 1, 0);
    expect(completeOne(r, 0)).toBe(false);
    expect(completeOne(r, 1)).toBe(true);
  });

  it('DESC notifies when a batch or a multi-slot chain crosses the offset', () => {
    const r = ring({ size: 4, eventIdx: true, position: { nextAvail: 3, nextUsed: 3 } });
    // The driver wants to hear about slot 0 of the next lap (wrap 0).
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 0, 0);
    r.chain([{ len: 1 }, { len: 1 }], 1); // slots 3 and 0
    r.queue.addUsed(popOk(r), 0);
    expect(r.queue.publishUsed()).toBe(true);
    expect(r.queue.position()).toMatchObject({ nextUsed: 1, usedWrap: false });
  });

  it('DESC for a slot of a later lap does not notify', () => {
    const r = ring({ size: 4, eventIdx: true });
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 0, 0); // slot 0 of the next lap
    expect(completeOne(r, 0)).toBe(false);
    expect(completeOne(r, 1)).toBe(false);
  });
});

describe('PackedDeviceQueue available buffer notifications (device event suppression)', () => {
  it('disable writes DISABLE, enable writes ENABLE', () => {
    const r = ring();
    r.queue.disableNotifications();
    expect(r.deviceEvent().flags).toBe(RING_EVENT_FLAGS_DISABLE);
    expect(r.queue.enableNotifications()).toBe(false);
    expect(r.deviceEvent().flags).toBe(RING_EVENT_FLAGS_ENABLE);
  });

  it('with EVENT_IDX, enable asks for the next descriptor the device will read', () => {
    const r = ring({ size: 4, eventIdx: true });
    for (let id = 0; id < 4; id++) {
      r.chain([{ len: 1 }], id);
      r.queue.addUsed(popOk(r), 0);
    }
    r.queue.publishUsed();
    r.chain([{ len: 1 }], 0);
    popOk(r);
    expect(r.queue.enableNotifications()).toBe(false);
    expect(r.deviceEvent()).toEqual({ flags: RING_EVENT_FLAGS_DESC, offset: 1, wrap: 0 });
  });

  it('re-checks the ring after enabling: a buffer added in between is not lost', () => {
    const r = ring();
    r.queue.disableNotifications();
    r.chain([{ len: 1 }], 0);
    const chain = popOk(r);
    expect(r.queue.pop()).toBeNull();
    // The driver adds a buffer while notifications are still disabled, so it does not notify.
    r.chain([{ len: 1 }], 1);
    expect(r.queue.enableNotifications()).toBe(true);
    r.queue.addUsed(chain, 0);
    expect(popOk(r).id).toBe(1);
    expect(r.queue.enableNotifications()).toBe(false);
  });
});

describe('PackedDeviceQueue.resubmit (chains taken by an earlier instance)', () => {
  const saved = (
    descs: { addr?: number; len?: number; flags?: number }[],
    id: number,
  ): PackedDescriptor[] =>
    descs.map((d, i) => ({
      addr: BigInt(d.addr ?? DATA),
      len: d.len ?? 16,
      id: i === descs.length - 1 ? id : 0xbeef,
      flags: (d.flags ?? 0) | (i < descs.length - 1 ? VIRTQ_DESC_F_NEXT : 0),
    }));

  it('takes back a saved chain whose slots were overwritten, and the ring continues after it', () => {
    // The earlier instance popped 3 slots (ids 5, 2) and returned nothing; a new queue at that
    // position finds the ring slots no longer readable as those chains (the driver's view).
    const r = ring({
      size: 8,
      position: { nextAvail: 3, nextUsed: 0, availWrap: true, usedWrap: true },
    });
    expect(r.queue.unclaimedSlots).toBe(3);
    r.memory.write(DATA, new Uint8Array([1, 2, 3, 4]));
    const b = r.queue.resubmit(saved([{ len: 8, flags: VIRTQ_DESC_F_WRITE }], 2))!;
    const a = r.queue.resubmit(
      saved(
        [
          { addr: DATA, len: 4 },
          { addr: DATA + 64, len: 8, flags: VIRTQ_DESC_F_WRITE },
        ],
        5,
      ),
    )!;
    expect(r.violations).toEqual([]);
    expect([a.id, a.readableLength, a.writableLength, a.ringSlots]).toEqual([5, 4, 8, 2]);
    expect([b.id, b.writableLength, b.ringSlots]).toEqual([2, 8, 1]);
    expect(r.queue.unclaimedSlots).toBe(0);
    expect(r.queue.inFlight).toBe(2);
    // The slots are already counted: the driver can offer 5 more, not 8.
    r.chain([{ len: 1 }, { len: 1 }, { len: 1 }, { len: 1 }, { len: 1 }], 0);
    const c = popOk(r);
    // Returned like any chain: used descriptors from the used position, in completion order.
    r.queue.addUsed(a, 8);
    r.queue.addUsed(b, 3);
    r.queue.addUsed(c, 0);
    r.queue.publishUsed();
    expect(r.read(0)).toMatchObject({ id: 5, len: 8 });
    expect(r.read(2)).toMatchObject({ id: 2, len: 3 });
    expect(r.read(3)).toMatchObject({ id: 0, len: 0 });
    expect(r.queue.position()).toEqual({
      nextAvail: 0,
      availWrap: false,
      nextUsed: 0,
      usedWrap: false,
    });
    expect(r.queue.inFlight).toBe(0);
  });

  it('takes back an indirect chain from its table in guest memory', () => {
    const r = ring({
      indirect: true,
      position: { nextAvail: 1, nextUsed: 0, availWrap: true, usedWrap: true },
    });
    const len = r.table([
      { addr: DATA, len: 4 },
      { addr: DATA + 64, len: 32, flags: VIRTQ_DESC_F_WRITE },
    ]);
    const chain = r.queue.resubmit(saved([{ addr: TABLE, len, flags: VIRTQ_DESC_F_INDIRECT }], 6))!;
    expect(r.violations).toEqual([]);
    expect([chain.id, chain.readableLength, chain.writableLength, chain.ringSlots]).toEqual([
      6, 4, 32, 1,
    ]);
  });

  const bad: [string, PackedDescriptor[], string][] = [
    [
      'an address outside guest memory',
      saved([{ addr: 0xfff0, len: 64 }], 1),
      'DESCRIPTOR_OUT_OF_MEMORY',
    ],
    [
      'a 64-bit address beyond RAM',
      [{ addr: 1n << 63n, len: 1, id: 1, flags: 0 }],
      'DESCRIPTOR_OUT_OF_MEMORY',
    ],
    ['a huge length', saved([{ len: 0xffff_ffff }], 1), 'DESCRIPTOR_OUT_OF_MEMORY'],
    ['an id out of range', saved([{ len: 4 }], 8), 'BUFFER_ID_OUT_OF_RANGE'],
    ['no descriptors', [], 'CHAIN_TOO_LONG'],
    ['more descriptors than slots taken', saved([{}, {}, {}, {}], 1), 'AVAIL_INDEX_JUMP'],
    [
      'a last descriptor with NEXT',
      [{ addr: BigInt(DATA), len: 4, id: 1, flags: VIRTQ_DESC_F_NEXT }],
      'CHAIN_TOO_LONG',
    ],
    [
      'a chain ending early',
      [
        { addr: BigInt(DATA), len: 4, id: 1, flags: 0 },
        { addr: BigInt(DATA), len: 4, id: 1, flags: 0 },
      ],
      'CHAIN_TOO_LONG',
    ],
    [
      'readable after writable',
      saved([{ flags: VIRTQ_DESC_F_WRITE }, {}], 1),
      'READABLE_AFTER_WRITABLE',
    ],
    [
      'indirect not negotiated',
      saved([{ addr: TABLE, len: 16, flags: VIRTQ_DESC_F_INDIRECT }], 1),
      'INDIRECT_NOT_NEGOTIATED',
    ],
  ];
  for (const [what, descriptors, code] of bad) {
    it(`skips a saved chain with ${what} (${code}) and stays usable`, () => {
      const r = ring({ position: { nextAvail: 3, nextUsed: 0, availWrap: true, usedWrap: true } });
      expect(r.queue.resubmit(descriptors)).toBeNull();
      expect(r.violations.map((v) => v.code)).toEqual([code]);
      expect(r.violations[0]).toMatchObject({ queue: 3, needsReset: false });
      expect(r.violations[0]!.message).toMatch(/saved/);
      expect(r.queue.broken).toBe(false);
      expect(r.queue.unclaimedSlots).toBe(3);
      // A good copy and the ring still work.
      expect(r.queue.resubmit(saved([{ len: 4 }], 2))?.id).toBe(2);
      r.chain([{ len: 4 }], 3);
      expect(r.queue.pop()?.id).toBe(3);
      expect(r.violations).toHaveLength(1);
    });
  }

  it('refuses an id already in flight, from the ring or resubmitted twice', () => {
    const r = ring({ position: { nextAvail: 2, nextUsed: 0, availWrap: true, usedWrap: true } });
    r.chain([{ len: 4 }], 4);
    popOk(r);
    expect(r.queue.resubmit(saved([{ len: 4 }], 4))).toBeNull();
    expect(r.queue.resubmit(saved([{ len: 4 }], 1))?.id).toBe(1);
    expect(r.queue.resubmit(saved([{ len: 4 }], 1))).toBeNull();
    expect(r.violations.map((v) => v.code)).toEqual(['BUFFER_ID_IN_USE', 'BUFFER_ID_IN_USE']);
    expect(r.queue.unclaimedSlots).toBe(1);
  });

  it('has nothing to take back on a queue created without a position, or after detach', () => {
    const r = ring();
    expect(r.queue.unclaimedSlots).toBe(0);
    expect(r.queue.resubmit(saved([{ len: 4 }], 1))).toBeNull();
    expect(r.violations.map((v) => v.code)).toEqual(['AVAIL_INDEX_JUMP']);
    const s = ring({ position: { nextAvail: 1, nextUsed: 0, availWrap: true, usedWrap: true } });
    s.queue.detach();
    expect(s.queue.resubmit(saved([{ len: 4 }], 1))).toBeNull();
    expect(s.violations).toEqual([]);
  });
});

describe('PackedDeviceQueue.resubmit with hostile saved copies (property)', () => {
  const descriptor = fc.record({
    addr: fc.oneof(
      fc.constantFrom(0n, BigInt(DATA), BigInt(TABLE), 0xfff0n, 0x10000n, 2n ** 64n - 1n),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    ),
    len: fc.oneof(fc.constantFrom(0, 1, 16, 0x10, 0x100, 0xffff_ffff), fc.nat()),
    id: fc.oneof(fc.nat({ max: 9 }), fc.integer({ min: 0, max: 0xffff })),
    flags: fc.oneof(
      fc.constantFrom(0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT),
      fc.integer({ min: 0, max: 0xffff }),
    ),
  });

  // Well-formed copies (1 to 3 descriptors in guest memory, readable then writable), so the
  // property sees accepted chains as well as refusals.
  const wellFormed = fc
    .tuple(
      fc.integer({ min: 1, max: 3 }),
      fc.nat({ max: 3 }),
      fc.nat({ max: 7 }),
      fc.nat({ max: 3 }),
    )
    .map(([count, writableFrom, id, slot]): PackedDescriptor[] =>
      Array.from({ length: count }, (_, i) => ({
        addr: BigInt(DATA + 0x100 * (slot + i)),
        len: 0x40,
        id: i === count - 1 ? id : 0,
        flags:
          (i < count - 1 ? VIRTQ_DESC_F_NEXT : 0) | (i >= writableFrom ? VIRTQ_DESC_F_WRITE : 0),
      })),
    );

  it('never throws, never hands out memory outside the guest, never takes more than was held', () => {
    let accepted = 0;
    fc.assert(
      fc.property(
        fc.array(fc.oneof(wellFormed, fc.array(descriptor, { maxLength: 10 })), { maxLength: 6 }),
        fc.boolean(),
        fc.nat({ max: 7 }),
        (copies, indirect, held) => {
          const r = ring({
            indirect,
            position: { nextAvail: held, nextUsed: 0, availWrap: true, usedWrap: true },
          });
          const ids = new Set<number>();
          let slots = 0;
          for (const copy of copies) {
            const chain = r.queue.resubmit(copy);
            if (!chain) continue;
            expect(chain.id).toBeLessThan(8);
            expect(ids.has(chain.id)).toBe(false);
            ids.add(chain.id);
            accepted++;
            slots += chain.ringSlots;
            for (const s of [...chain.readable, ...chain.writable]) {
              expect(r.memory.checkRange(s.addr, s.len)).toBe(true);
            }
          }
          expect(slots).toBeLessThanOrEqual(held);
          expect(r.queue.unclaimedSlots).toBe(held - slots);
          expect(r.queue.broken).toBe(false);
          expect(r.violations.every((v) => !v.needsReset)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
    // The generator reaches valid copies too, not only refusals.
    expect(accepted).toBeGreaterThan(10);
  });
});
