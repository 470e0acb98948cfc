/**
 * Property tests of the split ring's device side against hostile guests: a driver builds valid
 * rings, then random corruption rewrites descriptors, indirect tables and the available ring, and
 * the device processes them. Every pop is checked against a straightforward reference walk of the
 * same memory (BigInt arithmetic, GuestMemory reads): a chain is returned exactly when the
 * reference finds it valid, with the same segments.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../constants.js';
import type { ProtocolViolation } from '../errors.js';
import { GuestMemory } from '../memory.js';
import type { DescriptorChain, Segment } from './chain.js';
import { SplitDeviceQueue } from './split.js';
import { SplitDriverQueue } from './split-driver.js';

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const REGION_A = 0;
const REGION_A_SIZE = 0x10000;
const REGION_B_SIZE = 0x4000;
/** Where corruption may fabricate an indirect table. */
const SCRATCH = 0x6000;
const SCRATCH_SIZE = 0x100;

interface Walked {
  readonly readable: Segment[];
  readonly writable: Segment[];
}

/** What the reference walk found: the chain, or the first rule the chain breaks. */
type Reference = Walked | { readonly code: string };

/**
 * Reference walk of the chain at `head` (§2.7.5, §2.7.5.3), written independently of the queue.
 * Descriptors are checked in the order the chain is walked, and each descriptor's rules in the
 * order the spec states them, so the first broken rule names the violation the device must report.
 */
function referenceWalk(
  memory: GuestMemory,
  descAddr: number,
  size: number,
  indirectNegotiated: boolean,
  head: number,
): Reference {
  const readable: Segment[] = [];
  const writable: Segment[] = [];
  let seenWritable = false;
  let total = 0n;
  const inMemory = (addr: bigint, len: number) =>
    addr <= MAX_SAFE && memory.checkRange(Number(addr), len);
  const walk = (
    table: number,
    entries: number,
    start: number,
    inIndirect: boolean,
  ): string | undefined => {
    let index = start;
    for (let steps = 1; ; steps++) {
      if (steps > entries) return 'CHAIN_TOO_LONG';
      const entry = new Uint8Array(16);
      memory.read(table + 16 * index, entry);
      const view = new DataView(entry.buffer);
      const addr = view.getBigUint64(0, true);
      const len = view.getUint32(8, true);
      const flags = view.getUint16(12, true);
      const next = view.getUint16(14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (inIndirect) return 'INDIRECT_NESTED';
        if (!indirectNegotiated) return 'INDIRECT_NOT_NEGOTIATED';
        if (flags & VIRTQ_DESC_F_NEXT) return 'INDIRECT_WITH_NEXT';
        if (len === 0 || len % 16 !== 0 || len / 16 > 32768) return 'INDIRECT_BAD_LENGTH';
        if (!inMemory(addr, len)) return 'INDIRECT_OUT_OF_MEMORY';
        return walk(Number(addr), len / 16, 0, true);
      }
      if (flags & VIRTQ_DESC_F_WRITE) seenWritable = true;
      else if (seenWritable) return 'READABLE_AFTER_WRITABLE';
      if (len > 0) {
        if (!inMemory(addr, len)) return 'DESCRIPTOR_OUT_OF_MEMORY';
        total += BigInt(len);
        if (total >= 2n ** 32n) return 'CHAIN_TOO_LARGE';
        (flags & VIRTQ_DESC_F_WRITE ? writable : readable).push({ addr: Number(addr), len });
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return undefined;
      if (next >= entries) return 'NEXT_OUT_OF_RANGE';
      index = next;
    }
  };
  const code = walk(descAddr, size, head, false);
  return code === undefined ? { readable, writable } : { code };
}

/** The 16 bytes of a descriptor (§2.7.5). */
function encode(desc: RandomDescriptor): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, desc.addr, true);
  view.setUint32(8, desc.len >>> 0, true);
  view.setUint16(12, desc.flags, true);
  view.setUint16(14, desc.next, true);
  return bytes;
}

