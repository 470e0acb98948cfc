import { describe, expect, it } from 'vitest';
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
import type { DescriptorChain, Segment } from './chain.js';
import { PackedDeviceQueue } from './packed.js';
import { PackedDriverQueue } from './packed-driver.js';
import type { QueuePosition } from './types.js';

interface PairOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  regions?: GuestRegionInit[];
  /** Both sides start here (the device as after SET_VRING_BASE). */
  position?: QueuePosition;
}

/** A driver queue and a device queue on the same ring, as a guest and a device would share it. */
function pair(options: PairOptions = {}) {
  const memory = new GuestMemory(
    options.regions ?? [{ guestAddress: 0, buffer: new ArrayBuffer(0x40000) }],
  );
  let next = memory.regions[0]!.guestAddress;
  const allocations: [number, number][] = [];
  const allocate = (size: number, align: number) => {
    const address = Math.ceil(next / align) * align;
    next = address + size;
    allocations.push([address, size]);
    return address;
  };
  const size = options.size ?? 8;
  const eventIdx = options.eventIdx ?? false;
  const indirect = options.indirect ?? false;
  const driver = new PackedDriverQueue<string>(memory, {
    index: 1,
    size,
    eventIdx,
    indirect,
    allocate,
    ...(options.position ? { startPosition: options.position } : {}),
  });
  const violations: ProtocolViolation[] = [];
  const device = new PackedDeviceQueue(
    {
      index: 1,
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
      ...(options.position ? { position: options.position } : {}),
    },
  );
  // Buffers live well away from the rings.
  const buffer = (n: number): Segment => ({ addr: 0x20000 + n * 0x100, len: 0x100 });
  return { memory, driver, device, violations, allocations, buffer };
}

function popAll(device: PackedDeviceQueue): DescriptorChain[] {
  const chains: DescriptorChain[] = [];
  for (let chain = device.pop(); chain; chain = device.pop()) chains.push(chain);
  return chains;
}

describe('PackedDriverQueue setup', () => {
  it('allocates an aligned ring and event structures and zeroes them', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(0x10000));
    memory.fill(0, 0x10000, 0xff);
    const requests: [number, number][] = [];
    let next = 0x100;
    const driver = new PackedDriverQueue(memory, {
      index: 4,
      size: 10,
      eventIdx: false,
      indirect: false,
      allocate: (size, align) => {
        requests.push([size, align]);
        const address = Math.ceil(next / align) * align;
        next = address + size;
        return address;
      },
    });
    expect(requests).toEqual([
      [160, 16],
      [4, 4],
      [4, 4],
    ]);
    expect(driver).toMatchObject({ index: 4, size: 10, layout: 'packed', freeDescriptors: 10 });
    expect(driver.descAddr % 16).toBe(0);
    expect(memory.view(driver.descAddr, 160).every((b) => b === 0)).toBe(true);
    expect(memory.readU32(driver.driverAddr)).toBe(0);
    expect(memory.readU32(driver.deviceAddr)).toBe(0);
  });

  it('refuses bad sizes and allocations it cannot use', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(0x10000));
    const options = { index: 0, eventIdx: false, indirect: false };
    expect(() => new PackedDriverQueue(memory, { ...options, size: 0, allocate: () => 0 })).toThrow(
      QueueConfigError,
    );
    expect(
      () => new PackedDriverQueue(memory, { ...options, size: 32769, allocate: () => 0 }),
    ).toThrow(QueueConfigError);
    expect(() => new PackedDriverQueue(memory, { ...options, size: 8, allocate: () => 8 })).toThrow(
      /aligned/,
    );
    expect(
      () => new PackedDriverQueue(memory, { ...options, size: 8, allocate: () => 0x10000 }),
    ).toThrow(/not inside one guest memory region/);
  });
});

