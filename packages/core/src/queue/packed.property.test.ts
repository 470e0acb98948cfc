/**
 * Property tests of the packed ring: random rings built by the driver side, randomly corrupted the
 * way a hostile guest could, processed by the device side. Every chain the device hands out is
 * compared with an independent, deliberately plain re-reading of the ring.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../constants.js';
import { type ProtocolViolation, VirtkitError } from '../errors.js';
import { GuestMemory } from '../memory.js';
import type { DescriptorChain, Segment } from './chain.js';
import { PackedDeviceQueue } from './packed.js';
import { PackedDriverQueue } from './packed-driver.js';

const HIGH = 2 ** 44;
/** Rings and tables live in the first region; buffers anywhere, some across the region boundary. */
function guestMemory(): GuestMemory {
  return new GuestMemory([
    { guestAddress: 0, buffer: new ArrayBuffer(0x10000) },
    { guestAddress: 0x10000, buffer: new ArrayBuffer(0x4000) }, // adjacent to the first
    { guestAddress: 0x20000, buffer: new ArrayBuffer(0x4000) }, // after a hole
    { guestAddress: HIGH, buffer: new ArrayBuffer(0x1000) }, // above 4 GiB
  ]);
}

const segment = fc.record({
  addr: fc.constantFrom(0x8000, 0xfff0, 0x13f00, 0x20000, 0x23f00, HIGH, HIGH + 0xf00),
  len: fc.constantFrom(0, 1, 16, 0x20, 0x100),
});
const buffer = fc
  .record({
    readable: fc.array(segment, { maxLength: 3 }),
    writable: fc.array(segment, { maxLength: 3 }),
  })
  .filter((b) => b.readable.length + b.writable.length > 0);

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const interestingU32 = fc.oneof(
  u32,
  fc.constantFrom(0, 1, 15, 16, 17, 0x7fff_ffff, 0x8000_0000, 0xffff_fff0, 0xffff_ffff),
);
const addressHigh = fc.oneof(fc.constantFrom(0, 0x1000, 0x1f_ffff, 0x20_0000, 0xffff_ffff), u32);
const flagBits = fc.oneof(
  u16,
  fc
    .subarray([
      VIRTQ_DESC_F_NEXT,
      VIRTQ_DESC_F_WRITE,
      VIRTQ_DESC_F_INDIRECT,
      1 << 7, // AVAIL
      1 << 15, // USED
    ])
    .map((bits) => bits.reduce((a, b) => a | b, 0)),
);
/** A ring slot relative to the device's next one: mostly where it is about to read. */
const slot = fc.oneof({ weight: 3, arbitrary: fc.nat({ max: 3 }) }, fc.nat({ max: 0xff }));
const honestStep = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('add' as const), buffer }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('publish' as const) }) },
  // Fills the ring to the last slot, where reuse mistakes become possible.
  { weight: 1, arbitrary: fc.record({ t: fc.constant('fill' as const), buffer }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('pop' as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('complete' as const),
      pick: fc.nat(),
      len: fc.oneof(fc.nat({ max: 0x200 }), fc.constantFrom(-1, Number.NaN, 2 ** 32, 1e300, 0.5)),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('publishUsed' as const) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('take' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('enable' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('disable' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('interrupts' as const), on: fc.boolean() }) },
);
// Writes a well-formed available descriptor, as a driver reusing a slot it does not own would.
const reuse = fc.record({
  t: fc.constant('reuse' as const),
  slot,
  id: fc.nat({ max: 15 }),
  bits: flagBits,
});
const corruption = fc.oneof(
  fc.record({ t: fc.constant('flags' as const), slot, value: flagBits }),
  fc.record({ t: fc.constant('id' as const), slot, value: fc.oneof(u16, fc.nat({ max: 16 })) }),
  fc.record({ t: fc.constant('len' as const), slot, value: interestingU32 }),
  fc.record({ t: fc.constant('addr' as const), slot, low: interestingU32, high: addressHigh }),
  fc.record({
    t: fc.constant('descriptor' as const),
    slot,
    words: fc.tuple(interestingU32, addressHigh, interestingU32, u32),
  }),
  fc.record({ t: fc.constant('copy' as const), from: slot, to: slot }),
  // Marks a slot available in either lap, as a driver reusing slots it does not own would.
  fc.record({ t: fc.constant('mark' as const), slot, expected: fc.boolean(), bits: flagBits }),
  reuse,
  fc.record({ t: fc.constant('tableFlags' as const), entry: fc.nat({ max: 63 }), value: flagBits }),
  fc.record({
    t: fc.constant('table' as const),
    word: fc.nat({ max: 0x3ff }),
    value: interestingU32,
  }),
  fc.record({
    t: fc.constant('event' as const),
    device: fc.boolean(),
    value: fc.oneof(u32, fc.constantFrom(0x0000_0000, 0x0001_0000, 0x0002_8003, 0x0003_0000)),
  }),
);
const hostileStep = fc.oneof(
  { weight: 3, arbitrary: honestStep },
  { weight: 1, arbitrary: corruption },
);
/** Honest steps and slot reuse only: rings that look fine except for whose slot is whose. */
const reuseStep = fc.oneof(
  { weight: 4, arbitrary: honestStep },
  { weight: 1, arbitrary: reuse },
  // A single-slot buffer in a slot the device still owns: only the reuse itself is wrong.
  { weight: 1, arbitrary: reuse.map((r) => ({ ...r, bits: r.bits & VIRTQ_DESC_F_WRITE })) },
);

type Step = typeof honestStep extends fc.Arbitrary<infer S> ? S : never;
type HostileStep = typeof hostileStep extends fc.Arbitrary<infer S> ? S : never;

const ring = fc.record({
  size: fc.integer({ min: 1, max: 12 }),
  eventIdx: fc.boolean(),
  indirect: fc.boolean(),
});

/** What a plain re-reading of the ring says the next pop must return. */
type Expected =
  | { kind: 'empty' }
  | { kind: 'invalid'; code?: string }
  | { kind: 'chain'; id: number; slots: number; readable: Segment[]; writable: Segment[] };

/**
 * An independent reading of §2.8 with BigInt addresses and the GuestMemory accessors: first the
 * list structure, then every element, then the slot and buffer id bookkeeping. For a malformed
 * list or element only whether the device must refuse the chain is compared, not which rule it
 * reports first; a well-formed chain refused for its slots or id must be refused for that reason.
 */
function expectedPop(
  memory: GuestMemory,
  descAddr: number,
  size: number,
  indirect: boolean,
  position: { nextAvail: number; availWrap?: boolean },
  inFlight: Map<number, number>,
): Expected {
  const read = (i: number) => {
    const at = descAddr + 16 * i;
    return {
      addr: memory.readU64(at),
      len: memory.readU32(at + 8),
      id: memory.readU16(at + 12),
      flags: memory.readU16(at + 14),
    };
  };
  const isAvailable = (flags: number, wrap: number) =>
    ((flags >> 7) & 1) === wrap && ((flags >> 15) & 1) !== wrap;
  let index = position.nextAvail;
  let wrap = position.availWrap === false ? 0 : 1;
  if (!isAvailable(read(index).flags, wrap)) return { kind: 'empty' };
  const elements: { addr: bigint; len: number; write: boolean }[] = [];
  let slots = 0;
  let last = read(index);
  for (;;) {
    slots++;
    const d = read(index);
    last = d;
    if (d.flags & VIRTQ_DESC_F_INDIRECT) {
      if (!indirect || d.flags & VIRTQ_DESC_F_NEXT || slots > 1) return { kind: 'invalid' };
      if (d.len === 0 || d.len % 16 !== 0 || d.len / 16 > 32768) return { kind: 'invalid' };
      if (d.addr + BigInt(d.len) > BigInt(Number.MAX_SAFE_INTEGER)) return { kind: 'invalid' };
      if (!memory.findRegion(Number(d.addr), d.len)) return { kind: 'invalid' };
      for (let e = 0; e < d.len / 16; e++) {
        const at = Number(d.addr) + 16 * e;
        const flags = memory.readU16(at + 14);
        if (flags & VIRTQ_DESC_F_INDIRECT) return { kind: 'invalid' };
        elements.push({
          addr: memory.readU64(at),
          len: memory.readU32(at + 8),
          write: (flags & VIRTQ_DESC_F_WRITE) !== 0,
        });
      }
    } else {
      elements.push({ addr: d.addr, len: d.len, write: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 });
    }
    if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
    if (slots === size) return { kind: 'invalid' };
    index = (index + 1) % size;
    if (index === 0) wrap ^= 1;
    if (!isAvailable(read(index).flags, wrap)) return { kind: 'invalid' };
  }
  const readable: Segment[] = [];
  const writable: Segment[] = [];
  let sawWrite = false;
  let total = 0;
  for (const e of elements) {
    // 2^53 - 1 is still an exact address: only a zero-length element may sit there.
    if (e.addr > BigInt(Number.MAX_SAFE_INTEGER)) return { kind: 'invalid' };
    const addr = Number(e.addr);
    if (!memory.checkRange(addr, e.len)) return { kind: 'invalid' };
    if (e.write) sawWrite = true;
    else if (sawWrite) return { kind: 'invalid' };
    total += e.len;
    if (total >= 2 ** 32) return { kind: 'invalid' };
    if (e.len > 0) (e.write ? writable : readable).push({ addr, len: e.len });
  }
  let outstanding = 0;
  for (const n of inFlight.values()) outstanding += n;
  if (slots > size - outstanding) return { kind: 'invalid', code: 'AVAIL_INDEX_JUMP' };
  if (last.id >= size) return { kind: 'invalid', code: 'BUFFER_ID_OUT_OF_RANGE' };
  if (inFlight.has(last.id)) return { kind: 'invalid', code: 'BUFFER_ID_IN_USE' };
  return { kind: 'chain', id: last.id, slots, readable, writable };
}

/** Runs `steps` against a fresh driver/device pair, checking the device after every call. */
function run(config: { size: number; eventIdx: boolean; indirect: boolean }, steps: HostileStep[]) {
  const { size, eventIdx, indirect } = config;
  const memory = guestMemory();
  let next = 0x100;
  const driver = new PackedDriverQueue<number>(memory, {
    index: 0,
    size,
    eventIdx,
    indirect,
    allocate: (bytes, align) => {
      const address = Math.ceil(next / align) * align;
      next = address + bytes;
      if (next > 0x8000) throw new VirtkitError('DRIVER', 'test ring memory exhausted');
      return address;
    },
  });
  const violations: ProtocolViolation[] = [];
  const device = new PackedDeviceQueue(
    {
      index: 0,
      size,
      descAddr: driver.descAddr,
      driverAddr: driver.driverAddr,
      deviceAddr: driver.deviceAddr,
      eventIdx,
      indirect,
    },
    { memory, onViolation: (v) => violations.push(v) },
  );
  const inFlight: DescriptorChain[] = [];
  const inFlightSlots = new Map<number, number>();
  let driverUsable = true;
  let token = 0;

  const checkChain = (chain: DescriptorChain) => {
    expect(Number.isInteger(chain.id) && chain.id >= 0 && chain.id < size).toBe(true);
    expect(chain.ringSlots >= 1 && chain.ringSlots <= size).toBe(true);
    let readable = 0;
    let writable = 0;
    for (const s of chain.readable) {
      expect(s.len > 0 && memory.checkRange(s.addr, s.len)).toBe(true);
      readable += s.len;
    }
    for (const s of chain.writable) {
      expect(s.len > 0 && memory.checkRange(s.addr, s.len)).toBe(true);
      writable += s.len;
    }
    expect([chain.readableLength, chain.writableLength]).toEqual([readable, writable]);
    expect(readable + writable).toBeLessThan(2 ** 32);
  };

  const popOnce = (): boolean => {
    const broken = device.broken;
    const expected = broken
      ? ({ kind: 'empty' } as const)
      : expectedPop(memory, driver.descAddr, size, indirect, device.position(), inFlightSlots);
    const before = violations.length;
    const chain = device.pop();
    if (expected.kind === 'chain') {
      expect(violations.slice(before)).toEqual([]);
      expect(chain).not.toBeNull();
      checkChain(chain!);
      expect({
        id: chain!.id,
        slots: chain!.ringSlots,
        readable: chain!.readable,
        writable: chain!.writable,
      }).toEqual({ ...expected, kind: undefined });
      inFlight.push(chain!);
      inFlightSlots.set(chain!.id, chain!.ringSlots);
      return true;
    }
    expect(chain).toBeNull();
    if (expected.kind === 'invalid') {
      expect(violations.length).toBe(before + 1);
      if (expected.code) expect(violations[before]!.code).toBe(expected.code);
      expect(violations[before]!.needsReset).toBe(true);
      expect(device.broken).toBe(true);
    } else {
      expect(violations.length).toBe(before);
    }
    return false;
  };

  for (const step of steps) {
    switch (step.t) {
      case 'add':
        // A direct list longer than the ring is refused by the driver up front, by design.
        if (
          driverUsable &&
          (indirect || step.buffer.readable.length + step.buffer.writable.length <= size)
        ) {
          driver.add(step.buffer.readable, step.buffer.writable, token++);
        }
        break;
      case 'publish':
        if (driverUsable) driver.publish();
        break;
      case 'fill':
        if (!driverUsable) break;
        for (let i = 0; i < size; i++) {
          const { readable, writable } = step.buffer;
          const fits = indirect || readable.length + writable.length <= driver.freeDescriptors;
          const buffer = fits
            ? step.buffer
            : { readable: [], writable: [writable[0] ?? readable[0]!] };
          if (!driver.add(buffer.readable, buffer.writable, token++)) break;
        }
        driver.publish();
        break;
      case 'pop': {
        // Without completions in between, at most `size` chains can be taken: loops terminate.
        let popped = 0;
        while (popOnce()) {
          popped++;
          expect(popped).toBeLessThanOrEqual(size);
        }
        break;
      }
      case 'complete': {
        if (inFlight.length === 0) break;
        const [chain] = inFlight.splice(step.pick % inFlight.length, 1);
        inFlightSlots.delete(chain!.id);
        const { nextUsed } = device.position();
        device.addUsed(chain!, step.len);
        const at = driver.descAddr + 16 * nextUsed;
        expect(memory.readU16(at + 12)).toBe(chain!.id);
        expect(memory.readU32(at + 8)).toBeLessThanOrEqual(chain!.writableLength);
        break;
      }
      case 'publishUsed':
        expect(typeof device.publishUsed()).toBe('boolean');
        break;
      case 'take':
        if (!driverUsable) break;
        try {
          while (driver.takeUsed());
        } catch (error) {
          // Only a corrupted ring may make the driver see a bad used descriptor.
          expect(error).toBeInstanceOf(VirtkitError);
          driverUsable = false;
        }
        break;
      case 'enable':
        expect(typeof device.enableNotifications()).toBe('boolean');
        break;
      case 'disable':
        device.disableNotifications();
        break;
      case 'interrupts':
        if (!driverUsable) break;
        try {
          if (step.on) driver.enableInterrupts();
          else driver.disableInterrupts();
        } catch {
          driverUsable = false;
        }
        break;
      default:
        // The driver carries on after a corruption: what it then writes over slots it wrongly
        // believes free is more hostile input for the device.
        corrupt(memory, driver, device, inFlightSlots, step);
    }
    expect(device.inFlight).toBe(inFlight.length);
  }
  // Whatever happened, the device can return everything it holds and stop cleanly.
  for (const chain of inFlight) device.addUsed(chain, chain.writableLength);
  expect(typeof device.publishUsed()).toBe('boolean');
  expect(device.inFlight).toBe(0);
  device.detach();
  return { violations, device };
}

function corrupt(
  memory: GuestMemory,
  driver: PackedDriverQueue<number>,
  device: PackedDeviceQueue,
  inFlight: ReadonlyMap<number, number>,
  step: Exclude<HostileStep, Step>,
): void {
  const { size } = device;
  const { nextAvail, availWrap } = device.position();
  const at = (s: number) => driver.descAddr + 16 * ((nextAvail + s) % size);
  // Indirect tables are allocated right after the device event suppression structure.
  const tables = Math.ceil((driver.deviceAddr + 4) / 16) * 16;
  switch (step.t) {
    case 'flags':
      memory.writeU16(at(step.slot) + 14, step.value);
      break;
    case 'id':
      memory.writeU16(at(step.slot) + 12, step.value);
      break;
    case 'len':
      memory.writeU32(at(step.slot) + 8, step.value);
      break;
    case 'addr':
      memory.writeU32(at(step.slot), step.low);
      memory.writeU32(at(step.slot) + 4, step.high);
      break;
    case 'descriptor':
      for (const [i, word] of step.words.entries()) memory.writeU32(at(step.slot) + 4 * i, word);
      break;
    case 'copy':
      memory.write(at(step.to), memory.view(at(step.from), 16).slice());
      break;
    case 'mark': {
      // The wrap counter the device expects at that slot, or the other one.
      const expectedWrap = nextAvail + (step.slot % size) >= size !== (availWrap !== false);
      const wrap = step.expected ? expectedWrap : !expectedWrap;
      memory.writeU16(
        at(step.slot) + 14,
        (step.bits & ~((1 << 7) | (1 << 15))) | (wrap ? 1 << 7 : 1 << 15),
      );
      break;
    }
    case 'reuse': {
      const expectedWrap = nextAvail + (step.slot % size) >= size !== (availWrap !== false);
      memory.writeU32(at(step.slot), 0x8000);
      memory.writeU32(at(step.slot) + 4, 0);
      memory.writeU32(at(step.slot) + 8, 16);
      // Prefer an id that is free, so that only the slot reuse itself is wrong.
      let id = step.id % size;
      for (let i = 0; i < size && inFlight.has(id); i++) id = (id + 1) % size;
      memory.writeU16(at(step.slot) + 12, id);
      memory.writeU16(
        at(step.slot) + 14,
        (step.bits & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT)) |
          (expectedWrap ? 1 << 7 : 1 << 15),
      );
      break;
    }
    case 'tableFlags':
      memory.writeU16(tables + 16 * step.entry + 14, step.value);
      break;
    case 'table':
      memory.writeU32(tables + 4 * step.word, step.value);
      break;
    case 'event':
      memory.writeU32(step.device ? driver.deviceAddr : driver.driverAddr, step.value);
      break;
  }
}

describe('PackedDeviceQueue properties', () => {
  it('hands out exactly what an honest driver added, with no violations', () => {
    fc.assert(
      fc.property(
        ring,
        fc.array(honestStep, { minLength: 10, maxLength: 80, size: 'max' }),
        (config, steps) => {
          const { violations } = run(config, steps);
          expect(violations).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('survives corrupted rings: no exception, only valid chains, a violation for the rest', () => {
    let brokenRuns = 0;
    const codes = new Set<string>();
    fc.assert(
      fc.property(
        ring,
        fc.array(hostileStep, { minLength: 10, maxLength: 80, size: 'max' }),
        (config, steps) => {
          const { violations, device } = run(config, steps);
          expect(violations.length).toBeLessThanOrEqual(1);
          if (device.broken) brokenRuns++;
          for (const v of violations) codes.add(v.code);
        },
      ),
      { numRuns: 500 },
    );
    // The corruptions must actually reach the validation code, not just be skipped over.
    expect(brokenRuns).toBeGreaterThan(40);
    expect(codes.size).toBeGreaterThanOrEqual(8);
  });

  it('catches a driver reusing slots or ids it does not own', () => {
    let caught = 0;
    const codes = new Set<string>();
    fc.assert(
      fc.property(
        ring,
        // Half the runs start with a full ring the device has popped whole: every slot is then the
        // device's, so any slot the driver marks available is a reuse.
        fc.option(buffer, { freq: 2 }),
        fc.array(reuseStep, { minLength: 10, maxLength: 80, size: 'max' }),
        (config, fill, steps) => {
          const prefix: Step[] = fill ? [{ t: 'fill', buffer: fill }, { t: 'pop' }] : [];
          const { violations } = run(config, [...prefix, ...steps]);
          if (violations.some((v) => v.code === 'AVAIL_INDEX_JUMP')) caught++;
          for (const v of violations) codes.add(v.code);
        },
      ),
      { numRuns: 200 },
    );
    // Enough runs reach the check that this does not depend on a lucky seed.
    expect(caught).toBeGreaterThan(10);
    expect(codes).toContain('BUFFER_ID_IN_USE');
  });
});