function checkChainInvariants(
  chain: DescriptorChain,
  memory: GuestMemory,
  size: number,
  indirect: boolean,
) {
  expect(chain.id).toBeLessThan(size);
  expect(chain.ringSlots).toBe(1);
  let readableLength = 0;
  let writableLength = 0;
  for (const s of chain.readable) {
    expect(s.len).toBeGreaterThan(0);
    expect(memory.checkRange(s.addr, s.len)).toBe(true);
    readableLength += s.len;
  }
  for (const s of chain.writable) {
    expect(s.len).toBeGreaterThan(0);
    expect(memory.checkRange(s.addr, s.len)).toBe(true);
    writableLength += s.len;
  }
  expect(chain.readableLength).toBe(readableLength);
  expect(chain.writableLength).toBe(writableLength);
  expect(readableLength + writableLength).toBeLessThan(2 ** 32);
  const segments = chain.readable.length + chain.writable.length;
  expect(segments).toBeLessThanOrEqual(indirect ? size - 1 + 32768 : size);
}

/** One write of guest-controlled bytes. */
type Corruption =
  | { kind: 'desc'; index: number; field: 'addr'; value: bigint }
  | { kind: 'desc'; index: number; field: 'len' | 'flags' | 'next'; value: number }
  | { kind: 'table'; table: number; entry: number; field: 'addr'; value: bigint }
  | { kind: 'table'; table: number; entry: number; field: 'len' | 'flags' | 'next'; value: number }
  | { kind: 'availEntry'; slot: number; value: number }
  | { kind: 'availIdx'; value: number }
  /** What a driver does: the next avail entry names `head`, and avail.idx moves by one. */
  | { kind: 'offer'; head: number }
  | { kind: 'availIdxAdvance'; by: number }
  | { kind: 'scratchTable'; index: number; len: number; bytes: Uint8Array }
  | { kind: 'rewriteDesc'; index: number; desc: RandomDescriptor }
  | {
      kind: 'indirectAt';
      index: number;
      where: 'scratch' | 'boundary' | 'regionB';
      /** Bytes before the end of region A, for `boundary`. */
      offset: number;
      entries: RandomDescriptor[];
      lenDelta: number;
      extraFlags: number;
      /** Also make the descriptor available, as a driver would. */
      offer: boolean;
    };

/** A whole descriptor, biased towards plausible values so random chains are often valid. */
interface RandomDescriptor {
  readonly addr: bigint;
  readonly len: number;
  readonly flags: number;
  readonly next: number;
}

interface Round {
  readonly corruptions: Corruption[];
  readonly disable: boolean;
  /** Which in-flight chains to complete after the drain (bit i: the i-th oldest). */
  readonly completeMask: number;
  readonly writtenLength: number;
  readonly payload: Uint8Array;
}

interface Scenario {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly adjacent: boolean;
  readonly shared: boolean;
  readonly startIndex: number;
  /** Buffers to add before corruption: [readable lengths, writable lengths]. */
  readonly buffers: {
    readonly readable: number[];
    readonly writable: number[];
    readonly inB: boolean;
  }[];
  readonly rounds: Round[];
}