describe('PackedDriverQueue with PackedDeviceQueue', () => {
  it('hands a buffer to the device at publish and gets it back with the written length', () => {
    const { driver, device, buffer, memory } = pair();
    expect(driver.add([buffer(0)], [buffer(1), buffer(2)], 'a')).toBe(true);
    expect(driver.freeDescriptors).toBe(5);
    expect(device.pop()).toBeNull(); // not published yet
    expect(driver.publish()).toBe(true);
    const chain = device.pop()!;
    expect(chain.readable).toEqual([buffer(0)]);
    expect(chain.writable).toEqual([buffer(1), buffer(2)]);
    expect(chain.ringSlots).toBe(3);
    chain.writer().write(Uint8Array.of(1, 2, 3));
    device.addUsed(chain, 3);
    expect(driver.takeUsed()).toBeNull(); // not published yet
    expect(device.publishUsed()).toBe(true);
    expect(driver.hasUsed()).toBe(true);
    expect(driver.takeUsed()).toEqual({ token: 'a', len: 3 });
    expect(memory.view(buffer(1).addr, 3)).toEqual(Uint8Array.of(1, 2, 3));
    expect(driver.takeUsed()).toBeNull();
    expect(driver.freeDescriptors).toBe(8);
    expect(driver.inFlight).toBe(0);
  });

  it('publishes a batch with the first head written last', () => {
    const { driver, device, buffer, memory } = pair();
    driver.add([buffer(0)], [], 'a');
    driver.add([buffer(1), buffer(2)], [], 'b');
    // Until publish, both heads (slots 0 and 1) read as never made available.
    expect(memory.readU16(driver.descAddr + 14)).toBe(0);
    expect(memory.readU16(driver.descAddr + 16 + 14)).toBe(0);
    // The non-head descriptor of the second chain is already complete.
    expect(memory.readU16(driver.descAddr + 32 + 14)).toBe(VIRTQ_DESC_F_AVAIL);
    driver.publish();
    expect(memory.readU16(driver.descAddr + 14)).toBe(VIRTQ_DESC_F_AVAIL);
    expect(memory.readU16(driver.descAddr + 16 + 14)).toBe(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    expect(popAll(device).map((c) => c.ringSlots)).toEqual([1, 2]);
  });

  it('returns false when the ring is full and refuses impossible buffers', () => {
    const { driver, buffer } = pair({ size: 4 });
    expect(driver.add([buffer(0), buffer(1), buffer(2)], [], 'a')).toBe(true);
    expect(driver.add([buffer(3), buffer(4)], [], 'b')).toBe(false);
    expect(driver.add([buffer(3)], [], 'c')).toBe(true);
    expect(driver.add([buffer(3)], [], 'd')).toBe(false);
    expect(driver.freeDescriptors).toBe(0);
    expect(() => driver.add([], [], 'e')).toThrow(VirtkitError);
    const { driver: small, buffer: b } = pair({ size: 2 });
    expect(() => small.add([b(0), b(1), b(2)], [], 'f')).toThrow(/does not fit/);
    expect(() => small.add([{ addr: -1, len: 1 }], [], 'g')).toThrow(/64-bit guest address/);
    expect(() => small.add([{ addr: 0, len: 2 ** 32 }], [], 'h')).toThrow(/32-bit length/);
  });

  it('encodes addresses above 4 GiB in both halves', () => {
    const high = 2 ** 36;
    const { driver, device } = pair({
      regions: [
        { guestAddress: 0, buffer: new ArrayBuffer(0x40000) },
        { guestAddress: high, buffer: new ArrayBuffer(0x1000) },
      ],
    });
    driver.add([], [{ addr: high + 0x20, len: 0x40 }], 'x');
    driver.publish();
    expect(device.pop()!.writable).toEqual([{ addr: high + 0x20, len: 0x40 }]);
  });

  it('uses one slot and an indirect table when indirect is negotiated, and reuses tables', () => {
    const { driver, device, buffer, memory, allocations } = pair({ size: 4, indirect: true });
    expect(driver.add([buffer(0), buffer(1)], [buffer(2)], 'a')).toBe(true);
    expect(driver.add([buffer(3)], [], 'b')).toBe(true); // one segment: direct
    expect(driver.freeDescriptors).toBe(2);
    driver.publish();
    const head = memory.readU16(driver.descAddr + 14);
    expect(head & VIRTQ_DESC_F_INDIRECT).toBe(VIRTQ_DESC_F_INDIRECT);
    expect(memory.readU16(driver.descAddr + 16 + 14) & VIRTQ_DESC_F_INDIRECT).toBe(0);
    const [a, b] = popAll(device);
    expect(a!.ringSlots).toBe(1);
    expect(a!.readable).toEqual([buffer(0), buffer(1)]);
    expect(a!.writable).toEqual([buffer(2)]);
    expect(b!.readable).toEqual([buffer(3)]);
    const tablesBefore = allocations.length;
    device.addUsed(a!, 0x80);
    device.addUsed(b!, 0);
    device.publishUsed();
    expect(driver.takeUsed()).toEqual({ token: 'a', len: 0x80 });
    expect(driver.takeUsed()).toEqual({ token: 'b', len: 0 });
    // The table comes back into the pool: the next multi-segment buffer allocates nothing.
    driver.add([buffer(0)], [buffer(1), buffer(2), buffer(3)], 'c');
    expect(allocations.length).toBe(tablesBefore);
    // A larger buffer needs a larger table.
    driver.add([buffer(0), buffer(1), buffer(2), buffer(3), buffer(4)], [], 'd');
    expect(allocations.length).toBe(tablesBefore + 1);
    driver.publish();
    expect(popAll(device).map((c) => c.readable.length + c.writable.length)).toEqual([4, 5]);
  });

  it('collects out-of-order completions of chains of different lengths', () => {
    const { driver, device, buffer } = pair({ size: 8 });
    driver.add([buffer(0), buffer(1)], [buffer(2)], 'three');
    driver.add([buffer(3)], [], 'one');
    driver.add([buffer(4)], [buffer(5)], 'two');
    driver.publish();
    const [three, one, two] = popAll(device);
    device.addUsed(two!, 0x10);
    device.addUsed(three!, 0x20);
    device.publishUsed();
    expect(driver.takeUsed()).toEqual({ token: 'two', len: 0x10 });
    expect(driver.takeUsed()).toEqual({ token: 'three', len: 0x20 });
    expect(driver.takeUsed()).toBeNull();
    expect(driver.freeDescriptors).toBe(8 - 1);
    // The freed slots are reused before 'one' completes.
    expect(driver.add([buffer(6), buffer(7), buffer(8), buffer(9)], [], 'four')).toBe(true);
    driver.publish();
    const [four] = popAll(device);
    expect(four!.ringSlots).toBe(4);
    device.addUsed(one!, 0);
    device.addUsed(four!, 0);
    device.publishUsed();
    expect(driver.takeUsed()).toEqual({ token: 'one', len: 0 });
    expect(driver.takeUsed()).toEqual({ token: 'four', len: 0 });
    expect(driver.freeDescriptors).toBe(8);
  });

  it('stays in step over many laps with random chain lengths and completion order', () => {
    for (const [size, indirect] of [
      [7, false],
      [5, true],
      [1, false],
      [16, true],
    ] as const) {
      const { driver, device, buffer, violations } = pair({ size, indirect });
      let seed = size * 7919;
      const random = (n: number) => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % n;
      };
      const name = (chain: DescriptorChain) => {
        const first = chain.readable[0] ?? chain.writable[0]!;
        return `t${(first.addr - 0x30000) / 16}:${chain.writableLength}`;
      };
      const inFlight: DescriptorChain[] = [];
      const expected: string[] = [];
      const received: string[] = [];
      let token = 0;
      for (let step = 0; step < 600; step++) {
        const segments = 1 + random(Math.min(size, 4));
        const readable = Array.from({ length: random(segments + 1) }, (_, i) => buffer(i));
        const writable = Array.from({ length: segments - readable.length }, (_, i) =>
          buffer(8 + i),
        );
        // The first segment's address names the token, so the device side can tell buffers apart.
        const tag = { addr: 0x30000 + 16 * (token % 1024), len: 16 };
        if (readable.length > 0) readable[0] = tag;
        else writable[0] = tag;
        if (driver.add(readable, writable, `t${token % 1024}`)) token++;
        if (random(3) === 0) driver.publish();
        if (random(2) === 0) {
          driver.publish();
          inFlight.push(...popAll(device));
        }
        while (inFlight.length > 0 && random(3) !== 0) {
          const [chain] = inFlight.splice(random(inFlight.length), 1);
          device.addUsed(chain!, chain!.writableLength);
          expected.push(name(chain!));
        }
        if (random(2) === 0) device.publishUsed();
        for (let used = driver.takeUsed(); used; used = driver.takeUsed()) {
          received.push(`${used.token}:${used.len}`);
        }
      }
      driver.publish();
      inFlight.push(...popAll(device));
      for (const chain of inFlight) {
        device.addUsed(chain, chain.writableLength);
        expected.push(name(chain));
      }
      device.publishUsed();
      for (let used = driver.takeUsed(); used; used = driver.takeUsed()) {
        received.push(`${used.token}:${used.len}`);
      }
      expect(violations).toEqual([]);
      expect(received).toEqual(expected);
      expect(received.length).toBeGreaterThan(300);
      expect(driver.freeDescriptors).toBe(size);
      expect(driver.inFlight).toBe(0);
      expect(device.inFlight).toBe(0);
    }
  });

  it('works on SharedArrayBuffer-backed memory', () => {
    const { driver, device, buffer } = pair({
      regions: [{ guestAddress: 0x100000, buffer: new SharedArrayBuffer(0x40000) }],
    });
    const b = { addr: 0x120000, len: 8 };
    expect(buffer(0).len).toBe(0x100);
    driver.add([b], [], 's');
    driver.publish();
    const chain = device.pop()!;
    device.addUsed(chain, 0);
    device.publishUsed();
    expect(driver.takeUsed()).toEqual({ token: 's', len: 0 });
  });
});

