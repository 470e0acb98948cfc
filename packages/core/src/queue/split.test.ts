import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../constants.js';
import {
  type ProtocolViolation,
  QueueConfigError,
  type ViolationCode,
  VirtkitError,
} from '../errors.js';
import { GuestMemory } from '../memory.js';
import { SplitDeviceQueue } from './split.js';
import type { QueuePosition } from './types.js';

const NEXT = VIRTQ_DESC_F_NEXT;
const WRITE = VIRTQ_DESC_F_WRITE;
const INDIRECT = VIRTQ_DESC_F_INDIRECT;

const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
/** Where test buffers and indirect tables go. */
const DATA = 0x10000;

function writeDescriptor(
  memory: GuestMemory,
  at: number,
  addr: number | bigint,
  len: number,
  flags: number,
  next: number,
): void {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(addr), true);
  view.setUint32(8, len, true);
  view.setUint16(12, flags, true);
  view.setUint16(14, next, true);
  memory.write(at, bytes); // may span adjacent regions
}

interface RawOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  memory?: GuestMemory;
  position?: QueuePosition;
}

/**
 * A device queue over rings the test writes by hand, byte by byte, as a (possibly hostile)
 * driver would.
 */
function raw(options: RawOptions = {}) {
  const memory = options.memory ?? GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
  const size = options.size ?? 8;
  const violations: ProtocolViolation[] = [];
  const queue = new SplitDeviceQueue(
    {
      index: 3,
      size,
      descAddr: DESC,
      driverAddr: AVAIL,
      deviceAddr: USED,
      eventIdx: options.eventIdx ?? false,
      indirect: options.indirect ?? false,
    },
    {
      memory,
      onViolation: (v) => violations.push(v),
      ...(options.position ? { position: options.position } : {}),
    },
  );
  let availIdx = options.position?.nextAvail ?? 0;
  memory.writeU16(AVAIL + 2, availIdx);
  memory.writeU16(USED + 2, options.position?.nextUsed ?? 0);
  return {
    memory,
    queue,
    violations,
    size,
    desc(index: number, addr: number | bigint, len: number, flags = 0, next = 0): void {
      writeDescriptor(memory, DESC + 16 * index, addr, len, flags, next);
    },
    entry(
      table: number,
      index: number,
      addr: number | bigint,
      len: number,
      flags = 0,
      next = 0,
    ): void {
      writeDescriptor(memory, table + 16 * index, addr, len, flags, next);
    },
    /** Puts heads in the available ring and publishes them. */
    offer(...heads: number[]): void {
      for (const head of heads) {
        memory.writeU16(AVAIL + 4 + 2 * (availIdx & (size - 1)), head);
        availIdx = (availIdx + 1) & 0xffff;
      }
      memory.writeU16(AVAIL + 2, availIdx);
    },
    setAvailIdx(value: number): void {
      availIdx = value;
      memory.writeU16(AVAIL + 2, value);
    },
    usedIdx: () => memory.readU16(USED + 2),
    used: (i: number) => ({
      id: memory.readU32(USED + 4 + 8 * (i & (size - 1))),
      len: memory.readU32(USED + 8 + 8 * (i & (size - 1))),
    }),
    usedFlags: () => memory.readU16(USED),
    availEvent: () => memory.readU16(USED + 4 + 8 * size),
    setAvailFlags: (value: number) => memory.writeU16(AVAIL, value),
    setUsedEvent: (value: number) => memory.writeU16(AVAIL + 4 + 2 * size, value),
  };
}

type Raw = ReturnType<typeof raw>;