function scenarioArbitrary(): fc.Arbitrary<Scenario> {
  return fc.constantFrom(1, 2, 4, 8, 16).chain((size) => {
    const index = fc.integer({ min: 0, max: size - 1 });
    const u16 = fc.oneof(
      fc.integer({ min: 0, max: 0xffff }),
      fc.constantFrom(0, 1, 2, size - 1, size, size + 1, 0x7fff, 0x8000, 0xffff),
    );
    const flags = fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff }));
    const len = fc.oneof(
      fc.integer({ min: 0, max: 64 }),
      fc.integer({ min: 0, max: 8 }).map((n) => n * 16),
      fc.constantFrom(
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fff0,
        0xffff_ffff,
        32768 * 16,
        32768 * 16 + 16,
      ),
      fc.integer({ min: 0, max: 0xffff_ffff }),
    );
    const addr = fc.oneof(
      fc.integer({ min: 0, max: 0x30000 }).map(BigInt),
      fc.constantFrom(
        0n,
        BigInt(REGION_A_SIZE - 1),
        BigInt(REGION_A_SIZE),
        0x20000n,
        0x20000n + BigInt(REGION_B_SIZE) - 8n,
        MAX_SAFE,
        MAX_SAFE + 1n,
        2n ** 63n,
        2n ** 64n - 1n,
        0xffff_ffff_0000_0000n,
      ),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    );
    // Buffer areas of region A, of region B in both layouts (one of them is then a hole), and
    // the end of region A.
    const plausibleAddr = fc.oneof(
      fc.integer({ min: 0x8000, max: 0xff00 }).map(BigInt),
      fc.integer({ min: 0x10000, max: 0x13f00 }).map(BigInt),
      fc.integer({ min: 0x20000, max: 0x23f00 }).map(BigInt),
      fc.integer({ min: REGION_A_SIZE - 64, max: REGION_A_SIZE + 64 }).map(BigInt),
    );
    const descriptor = (entries: number): fc.Arbitrary<RandomDescriptor> =>
      fc.record({
        addr: fc.oneof({ weight: 8, arbitrary: plausibleAddr }, { weight: 1, arbitrary: addr }),
        len: fc.oneof(
          { weight: 6, arbitrary: fc.integer({ min: 1, max: 64 }) },
          { weight: 2, arbitrary: fc.constant(0) },
          { weight: 1, arbitrary: len },
        ),
        flags: fc.oneof(
          { weight: 8, arbitrary: fc.integer({ min: 0, max: 3 }) },
          { weight: 2, arbitrary: fc.integer({ min: 0, max: 7 }) },
        ),
        next: fc.oneof(
          { weight: 8, arbitrary: fc.integer({ min: 0, max: entries - 1 }) },
          // Just past the end is where an off-by-one in the range check would read.
          { weight: 1, arbitrary: fc.constant(entries) },
          { weight: 1, arbitrary: fc.constantFrom(entries + 1, 0xffff) },
        ),
      });
    const field = <K extends string>(kind: K) =>
      fc
        .oneof(
          fc.record({ field: fc.constant('addr' as const), value: addr }),
          fc.record({ field: fc.constant('len' as const), value: len }),
          fc.record({ field: fc.constant('flags' as const), value: flags }),
          fc.record({ field: fc.constant('next' as const), value: u16 }),
        )
        .map((f) => ({ kind, ...f }));
    const corruption: fc.Arbitrary<Corruption> = fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .tuple(field('desc' as const), index)
          .map(([f, i]) => ({ ...f, index: i }) as Corruption),
      },
      {
        weight: 2,
        arbitrary: fc
          .tuple(field('table' as const), fc.nat(), fc.nat())
          .map(([f, table, entry]) => ({ ...f, table, entry }) as Corruption),
      },
      {
        weight: 2,
        arbitrary: fc.record({ kind: fc.constant('availEntry' as const), slot: index, value: u16 }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('availIdx' as const), value: u16 }) },
      {
        weight: 8,
        arbitrary: fc.record({
          kind: fc.constant('offer' as const),
          head: fc.oneof({ weight: 9, arbitrary: index }, { weight: 1, arbitrary: u16 }),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant('availIdxAdvance' as const),
          by: fc.integer({ min: 1, max: size + 2 }),
        }),
      },
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant('rewriteDesc' as const),
          index,
          desc: descriptor(size),
        }),
      },
      {
        weight: 3,
        arbitrary: fc.record({
          kind: fc.constant('indirectAt' as const),
          index,
          where: fc.constantFrom('scratch' as const, 'boundary' as const, 'regionB' as const),
          offset: fc.integer({ min: 1, max: 40 }),
          offer: fc.boolean(),
          // Links mostly inside the table, sometimes just past its end.
          entries: fc
            .integer({ min: 1, max: 8 })
            .chain((n) => fc.array(descriptor(n), { minLength: n, maxLength: n })),
          lenDelta: fc.oneof(
            { weight: 6, arbitrary: fc.constant(0) },
            { weight: 1, arbitrary: fc.integer({ min: -17, max: 17 }) },
          ),
          extraFlags: fc.oneof(
            { weight: 6, arbitrary: fc.constant(0) },
            { weight: 1, arbitrary: fc.constantFrom(VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_NEXT) },
          ),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant('scratchTable' as const),
          index,
          len: fc.oneof(
            fc.integer({ min: 0, max: 16 }).map((n) => n * 16),
            len,
          ),
          bytes: fc.uint8Array({ minLength: SCRATCH_SIZE, maxLength: SCRATCH_SIZE }),
        }),
      },
    );
    const round: fc.Arbitrary<Round> = fc.record({
      corruptions: fc.array(corruption, { maxLength: 10 }),
      disable: fc.boolean(),
      completeMask: fc.nat(),
      writtenLength: fc.oneof(fc.nat(64), fc.constant(0xffff_ffff)),
      payload: fc.uint8Array({ maxLength: 24 }),
    });
    const lengths = fc.array(fc.integer({ min: 0, max: 256 }), { maxLength: 3 });
    return fc.record({
      size: fc.constant(size),
      eventIdx: fc.boolean(),
      indirect: fc.boolean(),
      adjacent: fc.boolean(),
      shared: fc.boolean(),
      startIndex: fc.oneof(
        fc.constant(0),
        fc.integer({ min: 0xfff0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      buffers: fc.array(fc.record({ readable: lengths, writable: lengths, inB: fc.boolean() }), {
        maxLength: size,
      }),
      rounds: fc.array(round, { minLength: 1, maxLength: 4 }),
    });
  });
}