describe('PackedDriverQueue notifications', () => {
  it('publish follows the device event suppression flags', () => {
    const { driver, device, buffer } = pair();
    expect(driver.publish()).toBe(false); // nothing added
    device.disableNotifications();
    driver.add([buffer(0)], [], 'a');
    expect(driver.publish()).toBe(false);
    expect(device.enableNotifications()).toBe(true); // and the re-check finds the buffer
    driver.add([buffer(1)], [], 'b');
    expect(driver.publish()).toBe(true);
  });

  it('with EVENT_IDX, publish notifies only when it makes the requested descriptor available', () => {
    const { driver, device, buffer } = pair({ size: 4, eventIdx: true });
    expect(device.enableNotifications()).toBe(false); // asks for slot 0, wrap 1
    driver.add([buffer(0), buffer(1)], [], 'a');
    expect(driver.publish()).toBe(true); // slots 0-1 include slot 0
    driver.add([buffer(2)], [], 'b');
    expect(driver.publish()).toBe(false); // the device has not asked again
    const chains = popAll(device);
    expect(device.enableNotifications()).toBe(false); // asks for slot 3, wrap 1
    for (const chain of chains) device.addUsed(chain, 0);
    device.publishUsed();
    driver.takeUsed();
    driver.takeUsed();
    driver.add([buffer(3), buffer(4)], [], 'c'); // slots 3 and 0 (next lap)
    expect(driver.publish()).toBe(true);
    popAll(device);
    expect(device.enableNotifications()).toBe(false); // asks for slot 1, wrap 0
    driver.add([buffer(5)], [], 'd'); // slot 1 of wrap 0
    expect(driver.publish()).toBe(true);
  });

  it('interrupt suppression: DISABLE, ENABLE and the re-check on enable', () => {
    const { driver, device, buffer, memory } = pair();
    driver.disableInterrupts();
    expect(memory.readU16(driver.driverAddr + 2)).toBe(RING_EVENT_FLAGS_DISABLE);
    driver.add([buffer(0)], [], 'a');
    driver.add([buffer(1)], [], 'b');
    driver.publish();
    const [a, b] = popAll(device);
    device.addUsed(a!, 0);
    expect(device.publishUsed()).toBe(false);
    expect(driver.enableInterrupts()).toBe(true); // 'a' is already waiting
    expect(memory.readU16(driver.driverAddr + 2)).toBe(RING_EVENT_FLAGS_ENABLE);
    expect(driver.takeUsed()?.token).toBe('a');
    expect(driver.enableInterrupts()).toBe(false);
    device.addUsed(b!, 0);
    expect(device.publishUsed()).toBe(true);
  });

  it('with EVENT_IDX, asks for the next used slot and keeps the offset current as it takes', () => {
    const { driver, device, buffer, memory } = pair({ size: 4, eventIdx: true });
    for (let i = 0; i < 3; i++) driver.add([buffer(i)], [], `t${i}`);
    driver.publish();
    const chains = popAll(device);
    expect(driver.enableInterrupts()).toBe(false);
    expect(memory.readU16(driver.driverAddr + 2)).toBe(RING_EVENT_FLAGS_DESC);
    expect(memory.readU16(driver.driverAddr)).toBe(0 | (1 << 15));
    device.addUsed(chains[0]!, 0);
    expect(device.publishUsed()).toBe(true); // slot 0 used
    device.addUsed(chains[1]!, 0);
    expect(device.publishUsed()).toBe(false); // slot 1: the driver has not taken slot 0 yet
    expect(driver.takeUsed()?.token).toBe('t0');
    expect(driver.takeUsed()?.token).toBe('t1');
    expect(memory.readU16(driver.driverAddr)).toBe(2 | (1 << 15));
    device.addUsed(chains[2]!, 0);
    expect(device.publishUsed()).toBe(true); // slot 2, as asked
  });
});

