import { describe, expect, it } from 'vitest';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT } from '../constants.js';
import { type ProtocolViolation, QueueConfigError, VirtkitError } from '../errors.js';
import { GuestMemory } from '../memory.js';
import type { Segment } from './chain.js';
import { SplitDeviceQueue } from './split.js';
import { SplitDriverQueue, type SplitDriverQueueOptions } from './split-driver.js';

/** Bump allocator over `[start, end)` that counts its calls. */
function allocator(start: number, end: number) {
  let next = start;
  const state = {
    calls: 0,
    allocate(bytes: number, align: number): number {
      state.calls++;
      const address = Math.ceil(next / align) * align;
      if (address + bytes > end) throw new Error('test memory exhausted');
      next = address + bytes;
      return address;
    },
  };
  return state;
}

interface PairOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  startIndex?: number;
  memory?: GuestMemory;
}

/** A driver queue and a device queue on the same rings. */
function pair(options: PairOptions = {}) {
  const memory = options.memory ?? GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
  const rings = allocator(
    memory.regions[0]!.guestAddress,
    memory.regions[0]!.guestAddress + 0x80000,
  );
  const size = options.size ?? 8;
  const eventIdx = options.eventIdx ?? false;
  const indirect = options.indirect ?? false;
  const driverOptions: SplitDriverQueueOptions = {
    index: 2,
    size,
    eventIdx,
    indirect,
    allocate: rings.allocate,
    ...(options.startIndex !== undefined ? { startIndex: options.startIndex } : {}),
  };
  const driver = new SplitDriverQueue<string>(memory, driverOptions);
  const violations: ProtocolViolation[] = [];
  const start = options.startIndex ?? 0;
  const device = new SplitDeviceQueue(
    {
      index: 2,
      size,
      descAddr: driver.descAddr,
      driverAddr: driver.driverAddr,
      deviceAddr: driver.deviceAddr,
      eventIdx,
      indirect,
    },
    {
      memory,
      onViolation: (v) => violations.push(v),
      ...(options.startIndex !== undefined
        ? { position: { nextAvail: start, nextUsed: start } }
        : {}),
    },
  );
  const last = memory.regions[memory.regions.length - 1]!;
  const buffers = allocator(
    memory.regions.length > 1 ? last.guestAddress : last.guestAddress + 0x80000,
    last.end,
  );
  return { memory, driver, device, violations, rings, buffers };
}

const seg = (addr: number, len: number): Segment => ({ addr, len });