/** Runs a scenario, asserting as it goes; returns the violations reported. */
function runScenario(s: Scenario): ProtocolViolation[] {
  const backing = (bytes: number) =>
    s.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  const regionB = s.adjacent ? REGION_A_SIZE : 0x20000;
  const memory = new GuestMemory([
    { guestAddress: REGION_A, buffer: backing(REGION_A_SIZE) },
    { guestAddress: regionB, buffer: backing(REGION_B_SIZE) },
  ]);
  // Rings and indirect tables below SCRATCH in region A; buffers above it and in region B.
  let ringNext = 0x100;
  const tables: number[] = [];
  const driver = new SplitDriverQueue<number>(memory, {
    index: 0,
    size: s.size,
    eventIdx: s.eventIdx,
    indirect: s.indirect,
    startIndex: s.startIndex,
    allocate: (bytes, align) => {
      const address = Math.ceil(ringNext / align) * align;
      ringNext = address + bytes;
      if (ringNext > SCRATCH) throw new Error('ring area exhausted');
      // Every allocation after the three ring parts is an indirect table.
      tables.push(address);
      return address;
    },
  });
  tables.splice(0, 3);
  let bufferA = 0x8000;
  let bufferB = regionB;
  const place = (len: number, inB: boolean): Segment => {
    const addr = inB ? bufferB : bufferA;
    if (inB) bufferB = Math.min(bufferB + len, regionB + REGION_B_SIZE - 256);
    else bufferA = Math.min(bufferA + len, REGION_A_SIZE - 256);
    return { addr, len };
  };
  for (const [i, b] of s.buffers.entries()) {
    const total = b.readable.length + b.writable.length;
    if (total === 0 || (!s.indirect && total > s.size)) continue;
    const readable = b.readable.map((len) => place(len, b.inB));
    const writable = b.writable.map((len) => place(len, b.inB));
    if (!driver.add(readable, writable, i)) break;
  }
  driver.publish();

  const violations: ProtocolViolation[] = [];
  const queue = new SplitDeviceQueue(
    {
      index: 0,
      size: s.size,
      descAddr: driver.descAddr,
      driverAddr: driver.driverAddr,
      deviceAddr: driver.deviceAddr,
      eventIdx: s.eventIdx,
      indirect: s.indirect,
    },
    {
      memory,
      onViolation: (v) => violations.push(v),
      position: { nextAvail: s.startIndex, nextUsed: s.startIndex },
    },
  );

  const writeField = (at: number, f: { field: string; value: number | bigint }) => {
    if (f.field === 'addr') memory.writeU64(at, f.value as bigint);
    else if (f.field === 'len') memory.writeU32(at + 8, f.value as number);
    else if (f.field === 'flags') memory.writeU16(at + 12, f.value as number);
    else memory.writeU16(at + 14, f.value as number);
  };
  const availIdxAt = driver.driverAddr + 2;
  // Writes the bytes that land in guest memory, dropping those that fall in a hole.
  const writeLoose = (address: number, bytes: Uint8Array) => {
    bytes.forEach((byte, i) => {
      if (memory.checkRange(address + i, 1)) memory.writeU8(address + i, byte);
    });
  };
  const corrupt = (c: Corruption): void => {
    switch (c.kind) {
      case 'desc':
        writeField(driver.descAddr + 16 * c.index, c);
        break;
      case 'table': {
        if (tables.length === 0) break;
        const table = tables[c.table % tables.length]!;
        writeField(table + 16 * (c.entry % 8), c);
        break;
      }
      case 'availEntry':
        memory.writeU16(driver.driverAddr + 4 + 2 * c.slot, c.value);
        break;
      case 'offer': {
        const idx = memory.readU16(availIdxAt);
        // A driver never has more than `size` entries pending; other kinds overfill the ring.
        if (((idx - queue.position().nextAvail) & 0xffff) >= s.size) break;
        memory.writeU16(driver.driverAddr + 4 + 2 * (idx & (s.size - 1)), c.head);
        memory.writeU16(availIdxAt, (idx + 1) & 0xffff);
        break;
      }
      case 'availIdx':
        memory.writeU16(availIdxAt, c.value);
        break;
      case 'availIdxAdvance':
        memory.writeU16(availIdxAt, (memory.readU16(availIdxAt) + c.by) & 0xffff);
        break;
      case 'rewriteDesc':
        memory.write(driver.descAddr + 16 * c.index, encode(c.desc));
        break;
      case 'indirectAt': {
        const table =
          c.where === 'scratch'
            ? SCRATCH
            : c.where === 'boundary'
              ? REGION_A_SIZE - c.offset
              : regionB + 0x1000 + c.offset;
        for (const [i, entry] of c.entries.entries()) writeLoose(table + 16 * i, encode(entry));
        const len = Math.max(0, 16 * c.entries.length + c.lenDelta);
        memory.write(
          driver.descAddr + 16 * c.index,
          encode({
            addr: BigInt(table),
            len,
            flags: VIRTQ_DESC_F_INDIRECT | c.extraFlags,
            next: 0,
          }),
        );
        if (c.offer) corrupt({ kind: 'offer', head: c.index });
        break;
      }
      case 'scratchTable':
        memory.write(SCRATCH, c.bytes);
        writeField(driver.descAddr + 16 * c.index, { field: 'addr', value: BigInt(SCRATCH) });
        writeField(driver.descAddr + 16 * c.index, { field: 'len', value: c.len });
        writeField(driver.descAddr + 16 * c.index, {
          field: 'flags',
          value: VIRTQ_DESC_F_INDIRECT,
        });
        break;
    }
  };

  const owned = new Set<number>();
  const inFlight: DescriptorChain[] = [];
  for (const round of s.rounds) {
    for (const c of round.corruptions) corrupt(c);
    if (round.disable) queue.disableNotifications();
    queue.hasAvailable();
    // At most `size` chains per drain: the device never has more than `size` heads.
    for (let pops = 0; ; pops++) {
      expect(pops).toBeLessThanOrEqual(s.size);
      const wasBroken = queue.broken;
      const position = queue.position().nextAvail;
      const availIdx = memory.readU16(availIdxAt);
      const head = memory.readU16(driver.driverAddr + 4 + 2 * (position & (s.size - 1)));
      // What the device must do, worked out before it runs. Each drain starts with the device
      // caught up with avail.idx (the last drain ended on an empty ring), so it reads avail.idx
      // afresh on its first pop, and nothing changes it during the drain.
      const pending = (availIdx - position) & 0xffff;
      const expected: Reference | null =
        wasBroken || pending === 0
          ? null
          : pops === 0 && pending > s.size
            ? { code: 'AVAIL_INDEX_JUMP' }
            : head >= s.size
              ? { code: 'HEAD_OUT_OF_RANGE' }
              : owned.has(head)
                ? { code: 'HEAD_IN_FLIGHT' }
                : referenceWalk(memory, driver.descAddr, s.size, s.indirect, head);
      const reported = violations.length;
      const chain = queue.pop();
      if (chain) {
        expect(expected).toEqual({ readable: chain.readable, writable: chain.writable });
        expect(chain.id).toBe(head);
        checkChainInvariants(chain, memory, s.size, s.indirect);
        owned.add(head);
        inFlight.push(chain);
        // The device writes some bytes: through the validated segments only (throws otherwise).
        chain.writer().writeSome(round.payload);
        chain.reader().readBytes(chain.readableLength);
        continue;
      }
      if (violations.length === reported) {
        expect(expected).toBeNull();
        expect(queue.broken).toBe(wasBroken);
        break;
      }
      expect(violations.length).toBe(reported + 1);
      const v = violations[reported]!;
      expect(v.needsReset).toBe(true);
      expect(v.queue).toBe(0);
      expect(v.message.length).toBeGreaterThan(10);
      expect(queue.broken).toBe(true);
      // The exact rule: a device that refuses for another reason than the first rule broken has
      // read or trusted something it should not have.
      expect(expected).toEqual({ code: v.code });
      break;
    }
    // Complete some chains, oldest first per the mask; the rest stay in flight.
    const keep: DescriptorChain[] = [];
    for (const [i, chain] of inFlight.entries()) {
      if ((round.completeMask >>> i) & 1) {
        queue.addUsed(chain, round.writtenLength);
        owned.delete(chain.id);
      } else {
        keep.push(chain);
      }
    }
    inFlight.splice(0, inFlight.length, ...keep);
    queue.publishUsed();
    queue.enableNotifications();
    expect(queue.inFlight).toBe(inFlight.length);
  }
  expect(violations.length).toBeLessThanOrEqual(1);
  return violations;
}