describe('PackedDriverQueue checks what the device returns', () => {
  function usedAt(
    memory: GuestMemory,
    driver: PackedDriverQueue<string>,
    id: number,
    len: number,
    flags: number,
  ) {
    memory.writeU32(driver.descAddr + 8, len);
    memory.writeU16(driver.descAddr + 12, id);
    memory.writeU16(driver.descAddr + 14, flags);
  }

  it('throws on an id that is not in flight', () => {
    const { driver, buffer, memory } = pair();
    driver.add([buffer(0)], [buffer(1)], 'a');
    driver.publish();
    usedAt(memory, driver, 5, 0, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
    expect(() => driver.takeUsed()).toThrow(/buffer id 5/);
    usedAt(memory, driver, 0xffff, 0, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
    expect(() => driver.takeUsed()).toThrow(VirtkitError);
  });

  it('throws when the device claims to have written more than the buffer holds', () => {
    const { driver, buffer, memory } = pair();
    driver.add([buffer(0)], [buffer(1)], 'a');
    driver.publish();
    usedAt(memory, driver, 0, 0x101, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    expect(() => driver.takeUsed()).toThrow(/0x101|257 bytes/);
  });

  it('ignores the length of a used descriptor without WRITE (§2.8.4)', () => {
    const { driver, buffer, memory } = pair();
    driver.add([buffer(0)], [buffer(1)], 'a');
    driver.publish();
    usedAt(memory, driver, 0, 0x99999, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
    expect(driver.takeUsed()).toEqual({ token: 'a', len: 0 });
  });

  it('does not take a descriptor that is still available or used in the other wrap', () => {
    const { driver, buffer, memory } = pair();
    driver.add([buffer(0)], [], 'a');
    driver.publish();
    expect(driver.takeUsed()).toBeNull();
    usedAt(memory, driver, 0, 0, 0); // AVAIL = USED = 0: used, but in wrap 0
    expect(driver.takeUsed()).toBeNull();
    usedAt(memory, driver, 0, 0, VIRTQ_DESC_F_USED); // USED only: neither
    expect(driver.takeUsed()).toBeNull();
  });
});

describe('PackedDriverQueue starting position', () => {
  it.each([
    [5, true],
    [5, false],
    [0, false],
    [6, true],
  ])(
    'starts at slot %s with wrap counter %s, in step with a device started there',
    (slot, wrap) => {
      const position = { nextAvail: slot, nextUsed: slot, availWrap: wrap, usedWrap: wrap };
      const { driver, device, violations, buffer } = pair({ size: 7, position });
      // Nothing looks available to the device, nor used to the driver, before anything is added.
      expect(device.pop()).toBeNull();
      expect(driver.takeUsed()).toBeNull();
      // Two laps of 2-slot chains, so both wrap counters flip twice.
      for (let n = 0; n < 14; n++) {
        expect(driver.add([buffer(0)], [buffer(1)], `r${n}`)).toBe(true);
        driver.publish();
        const [chain] = popAll(device);
        expect(chain?.ringSlots).toBe(2);
        device.addUsed(chain!, 3);
        device.publishUsed();
        expect(driver.takeUsed()).toEqual({ token: `r${n}`, len: 3 });
      }
      expect(violations).toEqual([]);
      expect(device.position()).toEqual(position);
    },
  );

  it('refuses a start position that is not a slot or has buffers in flight', () => {
    const memory = GuestMemory.fromBuffer(new ArrayBuffer(0x10000));
    let next = 0;
    const allocate = (size: number) => {
      next += size + 16;
      return next - size - 16;
    };
    const make = (startPosition: QueuePosition) =>
      new PackedDriverQueue(memory, {
        index: 0,
        size: 8,
        eventIdx: false,
        indirect: false,
        allocate,
        startPosition,
      });
    expect(() => make({ nextAvail: 8, nextUsed: 8 })).toThrow(QueueConfigError);
    expect(() => make({ nextAvail: 3, nextUsed: 2 })).toThrow(/nothing in flight/);
    expect(() => make({ nextAvail: 3, nextUsed: 3, availWrap: true, usedWrap: false })).toThrow(
      QueueConfigError,
    );
  });
});