describe('SplitDriverQueue', () => {
  it('lays out its rings with the allocator and exposes them', () => {
    const { driver, rings } = pair({ size: 16 });
    expect(rings.calls).toBe(3);
    expect(driver.layout).toBe('split');
    expect(driver.index).toBe(2);
    expect(driver.size).toBe(16);
    expect(driver.descAddr % 16).toBe(0);
    expect(driver.driverAddr % 2).toBe(0);
    expect(driver.deviceAddr % 4).toBe(0);
    expect(driver.freeDescriptors).toBe(16);
    expect(SplitDriverQueue.ringBytes(16)).toEqual({ desc: 256, avail: 38, used: 134 });
  });

  it('refuses a bad size and an allocator that returns unusable memory', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
    const base = { index: 0, eventIdx: false, indirect: false };
    expect(() => new SplitDriverQueue(memory, { ...base, size: 6, allocate: () => 0 })).toThrow(
      QueueConfigError,
    );
    expect(() => new SplitDriverQueue(memory, { ...base, size: 8, allocate: () => 8 })).toThrow(
      /not 16-byte aligned/,
    );
    expect(
      () => new SplitDriverQueue(memory, { ...base, size: 8, allocate: () => 1 << 16 }),
    ).toThrow(QueueConfigError);
  });

  it('round-trips a request through the device, data and all', () => {
    const { memory, driver, device, buffers } = pair();
    const request = buffers.allocate(4, 8);
    const reply = buffers.allocate(8, 8);
    memory.write(request, Uint8Array.of(1, 2, 3, 4));
    expect(driver.add([seg(request, 4)], [seg(reply, 8)], 'req')).toBe(true);
    expect(driver.freeDescriptors).toBe(6);
    expect(device.pop()).toBeNull(); // not published yet
    expect(driver.publish()).toBe(true);
    const chain = device.pop()!;
    expect(chain.readable).toEqual([seg(request, 4)]);
    expect(chain.writable).toEqual([seg(reply, 8)]);
    const input = chain.reader().readBytes(4);
    chain.writer().write(input.map((b) => b * 10));
    device.addUsed(chain, 4);
    expect(driver.takeUsed()).toBeNull(); // not published yet
    expect(device.publishUsed()).toBe(true);
    expect(driver.takeUsed()).toEqual({ token: 'req', len: 4 });
    expect([...memory.view(reply, 4)]).toEqual([10, 20, 30, 40]);
    expect(driver.takeUsed()).toBeNull();
    expect(driver.freeDescriptors).toBe(8);
    expect(driver.inFlight).toBe(0);
  });

  it('returns false when out of descriptors, and true again once buffers come back', () => {
    const { driver, device, buffers } = pair({ size: 4 });
    const b = buffers.allocate(64, 8);
    expect(driver.add([seg(b, 1), seg(b, 1)], [seg(b, 1)], 'three')).toBe(true);
    expect(driver.add([seg(b, 1)], [seg(b, 1)], 'two')).toBe(false);
    expect(driver.add([seg(b, 1)], [], 'one')).toBe(true);
    expect(driver.freeDescriptors).toBe(0);
    expect(driver.add([seg(b, 1)], [], 'none')).toBe(false);
    driver.publish();
    for (let chain = device.pop(); chain; chain = device.pop()) device.addUsed(chain, 0);
    device.publishUsed();
    expect(driver.takeUsed()?.token).toBe('three');
    expect(driver.takeUsed()?.token).toBe('one');
    expect(driver.add([seg(b, 1)], [seg(b, 1), seg(b, 1), seg(b, 1)], 'four')).toBe(true);
  });

  it('throws DRIVER errors for buffers that could never be valid', () => {
    const { driver } = pair({ size: 4 });
    const expectDriverError = (fn: () => unknown) => {
      expect(fn).toThrow(VirtkitError);
      try {
        fn();
      } catch (error) {
        expect((error as VirtkitError).code).toBe('DRIVER');
      }
    };
    expectDriverError(() => driver.add([], [], 'empty'));
    expectDriverError(() => driver.add([seg(-1, 1)], [], 'negative'));
    expectDriverError(() => driver.add([seg(2 ** 53, 1)], [], 'unsafe'));
    expectDriverError(() => driver.add([seg(0, 2 ** 32)], [], 'too long'));
    expectDriverError(() => driver.add([seg(0, 1.5)], [], 'fraction'));
    expectDriverError(() =>
      driver.add(
        Array.from({ length: 5 }, () => seg(0, 1)),
        [],
        'longer than the ring',
      ),
    );
    expect(driver.freeDescriptors).toBe(4);
  });

  it('completes out of order and keeps its free list consistent', () => {
    const { driver, device, buffers } = pair({ size: 8 });
    const b = buffers.allocate(0x1000, 8);
    for (let round = 0; round < 50; round++) {
      const tokens: string[] = [];
      for (
        let i = 0;
        driver.add([seg(b, 4)], i % 3 === 0 ? [seg(b + 8, 4)] : [], `${round}:${i}`);
        i++
      ) {
        tokens.push(`${round}:${i}`);
      }
      expect(driver.freeDescriptors).toBeLessThan(2);
      driver.publish();
      const chains = [];
      for (let chain = device.pop(); chain; chain = device.pop()) chains.push(chain);
      expect(chains).toHaveLength(tokens.length);
      // Complete in reverse, in two batches.
      chains.reverse();
      const half = chains.length >> 1;
      for (const chain of chains.slice(0, half)) device.addUsed(chain, chain.writableLength);
      device.publishUsed();
      const taken: string[] = [];
      for (let used = driver.takeUsed(); used; used = driver.takeUsed()) taken.push(used.token);
      for (const chain of chains.slice(half)) device.addUsed(chain, chain.writableLength);
      device.publishUsed();
      for (let used = driver.takeUsed(); used; used = driver.takeUsed()) taken.push(used.token);
      expect(taken).toEqual([...tokens].reverse());
      expect(driver.freeDescriptors).toBe(8);
    }
  });

  it('uses one descriptor and a pooled indirect table for multi-segment buffers', () => {
    const { driver, device, rings, buffers } = pair({ size: 4, indirect: true });
    const b = buffers.allocate(0x1000, 8);
    const readable = [seg(b, 16), seg(b + 16, 16)];
    const writable = [seg(b + 0x100, 64), seg(b + 0x200, 64), seg(b + 0x300, 1)];
    for (let i = 0; i < 4; i++) expect(driver.add(readable, writable, `t${i}`)).toBe(true);
    expect(driver.freeDescriptors).toBe(0);
    expect(driver.add([seg(b, 1)], [], 'single')).toBe(false);
    const callsAfterFirstRound = rings.calls;
    expect(callsAfterFirstRound).toBe(3 + 4); // the rings, then one table per buffer in flight
    let expected = writable;
    for (let round = 0; round < 5; round++) {
      driver.publish();
      for (let chain = device.pop(); chain; chain = device.pop()) {
        expect(chain.readable).toEqual(readable);
        expect(chain.writable).toEqual(expected);
        device.addUsed(chain, chain.writableLength);
      }
      device.publishUsed();
      const total = expected.reduce((sum, s) => sum + s.len, 0);
      for (let used = driver.takeUsed(); used; used = driver.takeUsed())
        expect(used.len).toBe(total);
      // Shorter buffers next round: they fit the pooled tables.
      expected = writable.slice(0, 2);
      for (let i = 0; i < 4; i++) expect(driver.add(readable, expected, `r${round}`)).toBe(true);
    }
    expect(rings.calls).toBe(callsAfterFirstRound); // tables were reused
    // A longer buffer does not fit the pooled 8-entry tables: it gets a new one.
    driver.publish();
    for (let chain = device.pop(); chain; chain = device.pop()) device.addUsed(chain, 0);
    device.publishUsed();
    while (driver.takeUsed()) {}
    const long = Array.from({ length: 9 }, (_, i) => seg(b + i, 1));
    expect(driver.add(long, [], 'long')).toBe(true);
    expect(rings.calls).toBe(callsAfterFirstRound + 1);
    driver.publish();
    expect(device.pop()!.readable).toEqual(long);
  });

  it('puts a single segment in a plain descriptor even with indirect negotiated', () => {
    const { memory, driver, buffers } = pair({ indirect: true });
    driver.add([], [seg(buffers.allocate(8, 8), 8)], 'one');
    expect(memory.readU16(driver.descAddr + 12) & VIRTQ_DESC_F_INDIRECT).toBe(0);
    expect(driver.freeDescriptors).toBe(7);
  });

  it('wraps the u16 indices past 65535 when started near the end', () => {
    const { driver, device, violations, buffers } = pair({
      size: 4,
      startIndex: 65530,
      eventIdx: true,
    });
    const b = buffers.allocate(16, 8);
    for (let i = 0; i < 20; i++) {
      expect(driver.add([seg(b, 8)], [seg(b + 8, 8)], `n${i}`)).toBe(true);
      driver.publish();
      const chain = device.pop()!;
      device.addUsed(chain, i % 9);
      device.publishUsed();
      expect(driver.takeUsed()).toEqual({ token: `n${i}`, len: i % 9 });
    }
    expect(violations).toEqual([]);
    expect(device.position()).toEqual({
      nextAvail: (65530 + 20) & 0xffff,
      nextUsed: (65530 + 20) & 0xffff,
    });
  });

  it('wraps naturally over 65536 round trips', () => {
    const { driver, device, violations, buffers } = pair({ size: 2 });
    const b = buffers.allocate(16, 8);
    for (let i = 0; i < 66_000; i++) {
      driver.add([seg(b, 4)], [], `${i}`);
      driver.publish();
      device.addUsed(device.pop()!, 0);
      device.publishUsed();
      if (driver.takeUsed()?.token !== `${i}`) throw new Error(`round ${i} lost its buffer`);
    }
    expect(violations).toEqual([]);
    expect(device.position()).toEqual({ nextAvail: 66_000 & 0xffff, nextUsed: 66_000 & 0xffff });
  });
});