describe('SplitDeviceQueue under random corruption', () => {
  it('never throws, never leaves guest memory, and agrees with a reference walk', () => {
    const codes = new Map<string, number>();
    fc.assert(
      // Any exception, from the queue or from a failed expectation, fails the property.
      fc.property(scenarioArbitrary(), (scenario) => {
        for (const v of runScenario(scenario)) codes.set(v.code, (codes.get(v.code) ?? 0) + 1);
      }),
      { numRuns: 800 },
    );
    // The corruptions must reach the checks, not just be skipped over. CHAIN_TOO_LARGE needs 4 GiB
    // of buffers, more than this guest has: unit tests cover it.
    for (const code of [
      'AVAIL_INDEX_JUMP',
      'HEAD_OUT_OF_RANGE',
      'HEAD_IN_FLIGHT',
      'NEXT_OUT_OF_RANGE',
      'CHAIN_TOO_LONG',
      'DESCRIPTOR_OUT_OF_MEMORY',
      'READABLE_AFTER_WRITABLE',
      'INDIRECT_NOT_NEGOTIATED',
      'INDIRECT_NESTED',
      'INDIRECT_WITH_NEXT',
      'INDIRECT_BAD_LENGTH',
      'INDIRECT_OUT_OF_MEMORY',
    ]) {
      expect(codes.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  });

  it('processes uncorrupted rings without violations', () => {
    fc.assert(
      fc.property(scenarioArbitrary(), (scenario) => {
        const clean = {
          ...scenario,
          rounds: scenario.rounds.map((r) => ({
            ...r,
            corruptions: [],
            payload: new Uint8Array(0),
          })),
        };
        expect(runScenario(clean)).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});

/** A descriptor with fields that are mostly plausible, links mostly inside `entries`. */
function chainDescriptor(entries: number): fc.Arbitrary<RandomDescriptor> {
  return fc.record({
    addr: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0x8000, max: 0x13f00 }).map(BigInt) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          BigInt(REGION_A_SIZE - 8),
          0x20000n,
          0x23ff8n,
          MAX_SAFE,
          MAX_SAFE + 1n,
          0x20_0000_0000_8000n, // 2^53 + 0x8000: masking the high half would land in RAM
          2n ** 64n - 1n,
        ),
      },
    ),
    len: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 1, max: 64 }) },
      { weight: 2, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.constantFrom(0x4000, 0x8000_0000, 0xffff_ffff) },
    ),
    flags: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0, max: 3 }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) },
    ),
    next: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: entries - 1 }) },
      { weight: 1, arbitrary: fc.constant(entries) },
      { weight: 1, arbitrary: fc.constantFrom(entries + 1, 0xffff) },
    ),
  });
}