/** Two 64 KiB regions with a 64 KiB hole between them. */
function holeyMemory(): GuestMemory {
  return new GuestMemory([
    { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
    { guestAddress: 0x20000, buffer: new ArrayBuffer(0x10000) },
  ]);
}

/** Pops expecting exactly one violation of `code`; checks the queue is broken afterwards. */
function expectViolation(r: Raw, code: ViolationCode): string {
  let result: unknown = 'not called';
  expect(() => {
    result = r.queue.pop();
  }).not.toThrow();
  expect(result).toBeNull();
  expect(r.violations).toHaveLength(1);
  expect(r.violations[0]).toMatchObject({ code, queue: 3, needsReset: true });
  expect(r.queue.broken).toBe(true);
  // Broken stays broken and silent: no more chains, no second report, no work announced.
  expect(r.queue.pop()).toBeNull();
  expect(r.queue.hasAvailable()).toBe(false);
  expect(r.queue.enableNotifications()).toBe(false);
  expect(r.violations).toHaveLength(1);
  return r.violations[0]!.message;
}

describe('SplitDeviceQueue configuration', () => {
  const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
  const base = {
    index: 1,
    descAddr: DESC,
    driverAddr: AVAIL,
    deviceAddr: USED,
    eventIdx: false,
    indirect: false,
  };
  const options = { memory, onViolation: () => {} };

  it.each([0, 3, 100, 65536, 1.5, -8, Number.NaN])('refuses queue size %s', (size) => {
    expect(() => new SplitDeviceQueue({ ...base, size }, options)).toThrow(QueueConfigError);
  });

  it('accepts sizes 1 and 32768', () => {
    expect(new SplitDeviceQueue({ ...base, size: 1 }, options).size).toBe(1);
    const big = {
      ...base,
      size: 32768,
      descAddr: 0x10000,
      driverAddr: 0x90000,
      deviceAddr: 0xa1000,
    };
    expect(new SplitDeviceQueue(big, options).size).toBe(32768);
  });

  it.each([
    ['descriptor table', { descAddr: DESC + 8 }],
    ['available ring', { driverAddr: AVAIL + 1 }],
    ['used ring', { deviceAddr: USED + 2 }],
  ])('refuses a misaligned %s', (what, change) => {
    expect(() => new SplitDeviceQueue({ ...base, size: 8, ...change }, options)).toThrow(what);
  });

  it.each([
    ['descriptor table', { descAddr: (1 << 20) - 16 * 8 + 16 }],
    ['available ring', { driverAddr: (1 << 20) - 6 - 2 * 8 + 2 }],
    // 6 + 8 * size bytes: the trailing avail_event counts even without EVENT_IDX.
    ['used ring', { deviceAddr: (1 << 20) - 64 }],
    ['used ring', { deviceAddr: 2 ** 53 }],
    ['used ring', { deviceAddr: -4 }],
  ])('refuses a %s outside guest memory', (what, change) => {
    expect(() => new SplitDeviceQueue({ ...base, size: 8, ...change }, options)).toThrow(what);
  });

  it('accepts ring parts at the very end of memory', () => {
    const setup = {
      ...base,
      size: 8,
      descAddr: (1 << 20) - 16 * 8,
      driverAddr: (1 << 20) - 6 - 2 * 8,
      deviceAddr: (1 << 20) - 6 - 8 * 8 - 2,
    };
    expect(() => new SplitDeviceQueue(setup, options)).not.toThrow();
  });

  it('refuses a ring part straddling two regions, even adjacent ones', () => {
    const twoRegions = new GuestMemory([
      { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
      { guestAddress: 0x10000, buffer: new ArrayBuffer(0x10000) },
    ]);
    const setup = { ...base, size: 16, descAddr: 0x10000 - 128 };
    expect(twoRegions.checkRange(setup.descAddr, 256)).toBe(true);
    expect(() => new SplitDeviceQueue(setup, { ...options, memory: twoRegions })).toThrow(
      /descriptor table .* one region/,
    );
  });

  it('refuses a position that is not a pair of u16 indices', () => {
    for (const position of [
      { nextAvail: 65536, nextUsed: 0 },
      { nextAvail: 0, nextUsed: -1 },
    ]) {
      expect(() => new SplitDeviceQueue({ ...base, size: 8 }, { ...options, position })).toThrow(
        QueueConfigError,
      );
    }
  });
});

describe('SplitDeviceQueue.pop', () => {
  it('returns nothing on an empty ring', () => {
    const r = raw();
    expect(r.queue.hasAvailable()).toBe(false);
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.broken).toBe(false);
  });

  it('pops a chain with readable then writable segments, lengths summed', () => {
    const r = raw();
    r.desc(5, DATA, 16, NEXT, 2);
    r.desc(2, DATA + 0x100, 32, NEXT, 7);
    r.desc(7, DATA + 0x200, 512, WRITE | NEXT, 0);
    r.desc(0, DATA + 0x400, 1, WRITE);
    r.offer(5);
    expect(r.queue.hasAvailable()).toBe(true);
    const chain = r.queue.pop()!;
    expect(chain.id).toBe(5);
    expect(chain.ringSlots).toBe(1);
    expect(chain.readable).toEqual([
      { addr: DATA, len: 16 },
      { addr: DATA + 0x100, len: 32 },
    ]);
    expect(chain.writable).toEqual([
      { addr: DATA + 0x200, len: 512 },
      { addr: DATA + 0x400, len: 1 },
    ]);
    expect(chain.readableLength).toBe(48);
    expect(chain.writableLength).toBe(513);
    expect(chain.memory).toBe(r.memory);
    expect(r.queue.inFlight).toBe(1);
    expect(r.queue.hasAvailable()).toBe(false);
    expect(r.queue.pop()).toBeNull();
    expect(r.queue.position()).toEqual({ nextAvail: 1, nextUsed: 0 });
  });

  it('skips zero-length descriptors', () => {
    const r = raw();
    r.desc(0, DATA, 0, NEXT, 1);
    r.desc(1, DATA, 8, NEXT, 2);
    r.desc(2, 2 ** 40, 0, WRITE); // never accessed, so its address does not matter
    r.offer(0);
    const chain = r.queue.pop()!;
    expect(chain.readable).toEqual([{ addr: DATA, len: 8 }]);
    expect(chain.writable).toEqual([]);
    expect(chain.writableLength).toBe(0);
    expect(r.violations).toEqual([]);
  });

  it('reads chains through the DescriptorChain reader and writer', () => {
    const r = raw();
    r.memory.write(DATA, Uint8Array.of(1, 2, 3, 4));
    r.desc(0, DATA, 4, NEXT, 1);
    r.desc(1, DATA + 0x100, 4, WRITE);
    r.offer(0);
    const chain = r.queue.pop()!;
    expect([...chain.reader().readBytes(4)]).toEqual([1, 2, 3, 4]);
    chain.writer().write(Uint8Array.of(9, 8, 7, 6));
    expect(r.memory.readU32(DATA + 0x100)).toBe(0x06070809);
  });

  it('follows an indirect table, ignoring the WRITE flag of the descriptor that refers to it', () => {
    const r = raw({ indirect: true });
    const table = DATA + 0x1000;
    r.entry(table, 0, DATA, 10, NEXT, 2);
    r.entry(table, 2, DATA + 0x100, 20, WRITE | NEXT, 1);
    r.entry(table, 1, DATA + 0x200, 30, WRITE);
    r.desc(4, table, 3 * 16, INDIRECT | WRITE);
    r.offer(4);
    const chain = r.queue.pop()!;
    expect(chain.id).toBe(4);
    expect(chain.ringSlots).toBe(1);
    expect(chain.readable).toEqual([{ addr: DATA, len: 10 }]);
    expect(chain.writable).toEqual([
      { addr: DATA + 0x100, len: 20 },
      { addr: DATA + 0x200, len: 30 },
    ]);
  });

  it('handles normal descriptors followed by one indirect descriptor (§2.7.5.3.2)', () => {
    const r = raw({ indirect: true });
    const table = DATA + 0x1000;
    r.entry(table, 0, DATA + 0x100, 20, WRITE);
    r.desc(0, DATA, 10, NEXT, 1);
    r.desc(1, table, 16, INDIRECT);
    r.offer(0);
    const chain = r.queue.pop()!;
    expect(chain.readable).toEqual([{ addr: DATA, len: 10 }]);
    expect(chain.writable).toEqual([{ addr: DATA + 0x100, len: 20 }]);
  });

  it('accepts an indirect table of 32768 descriptors', () => {
    const r = raw({ indirect: true, memory: GuestMemory.fromBuffer(new ArrayBuffer(1 << 20)) });
    const table = 0x80000;
    for (let i = 0; i < 32768; i++) r.entry(table, i, DATA, 1, i < 32767 ? NEXT : 0, i + 1);
    r.desc(0, table, 32768 * 16, INDIRECT);
    r.offer(0);
    expect(r.queue.pop()!.readable).toHaveLength(32768);
  });

  it('accepts buffers and indirect tables in a second region, and buffers spanning adjacent regions', () => {
    const memory = new GuestMemory([
      { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
      { guestAddress: 0x10000, buffer: new ArrayBuffer(0x10000) },
      { guestAddress: 0x100000, buffer: new ArrayBuffer(0x10000) },
    ]);
    const r = raw({ memory, indirect: true });
    const table = 0x100800;
    r.entry(table, 0, 0x100000, 64, NEXT, 1);
    r.entry(table, 1, 0x10000 - 8, 16, WRITE); // spans regions 0 and 1
    r.desc(0, 0x104000, 8, NEXT, 1);
    r.desc(1, table, 32, INDIRECT);
    r.offer(0);
    const chain = r.queue.pop()!;
    expect(chain.readable).toEqual([
      { addr: 0x104000, len: 8 },
      { addr: 0x100000, len: 64 },
    ]);
    expect(chain.writable).toEqual([{ addr: 0x10000 - 8, len: 16 }]);
    chain.writer().write(new Uint8Array(16).fill(0xaa));
    expect(memory.readU32(0x10000 + 4)).toBe(0xaaaaaaaa);
  });

  it('reads an indirect table that spans adjacent regions', () => {
    const memory = new GuestMemory([
      { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
      { guestAddress: 0x10000, buffer: new ArrayBuffer(0x10000) },
    ]);
    const r = raw({ memory, indirect: true });
    // Not even aligned: entry 1's fields straddle the boundary (tables need no alignment).
    const table = 0x10000 - 18;
    r.entry(table, 0, 0x8000, 4, NEXT, 1);
    r.entry(table, 1, 0x12000, 8, WRITE);
    r.desc(0, table, 32, INDIRECT);
    r.offer(0);
    const chain = r.queue.pop()!;
    expect(chain.readable).toEqual([{ addr: 0x8000, len: 4 }]);
    expect(chain.writable).toEqual([{ addr: 0x12000, len: 8 }]);
  });

  it('accepts a chain of exactly queue size descriptors and a total just under 4 GiB', () => {
    const r = raw({ indirect: true, memory: GuestMemory.fromBuffer(new ArrayBuffer(2 << 20)) });
    for (let i = 0; i < 8; i++) r.desc(i, DATA, 1, i < 7 ? NEXT : 0, i + 1);
    r.offer(0);
    expect(r.queue.pop()!.readable).toHaveLength(8);
    // 4095 MiB + (1 MiB - 1) = 2^32 - 1 bytes, all pointing at the same megabyte.
    const table = 0x100000 - 4096 * 16;
    for (let i = 0; i < 4096; i++) {
      r.entry(table, i, 0x100000, i < 4095 ? 0x100000 : 0xfffff, i < 4095 ? NEXT : 0, i + 1);
    }
    r.desc(1, table, 4096 * 16, INDIRECT);
    r.offer(1);
    expect(r.queue.pop()!.readableLength).toBe(2 ** 32 - 1);
    expect(r.violations).toEqual([]);
  });
});

describe('SplitDeviceQueue.pop with hostile rings', () => {
  it('AVAIL_INDEX_JUMP: avail.idx more than queue size ahead', () => {
    const r = raw();
    r.desc(0, DATA, 1);
    r.setAvailIdx(9);
    expect(expectViolation(r, 'AVAIL_INDEX_JUMP')).toBe(
      'driver moved the available index from 0 to 9, more than queue size 8 ahead',
    );
  });

  it('AVAIL_INDEX_JUMP: avail.idx moved backwards', () => {
    const r = raw({ position: { nextAvail: 10, nextUsed: 10 } });
    r.setAvailIdx(9);
    expectViolation(r, 'AVAIL_INDEX_JUMP');
  });

  it('accepts avail.idx exactly queue size ahead', () => {
    const r = raw();
    for (let i = 0; i < 8; i++) r.desc(i, DATA, 1);
    r.offer(0, 1, 2, 3, 4, 5, 6, 7);
    for (let i = 0; i < 8; i++) expect(r.queue.pop()?.id).toBe(i);
    expect(r.queue.broken).toBe(false);
  });

  it('HEAD_OUT_OF_RANGE: head index >= queue size', () => {
    const r = raw();
    r.offer(8);
    expect(expectViolation(r, 'HEAD_OUT_OF_RANGE')).toBe(
      'driver made descriptor 8 available, but queue size is 8',
    );
  });

  it('HEAD_IN_FLIGHT: a head the device still owns made available again', () => {
    const r = raw();
    r.desc(2, DATA, 1);
    r.offer(2, 2);
    expect(r.queue.pop()?.id).toBe(2);
    expectViolation(r, 'HEAD_IN_FLIGHT');
  });

  it('allows a head again once it was returned', () => {
    const r = raw();
    r.desc(2, DATA, 1);
    r.offer(2, 2);
    r.queue.addUsed(r.queue.pop()!, 0);
    expect(r.queue.pop()?.id).toBe(2);
    expect(r.violations).toEqual([]);
  });

  it('NEXT_OUT_OF_RANGE: next >= queue size', () => {
    const r = raw();
    r.desc(0, DATA, 1, NEXT, 1);
    r.desc(1, DATA, 1, NEXT, 8);
    r.offer(0);
    expect(expectViolation(r, 'NEXT_OUT_OF_RANGE')).toBe(
      'descriptor 1 chains to descriptor 8, but queue size is 8',
    );
  });

  it('NEXT_OUT_OF_RANGE: next >= indirect table entries', () => {
    const r = raw({ indirect: true });
    r.entry(DATA, 0, DATA, 1, NEXT, 2);
    r.desc(0, DATA, 32, INDIRECT);
    r.offer(0);
    expectViolation(r, 'NEXT_OUT_OF_RANGE');
  });

  it('CHAIN_TOO_LONG: a descriptor loop', () => {
    const r = raw();
    r.desc(0, DATA, 1, NEXT, 1);
    r.desc(1, DATA, 1, NEXT, 0);
    r.offer(0);
    expect(expectViolation(r, 'CHAIN_TOO_LONG')).toMatch(/longer than queue size 8/);
  });

  it('CHAIN_TOO_LONG: a loop of zero-length descriptors', () => {
    const r = raw();
    r.desc(3, DATA, 0, NEXT, 3);
    r.offer(3);
    expectViolation(r, 'CHAIN_TOO_LONG');
  });

  it('CHAIN_TOO_LONG: a loop inside an indirect table', () => {
    const r = raw({ indirect: true, size: 256 });
    r.entry(DATA, 0, DATA, 1, NEXT, 1);
    r.entry(DATA, 1, DATA, 1, WRITE | NEXT, 1);
    r.desc(0, DATA, 32, INDIRECT);
    r.offer(0);
    expect(expectViolation(r, 'CHAIN_TOO_LONG')).toMatch(/indirect table of 2 descriptors/);
  });

  it('CHAIN_TOO_LARGE: total length reaches 2^32', () => {
    const r = raw({ indirect: true, memory: GuestMemory.fromBuffer(new ArrayBuffer(2 << 20)) });
    const table = 0x100000 - 4096 * 16;
    for (let i = 0; i < 4096; i++)
      r.entry(table, i, 0x100000, 0x100000, i < 4095 ? NEXT : 0, i + 1);
    r.desc(1, table, 4096 * 16, INDIRECT);
    r.offer(1);
    expectViolation(r, 'CHAIN_TOO_LARGE');
  });

  it.each([
    ['past the end of memory', 1 << 20, 1],
    ['crossing the end of memory', (1 << 20) - 4, 8],
    ['of u32-max length', DATA, 0xffff_ffff],
    ['at a 64-bit address beyond 2^53 (never rounded)', 0xffff_ffff_0000_0000n, 16],
    ['at exactly 2^53', 2n ** 53n, 16],
    ['at 2^53 - 1', 2 ** 53 - 1, 1],
  ])('DESCRIPTOR_OUT_OF_MEMORY: buffer %s', (_, addr, len) => {
    const r = raw();
    r.desc(0, DATA, 4, NEXT, 1);
    r.desc(1, addr, len, WRITE);
    r.offer(0);
    expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY');
  });

  it('DESCRIPTOR_OUT_OF_MEMORY: buffer in the hole between two regions', () => {
    const r = raw({ memory: holeyMemory() });
    r.desc(0, 0x18000, 4);
    r.offer(0);
    expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY');
    const r2 = raw({ memory: holeyMemory() });
    r2.desc(1, 0x10000 - 2, 4); // starts in region 0, runs into the hole
    r2.offer(1);
    expect(expectViolation(r2, 'DESCRIPTOR_OUT_OF_MEMORY')).toBe(
      'descriptor 1 points to 4 bytes at 0xfffe, outside guest memory',
    );
  });

  it('reports a huge 64-bit address exactly in the message', () => {
    const r = raw();
    r.desc(0, 0xdead_beef_0000_1000n, 16);
    r.offer(0);
    expect(expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY')).toContain('0xdeadbeef00001000');
  });

  it('READABLE_AFTER_WRITABLE: in the descriptor table', () => {
    const r = raw();
    r.desc(0, DATA, 4, WRITE | NEXT, 1);
    r.desc(1, DATA, 4);
    r.offer(0);
    expect(expectViolation(r, 'READABLE_AFTER_WRITABLE')).toBe(
      'descriptor 1 is device-readable but follows a device-writable descriptor',
    );
  });

  it('READABLE_AFTER_WRITABLE: even for a zero-length readable descriptor', () => {
    const r = raw();
    r.desc(0, DATA, 4, WRITE | NEXT, 1);
    r.desc(1, DATA, 0);
    r.offer(0);
    expectViolation(r, 'READABLE_AFTER_WRITABLE');
  });

  it('READABLE_AFTER_WRITABLE: readable entry of an indirect table after a writable descriptor', () => {
    const r = raw({ indirect: true });
    r.entry(DATA, 0, DATA, 4);
    r.desc(0, DATA, 4, WRITE | NEXT, 1);
    r.desc(1, DATA, 16, INDIRECT);
    r.offer(0);
    expectViolation(r, 'READABLE_AFTER_WRITABLE');
  });

  it('INDIRECT_NOT_NEGOTIATED', () => {
    const r = raw({ indirect: false });
    r.entry(DATA, 0, DATA, 4);
    r.desc(0, DATA, 16, INDIRECT);
    r.offer(0);
    expectViolation(r, 'INDIRECT_NOT_NEGOTIATED');
  });

  it('INDIRECT_NESTED', () => {
    const r = raw({ indirect: true });
    r.entry(DATA, 0, DATA, 4, NEXT, 1);
    r.entry(DATA, 1, DATA, 16, INDIRECT);
    r.desc(0, DATA, 32, INDIRECT);
    r.offer(0);
    expectViolation(r, 'INDIRECT_NESTED');
  });

  it('INDIRECT_WITH_NEXT', () => {
    const r = raw({ indirect: true });
    r.entry(DATA, 0, DATA, 4);
    r.desc(0, DATA, 16, INDIRECT | NEXT, 1);
    r.desc(1, DATA, 4, WRITE);
    r.offer(0);
    expectViolation(r, 'INDIRECT_WITH_NEXT');
  });

  it.each([0, 24, 8, 32768 * 16 + 16, 0xffff_fff0])(
    'INDIRECT_BAD_LENGTH: table of %s bytes',
    (len) => {
      const r = raw({ indirect: true });
      r.desc(0, DATA, len, INDIRECT);
      r.offer(0);
      expectViolation(r, 'INDIRECT_BAD_LENGTH');
    },
  );

  it.each([
    ['past the end of memory', (1 << 20) - 16, 32],
    ['at a huge 64-bit address', 0x8000_0000_0000_0000n, 16],
  ])('INDIRECT_OUT_OF_MEMORY: table %s', (_, addr, len) => {
    const r = raw({ indirect: true });
    r.desc(0, addr, len, INDIRECT);
    r.offer(0);
    expectViolation(r, 'INDIRECT_OUT_OF_MEMORY');
  });

  it('validates the whole chain before returning anything, and does not advance', () => {
    const r = raw();
    r.desc(0, DATA, 4);
    r.desc(1, DATA, 4, NEXT, 2);
    r.desc(2, DATA, 4, NEXT, 3);
    r.desc(3, 1 << 30, 4);
    r.offer(0, 1);
    expect(r.queue.pop()?.id).toBe(0);
    expectViolation(r, 'DESCRIPTOR_OUT_OF_MEMORY');
    expect(r.queue.position()).toEqual({ nextAvail: 1, nextUsed: 0 });
    expect(r.queue.inFlight).toBe(1);
  });

  it('reads each descriptor once: a rewrite after pop does not change the returned chain', () => {
    const r = raw();
    r.desc(0, DATA, 4, WRITE);
    r.offer(0);
    const chain = r.queue.pop()!;
    r.desc(0, 1 << 30, 0xffff_ffff, WRITE);
    expect(chain.writable).toEqual([{ addr: DATA, len: 4 }]);
  });

  it('still completes chains popped before the violation', () => {
    const r = raw();
    r.desc(0, DATA, 4, WRITE);
    r.offer(0, 9);
    const chain = r.queue.pop()!;
    expectViolation(r, 'HEAD_OUT_OF_RANGE');
    r.queue.addUsed(chain, 4);
    expect(r.queue.publishUsed()).toBe(true);
    expect(r.usedIdx()).toBe(1);
    expect(r.used(0)).toEqual({ id: 0, len: 4 });
  });

  describe('a throwing violation sink', () => {
    afterEach(() => {
      vi.unstubAllGlobals();
    });

    it('does not make pop throw; the error is rethrown in a microtask', () => {
      const deferred: (() => void)[] = [];
      vi.stubGlobal('queueMicrotask', (callback: () => void) => deferred.push(callback));
      const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
      const queue = new SplitDeviceQueue(
        {
          index: 0,
          size: 8,
          descAddr: DESC,
          driverAddr: AVAIL,
          deviceAddr: USED,
          eventIdx: false,
          indirect: false,
        },
        {
          memory,
          onViolation: () => {
            throw new Error('sink failed');
          },
        },
      );
      memory.writeU16(AVAIL + 4, 8);
      memory.writeU16(AVAIL + 2, 1);
      expect(queue.pop()).toBeNull();
      expect(queue.broken).toBe(true);
      expect(deferred).toHaveLength(1);
      expect(() => deferred[0]!()).toThrow('sink failed');
    });
  });
});

describe('SplitDeviceQueue used ring', () => {
  function ready(count: number, options: RawOptions = {}) {
    const r = raw(options);
    for (let i = 0; i < count; i++) r.desc(i, DATA + 0x100 * i, 0x100, WRITE);
    r.offer(...Array.from({ length: count }, (_, i) => i));
    return r;
  }

  it('publishes a batch with one used.idx store, in completion order', () => {
    const r = ready(4);
    const chains = [r.queue.pop()!, r.queue.pop()!, r.queue.pop()!, r.queue.pop()!];
    expect(r.queue.inFlight).toBe(4);
    // Out of order: 2, 0, 3; chain 1 stays in flight.
    r.queue.addUsed(chains[2]!, 12);
    r.queue.addUsed(chains[0]!, 10);
    r.queue.addUsed(chains[3]!, 13);
    expect(r.usedIdx()).toBe(0); // nothing visible before publish
    expect(r.queue.publishUsed()).toBe(true);
    expect(r.usedIdx()).toBe(3);
    expect([r.used(0), r.used(1), r.used(2)]).toEqual([
      { id: 2, len: 12 },
      { id: 0, len: 10 },
      { id: 3, len: 13 },
    ]);
    expect(r.queue.inFlight).toBe(1);
    expect(r.queue.position()).toEqual({ nextAvail: 4, nextUsed: 3 });
    expect(r.queue.publishUsed()).toBe(false); // nothing new
  });

  it('clamps a written length above the writable length (a device bug)', () => {
    const r = ready(4);
    r.queue.addUsed(r.queue.pop()!, 0x1_0000_0000);
    r.queue.addUsed(r.queue.pop()!, -5);
    r.queue.addUsed(r.queue.pop()!, 128.5);
    r.queue.addUsed(r.queue.pop()!, 0x101);
    r.queue.publishUsed();
    expect([r.used(0).len, r.used(1).len, r.used(2).len, r.used(3).len]).toEqual([
      0x100, 0, 0x80, 0x100,
    ]);
  });

  it('throws DEVICE_STATE when a chain is returned twice', () => {
    const r = ready(1);
    const chain = r.queue.pop()!;
    r.queue.addUsed(chain, 0);
    let error: unknown;
    try {
      r.queue.addUsed(chain, 0);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VirtkitError);
    expect((error as VirtkitError).code).toBe('DEVICE_STATE');
    expect(r.queue.inFlight).toBe(0);
  });

  it('throws DEVICE_STATE for a chain popped from another queue, even one whose id is in flight here', () => {
    const a = ready(1);
    const b = ready(1);
    const mine = a.queue.pop()!;
    const theirs = b.queue.pop()!;
    expect(theirs.id).toBe(mine.id);
    expect(() => a.queue.addUsed(theirs, 0)).toThrow(
      expect.objectContaining({ code: 'DEVICE_STATE' }),
    );
    a.queue.addUsed(mine, 4);
    expect(a.queue.publishUsed()).toBe(true);
    expect(a.used(0)).toEqual({ id: 0, len: 4 });
    expect(b.queue.inFlight).toBe(1);
  });

  it('wraps the u16 indices past 65535', () => {
    const r = ready(0, { position: { nextAvail: 65533, nextUsed: 65530 } });
    for (let i = 0; i < 8; i++) r.desc(i, DATA + 0x100 * i, 0x100, WRITE);
    for (let round = 0; round < 3; round++) {
      r.offer(0, 1, 2, 3, 4);
      for (let chain = r.queue.pop(); chain; chain = r.queue.pop())
        r.queue.addUsed(chain, chain.id);
      r.queue.publishUsed();
    }
    expect(r.violations).toEqual([]);
    expect(r.queue.position()).toEqual({
      nextAvail: (65533 + 15) & 0xffff,
      nextUsed: (65530 + 15) & 0xffff,
    });
    expect(r.usedIdx()).toBe((65530 + 15) & 0xffff);
    // The last element went to slot (65530 + 14) & 7.
    expect(r.used(65530 + 14)).toEqual({ id: 4, len: 4 });
  });

  it('detach stops pops, completions and notification changes', () => {
    const r = ready(2);
    const chain = r.queue.pop()!;
    r.queue.detach();
    expect(r.queue.pop()).toBeNull();
    r.queue.addUsed(chain, 1);
    expect(r.queue.publishUsed()).toBe(false);
    expect(r.usedIdx()).toBe(0);
    r.queue.disableNotifications();
    expect(r.usedFlags()).toBe(0);
    expect(r.queue.enableNotifications()).toBe(false);
  });
});

describe('SplitDeviceQueue interrupt suppression', () => {
  function withChains(count: number, options: RawOptions) {
    const r = raw({ size: 16, ...options });
    for (let i = 0; i < 16; i++) r.desc(i, DATA, 1, WRITE);
    const complete = (n: number): boolean => {
      const heads = Array.from({ length: n }, (_, i) => i);
      r.offer(...heads);
      for (let chain = r.queue.pop(); chain; chain = r.queue.pop()) r.queue.addUsed(chain, 1);
      return r.queue.publishUsed();
    };
    if (count) complete(count);
    return { r, complete };
  }

  it('without EVENT_IDX follows VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const { r, complete } = withChains(0, { eventIdx: false });
    expect(complete(1)).toBe(true);
    r.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(complete(1)).toBe(false);
    r.setUsedEvent(0xffff); // ignored without EVENT_IDX
    r.setAvailFlags(0);
    expect(complete(1)).toBe(true);
  });

  it('with EVENT_IDX interrupts only when used.idx passes used_event, ignoring the flag', () => {
    const { r, complete } = withChains(0, { eventIdx: true });
    r.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    r.setUsedEvent(2); // "interrupt once the used entry 2 is written"
    expect(complete(1)).toBe(false); // used.idx 0 -> 1
    expect(complete(1)).toBe(false); // 1 -> 2
    expect(complete(1)).toBe(true); // 2 -> 3 wrote entry 2
    expect(complete(1)).toBe(false); // already past
    r.setUsedEvent(5);
    expect(complete(3)).toBe(true); // 4 -> 7 crosses 5 within one batch
  });

  it('with EVENT_IDX uses wrapping arithmetic across 65535', () => {
    const { r, complete } = withChains(0, {
      eventIdx: true,
      position: { nextAvail: 65534, nextUsed: 65534 },
    });
    expect(complete(1)).toBe(true); // first publish after a restored position: always
    r.setUsedEvent(0);
    expect(complete(1)).toBe(false); // 65535 -> 0
    expect(complete(1)).toBe(true); // 0 -> 1 wrote entry 0
  });

  it('with EVENT_IDX interrupts on a fresh ring whose used_event is 0', () => {
    const { complete } = withChains(0, { eventIdx: true });
    expect(complete(1)).toBe(true);
  });
});

describe('SplitDeviceQueue notification suppression', () => {
  it('without EVENT_IDX sets and clears VIRTQ_USED_F_NO_NOTIFY', () => {
    const r = raw();
    r.queue.disableNotifications();
    expect(r.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(r.queue.enableNotifications()).toBe(false);
    expect(r.usedFlags()).toBe(0);
  });

  it('clears a NO_NOTIFY left in the ring by a previous device instance', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
    memory.writeU16(USED, VIRTQ_USED_F_NO_NOTIFY);
    const r = raw({ memory, position: { nextAvail: 7, nextUsed: 7 } });
    expect(r.queue.enableNotifications()).toBe(false);
    expect(r.usedFlags()).toBe(0);
  });

  it('with EVENT_IDX keeps avail_event at the next entry, and behind it while disabled', () => {
    const r = raw({ eventIdx: true });
    for (let i = 0; i < 6; i++) r.desc(i, DATA, 1);
    r.offer(0, 1);
    r.queue.pop();
    expect(r.availEvent()).toBe(1); // enabled: each pop names the next entry
    r.queue.disableNotifications();
    expect(r.usedFlags()).toBe(0); // flags are not used with EVENT_IDX
    r.queue.pop();
    r.offer(2, 3);
    r.queue.pop();
    r.queue.pop();
    expect(r.availEvent()).toBe(1); // disabled: left behind, so the driver does not kick
    r.offer(4);
    expect(r.queue.enableNotifications()).toBe(true); // entry 4 is already there
    expect(r.availEvent()).toBe(4);
    r.queue.pop();
    expect(r.availEvent()).toBe(5); // enabled again
  });

  it('enableNotifications reports buffers added between an empty pop and the enable', () => {
    for (const eventIdx of [false, true]) {
      const r = raw({ eventIdx });
      r.desc(0, DATA, 1);
      r.desc(1, DATA, 1);
      r.queue.disableNotifications();
      expect(r.queue.pop()).toBeNull();
      r.offer(0); // the driver saw notifications disabled, so it did not kick
      expect(r.queue.enableNotifications()).toBe(true);
      expect(r.queue.pop()?.id).toBe(0);
      expect(r.queue.enableNotifications()).toBe(false);
      r.offer(1);
      expect(r.queue.hasAvailable()).toBe(true);
      expect(r.queue.pop()?.id).toBe(1);
    }
  });
});