describe('SplitDriverQueue against a misbehaving device', () => {
  function withOneInFlight() {
    const p = pair();
    const b = p.buffers.allocate(64, 8);
    p.driver.add([seg(b, 4)], [seg(b + 8, 16)], 'x');
    p.driver.publish();
    return p;
  }
  const usedElement = (p: ReturnType<typeof pair>, id: number, len: number, idx: number) => {
    p.memory.writeU32(p.driver.deviceAddr + 4, id);
    p.memory.writeU32(p.driver.deviceAddr + 8, len);
    p.memory.writeU16(p.driver.deviceAddr + 2, idx);
  };

  it('throws when the device returns a descriptor that is not in use', () => {
    const p = withOneInFlight();
    usedElement(p, 5, 0, 1);
    expect(() => p.driver.takeUsed()).toThrow(
      /descriptor 5, which is not the head of a buffer in use/,
    );
    usedElement(p, 100, 0, 1);
    expect(() => p.driver.takeUsed()).toThrow(VirtkitError);
  });

  it('throws when the device reports more bytes than the buffer can take', () => {
    const p = withOneInFlight();
    usedElement(p, 0, 17, 1);
    expect(() => p.driver.takeUsed()).toThrow(
      /17 bytes written to buffer 0, which has 16 writable bytes/,
    );
    usedElement(p, 0, 16, 1);
    expect(p.driver.takeUsed()).toEqual({ token: 'x', len: 16 });
  });

  it('throws when the device moves used.idx too far', () => {
    const p = withOneInFlight();
    usedElement(p, 0, 0, 9);
    expect(() => p.driver.takeUsed()).toThrow(/more than queue size 8 ahead/);
  });
});