/** One chain: a descriptor table whose entries may point to one indirect table, and a head. */
const chainCase = fc.constantFrom(1, 2, 4, 8, 16).chain((size) =>
  fc.record({
    size: fc.constant(size),
    indirect: fc.boolean(),
    adjacent: fc.boolean(),
    head: fc.integer({ min: 0, max: size - 1 }),
    table: fc.integer({ min: 1, max: 8 }).chain((n) =>
      fc.record({
        entries: fc.array(chainDescriptor(n), { minLength: n, maxLength: n }),
        /** Bytes right after the table: what an off-by-one would read as entry n. */
        after: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        where: fc.constantFrom('scratch' as const, 'boundary' as const, 'regionB' as const),
        offset: fc.integer({ min: 1, max: 40 }),
      }),
    ),
    descriptors: fc.array(
      fc.oneof(
        { weight: 4, arbitrary: chainDescriptor(size).map((d) => ({ d, toTable: false })) },
        {
          weight: 1,
          arbitrary: fc.record({
            d: chainDescriptor(size),
            toTable: fc.constant(true),
            lenDelta: fc.oneof(
              { weight: 4, arbitrary: fc.constant(0) },
              { weight: 1, arbitrary: fc.integer({ min: -17, max: 17 }) },
            ),
          }),
        },
      ),
      { minLength: size, maxLength: size },
    ),
  }),
);

