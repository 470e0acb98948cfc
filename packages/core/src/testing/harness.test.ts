import { describe, expect, it } from 'vitest';
import { DeviceStatus, DeviceType, Feature, featureBit } from '../constants.js';
import type { ActivationContext, VirtioDevice } from '../device.js';
import { VirtkitError } from '../errors.js';
import type { DeviceQueue, QueuePosition, RingLayout } from '../queue/types.js';
import { BumpAllocator, createTestMemory, FakeInterrupt, TestDriver } from './harness.js';

// ASCII only: core compiles without the DOM library, so no TextEncoder/TextDecoder types.
const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const text = (b: Uint8Array) => String.fromCharCode(...b);

/** The smallest useful device: upper-cases what the driver sends. */
class UpperCaseDevice implements VirtioDevice {
  readonly deviceType = DeviceType.CONSOLE;
  features = featureBit(Feature.RING_PACKED) | featureBit(Feature.RING_EVENT_IDX);
  readonly queues = [{ maxSize: 64 }];
  /** False: requests stay in flight, for timeout tests. */
  answer = true;
  #context: ActivationContext | undefined;

  activate(context: ActivationContext): void {
    this.#context = context;
  }

  queueNotify(index: number): void {
    const context = this.#context!;
    const queue = context.queues[index] as DeviceQueue;
    if (!this.answer) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const message = text(chain.reader().readBytes(chain.readableLength));
        queue.addUsed(chain, chain.writer().writeSome(bytes(message.toUpperCase())));
      }
      if (queue.publishUsed()) context.signalUsed(index);
    } while (queue.enableNotifications());
  }

  reset(): void {
    this.#context = undefined;
  }
}

describe('TestDriver', () => {
  it.each(['split', 'packed'] as const)(
    'tests a device in a few lines (%s ring)',
    async (layout) => {
      const driver = await TestDriver.create(new UpperCaseDevice(), { layout });
      const reply = await driver.send(0, {
        readable: [bytes('hi')],
        writable: [8],
      });
      expect(reply).toEqual({ len: 2, written: bytes('HI') });
      expect(driver.queues[0]!.layout).toBe(layout);
      expect(driver.status).toBe(
        DeviceStatus.ACKNOWLEDGE |
          DeviceStatus.DRIVER |
          DeviceStatus.FEATURES_OK |
          DeviceStatus.DRIVER_OK,
      );
      expect(driver.interrupt.usedCount(0)).toBe(1);
      expect(driver.controller.violations.count()).toBe(0);
    },
  );

  it('batches with post, kick and collect', async () => {
    const driver = await TestDriver.create(new UpperCaseDevice());
    const tokens = ['a', 'b', 'c'].map(
      (s) => driver.post(0, { readable: [bytes(s)], writable: [1] }).token,
    );
    expect(driver.collect(0)).toEqual([]);
    driver.kick(0);
    expect(driver.collect(0)).toEqual(tokens);
    expect(driver.interrupt.usedCount(0)).toBe(1);
    expect(text((await driver.wait(0, tokens[1]!)).written)).toBe('B');
  });

  // A device restored at a ring position (vhost-user SET_VRING_BASE) must meet a driver that is
  // there too; positions just before the wrap make both sides cross it.
  it.each([
    ['split', { nextAvail: 0xfffe, nextUsed: 0xfffe }],
    ['packed', { nextAvail: 62, nextUsed: 62, availWrap: false, usedWrap: false }],
    ['packed', { nextAvail: 63, nextUsed: 63, availWrap: true, usedWrap: true }],
  ] as [RingLayout, QueuePosition][])(
    'starts the driver queue at the queuePosition given to the device (%s, %j)',
    async (layout, position) => {
      const driver = await TestDriver.create(new UpperCaseDevice(), {
        layout,
        queueSizes: [64],
        queuePosition: (index) => (index === 0 ? position : undefined),
      });
      for (let n = 0; n < 4; n++) {
        const reply = await driver.send(0, {
          readable: [bytes(`r${n}`)],
          writable: [4],
        });
        expect(text(reply.written)).toBe(`R${n}`);
      }
      expect(driver.controller.violations.count()).toBe(0);
      const activation = driver.controller.activation;
      if (activation.state !== 'active') throw new Error('not active');
      const after = activation.queues[0]!.position();
      // Four requests: four avail entries (split) or eight ring slots (packed, 2 per request).
      expect(after.nextAvail).toBe(
        layout === 'split' ? (position.nextAvail + 4) & 0xffff : (position.nextAvail + 8) % 64,
      );
    },
  );

  it('refuses a queuePosition with buffers in flight rather than desynchronize', async () => {
    await expect(
      TestDriver.create(new UpperCaseDevice(), {
        queuePosition: () => ({ nextAvail: 5, nextUsed: 3 }),
      }),
    ).rejects.toThrow(/cannot start at position 5\/3/);
  });

  it('fails initialization the way a driver sees it: FEATURES_OK does not stick', async () => {
    const device = new UpperCaseDevice();
    const refusing = Object.assign(device, {
      validateFeatures: () => 'no thanks',
    });
    const error = await TestDriver.create(refusing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VirtkitError);
    expect((error as VirtkitError).message).toMatch(/FEATURES_OK did not read back/);
  });

  it('refuses the packed layout when the device does not offer it', async () => {
    const device = new UpperCaseDevice();
    device.features = 0n;
    await expect(TestDriver.create(device, { layout: 'packed' })).rejects.toThrow(
      /does not offer RING_PACKED/,
    );
  });

  it('gives up waiting after timeoutMs', async () => {
    const device = new UpperCaseDevice();
    device.answer = false;
    const driver = await TestDriver.create(device, { timeoutMs: 30 });
    await expect(driver.send(0, { writable: [1] })).rejects.toThrow(/no completion on queue 0/);
  });

  it('can stop before DRIVER_OK and finish later', async () => {
    const driver = await TestDriver.create(new UpperCaseDevice(), { deferDriverOk: true });
    expect(driver.status & DeviceStatus.DRIVER_OK).toBe(0);
    expect(driver.controller.activation.state).toBe('inactive');
    await driver.start();
    expect(driver.controller.activation.state).toBe('active');
  });
});