describe('SplitDriverQueue and SplitDeviceQueue notification suppression', () => {
  function prepared(eventIdx: boolean) {
    const p = pair({ eventIdx, size: 16 });
    const b = p.buffers.allocate(0x100, 8);
    const add = (n: number) => {
      for (let i = 0; i < n; i++) p.driver.add([seg(b, 1)], [], 'k');
      return p.driver.publish();
    };
    const drain = () => {
      let count = 0;
      for (let chain = p.device.pop(); chain; chain = p.device.pop()) {
        p.device.addUsed(chain, 0);
        count++;
      }
      return count;
    };
    const collect = () => {
      let count = 0;
      while (p.driver.takeUsed()) count++;
      return count;
    };
    return { ...p, add, drain, collect };
  }

  for (const eventIdx of [false, true]) {
    describe(eventIdx ? 'with EVENT_IDX' : 'without EVENT_IDX', () => {
      it('the driver kicks only while the device wants kicks', () => {
        const p = prepared(eventIdx);
        expect(p.add(1)).toBe(true); // fresh ring: the device wants to hear
        p.device.disableNotifications();
        expect(p.drain()).toBe(1);
        // Disabled: NO_NOTIFY, or (EVENT_IDX) avail_event left behind at 0 while the device pops.
        expect(p.add(1)).toBe(false);
        expect(p.add(2)).toBe(false); // device is busy and behind: no kick either way
        expect(p.drain()).toBe(3);
        expect(p.device.enableNotifications()).toBe(false);
        expect(p.add(1)).toBe(true);
        expect(p.add(1)).toBe(!eventIdx); // EVENT_IDX: one kick per wake-up
        p.device.publishUsed();
        expect(p.collect()).toBe(4);
      });

      it('publish returns false when nothing was added', () => {
        const p = prepared(eventIdx);
        expect(p.driver.publish()).toBe(false);
      });

      it('the device interrupts only while the driver wants interrupts', () => {
        const p = prepared(eventIdx);
        p.add(1);
        p.drain();
        expect(p.device.publishUsed()).toBe(true);
        expect(p.collect()).toBe(1);
        p.driver.disableInterrupts();
        if (!eventIdx)
          expect(p.memory.readU16(p.driver.driverAddr)).toBe(VIRTQ_AVAIL_F_NO_INTERRUPT);
        p.add(3);
        p.drain();
        expect(p.device.publishUsed()).toBe(false);
        expect(p.collect()).toBe(3); // polled without an interrupt
        expect(p.driver.enableInterrupts()).toBe(false);
        p.add(2);
        p.drain();
        expect(p.device.publishUsed()).toBe(true);
      });

      it('asks for the next interrupt as it takes used buffers', () => {
        const p = prepared(eventIdx);
        for (let round = 0; round < 3; round++) {
          p.add(1);
          p.drain();
          expect(p.device.publishUsed()).toBe(true);
          expect(p.collect()).toBe(1);
        }
      });

      it('enableInterrupts reports used buffers that arrived while disabled', () => {
        const p = prepared(eventIdx);
        p.driver.disableInterrupts();
        p.add(2);
        p.drain();
        expect(p.device.publishUsed()).toBe(false);
        expect(p.driver.enableInterrupts()).toBe(true); // must poll: no interrupt will come
        expect(p.collect()).toBe(2);
        expect(p.driver.enableInterrupts()).toBe(false);
      });

      it('the processing loop never loses a buffer added during the enable race', () => {
        const p = prepared(eventIdx);
        let kicks = 0;
        let processed = 0;
        const deviceLoop = (addDuringRace: boolean) => {
          let raced = false;
          do {
            p.device.disableNotifications();
            processed += p.drain();
            if (addDuringRace && !raced) {
              // The driver adds after the device found the ring empty but before it re-enables.
              // It sees NO_NOTIFY (or, with EVENT_IDX, an avail_event left behind) and does not
              // kick: only the re-check finds it.
              raced = true;
              if (p.add(1)) kicks++;
            }
            p.device.publishUsed();
          } while (p.device.enableNotifications());
        };
        if (p.add(1)) kicks++;
        deviceLoop(true);
        expect(processed).toBe(2); // the racing buffer was picked up by the re-check
        if (p.add(1)) kicks++;
        deviceLoop(false);
        expect(processed).toBe(3);
        expect(kicks).toBe(2);
      });
    });
  }
});

describe('SplitDriverQueue across regions', () => {
  it('keeps rings in one region and buffers in another', () => {
    const memory = new GuestMemory([
      { guestAddress: 0, buffer: new ArrayBuffer(1 << 20) },
      { guestAddress: 0x1_0000_0000, buffer: new ArrayBuffer(1 << 16) },
    ]);
    const { driver, device, buffers } = pair({ memory, indirect: true });
    const a = buffers.allocate(64, 8);
    expect(a).toBeGreaterThanOrEqual(0x1_0000_0000);
    memory.writeU32(a, 0x12345678);
    driver.add([seg(a, 4)], [seg(a + 8, 4), seg(a + 12, 4)], 'high');
    driver.publish();
    const chain = device.pop()!;
    expect(chain.readable).toEqual([seg(a, 4)]);
    expect(chain.reader().readU32()).toBe(0x12345678);
    chain.writer().writeU64(0xaabbccdd_11223344n);
    device.addUsed(chain, 8);
    device.publishUsed();
    expect(driver.takeUsed()).toEqual({ token: 'high', len: 8 });
    expect(memory.readU32(a + 8)).toBe(0x11223344);
  });
});