describe('SplitDeviceQueue on single random chains', () => {
  it('pops exactly what the reference walk accepts and otherwise reports the first rule broken', () => {
    const DESC = 0x100;
    const AVAIL = 0x400;
    const USED = 0x800;
    const codes = new Set<string>();
    fc.assert(
      fc.property(chainCase, (c) => {
        const regionB = c.adjacent ? REGION_A_SIZE : 0x20000;
        const memory = new GuestMemory([
          { guestAddress: REGION_A, buffer: new ArrayBuffer(REGION_A_SIZE) },
          { guestAddress: regionB, buffer: new ArrayBuffer(REGION_B_SIZE) },
        ]);
        const table =
          c.table.where === 'scratch'
            ? SCRATCH
            : c.table.where === 'boundary'
              ? REGION_A_SIZE - c.table.offset
              : regionB + 0x1000 + c.table.offset;
        const n = c.table.entries.length;
        const loose = (address: number, bytes: Uint8Array) =>
          bytes.forEach((byte, i) => {
            if (memory.checkRange(address + i, 1)) memory.writeU8(address + i, byte);
          });
        for (const [i, entry] of c.table.entries.entries()) loose(table + 16 * i, encode(entry));
        loose(table + 16 * n, c.table.after);
        for (const [i, slot] of c.descriptors.entries()) {
          const desc = slot.toTable
            ? {
                ...slot.d,
                addr: BigInt(table),
                len: Math.max(0, 16 * n + ('lenDelta' in slot ? slot.lenDelta : 0)),
                flags: slot.d.flags | VIRTQ_DESC_F_INDIRECT,
              }
            : slot.d;
          memory.write(DESC + 16 * i, encode(desc));
        }
        memory.writeU16(AVAIL + 4, c.head);
        memory.writeU16(AVAIL + 2, 1);
        const violations: ProtocolViolation[] = [];
        const queue = new SplitDeviceQueue(
          {
            index: 0,
            size: c.size,
            descAddr: DESC,
            driverAddr: AVAIL,
            deviceAddr: USED,
            eventIdx: false,
            indirect: c.indirect,
          },
          { memory, onViolation: (v) => violations.push(v) },
        );
        const expected = referenceWalk(memory, DESC, c.size, c.indirect, c.head);
        const chain = queue.pop();
        if (chain) {
          expect(expected).toEqual({ readable: chain.readable, writable: chain.writable });
          checkChainInvariants(chain, memory, c.size, c.indirect);
          expect(violations).toEqual([]);
        } else {
          expect(violations.map((v) => v.code)).toEqual(['code' in expected ? expected.code : '']);
          codes.add(violations[0]!.code);
        }
        expect(queue.pop()).toBeNull();
      }),
      { numRuns: 3000 },
    );
    expect(codes.size).toBeGreaterThanOrEqual(9);
  });
});