describe('createTestMemory', () => {
  it('builds regions with holes and allocates round-robin across them', () => {
    const guest = createTestMemory({ size: 3 * 0x10000, regions: 3, base: 0x100000, shared: true });
    expect(guest.memory.regions.map((r) => [r.guestAddress, r.size])).toEqual([
      [0x100000, 0x10000],
      [0x120000, 0x10000],
      [0x140000, 0x10000],
    ]);
    expect(guest.memory.regions[0]!.bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
    const addresses = [guest.allocate(16), guest.allocate(16), guest.allocate(16)];
    expect(addresses.map((a) => guest.memory.findRegion(a, 16)?.guestAddress)).toEqual([
      0x100000, 0x120000, 0x140000,
    ]);
    expect(() => guest.allocate(0x20000)).toThrow(/exhausted/);
  });

  it('BumpAllocator aligns and refuses to run past its end', () => {
    const allocator = new BumpAllocator(0x1001, 0x1100);
    expect(allocator.allocate(4, 16)).toBe(0x1010);
    expect(allocator.allocate(1, 8)).toBe(0x1018);
    expect(() => allocator.allocate(0x100)).toThrow(VirtkitError);
  });
});

describe('FakeInterrupt', () => {
  it('counts interrupts per queue and wakes waiters', async () => {
    const interrupt = new FakeInterrupt();
    const woken = interrupt.next(10_000);
    interrupt.signalUsed(2);
    await woken;
    interrupt.signalConfig();
    expect(interrupt.usedCount(2)).toBe(1);
    expect(interrupt.usedCount(0)).toBe(0);
    expect(interrupt.config).toBe(1);
    // With nothing signalled, next() resolves after its timeout.
    await interrupt.next(1);
  });
});

describe('TestDriver.wait and DEVICE_NEEDS_RESET', () => {
  it('fails at once with the reason instead of timing out', async () => {
    const device: VirtioDevice = {
      deviceType: DeviceType.ENTROPY,
      features: 0n,
      queues: [{ maxSize: 8 }],
      activate() {},
      queueNotify() {
        throw new Error('backend gone');
      },
      reset() {},
    };
    const driver = await TestDriver.create(device, { timeoutMs: 60_000 });
    const started = Date.now();
    await expect(driver.send(0, { writable: [4] })).rejects.toThrow(
      /DEVICE_NEEDS_RESET.*backend gone/,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
