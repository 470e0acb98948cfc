import { describe, expect, it, vi } from 'vitest';
import { ConfigSpace } from './config-space.js';
import { DeviceStatus, DeviceType, Feature, featureBit } from './constants.js';
import { DeviceController } from './controller.js';
import type { ActivationContext, VirtioDevice } from './device.js';
import type { DeviceQueue } from './queue/types.js';
import { createTestMemory, FakeInterrupt, TestDriver } from './testing/harness.js';

const {
  ACKNOWLEDGE: ACK,
  DRIVER,
  FEATURES_OK,
  DRIVER_OK,
  FAILED,
  DEVICE_NEEDS_RESET,
} = DeviceStatus;
const VERSION_1 = featureBit(Feature.VERSION_1);
const DEVICE_BIT_3 = 1n << 3n;

/** A device that echoes readable bytes into the writable part, and records its lifecycle. */
class EchoDevice implements VirtioDevice {
  readonly deviceType = DeviceType.ENTROPY;
  readonly features: bigint;
  readonly queues = [{ maxSize: 64 }, { maxSize: 16 }];
  readonly config = new ConfigSpace(8, { writable: [{ offset: 4, length: 4 }] });
  readonly log: string[] = [];
  context: ActivationContext | undefined;
  activateDelay: Promise<void> | undefined;
  resetDelay: Promise<void> | undefined;
  rejectFeature: bigint | undefined;

  constructor(
    features = featureBit(Feature.RING_EVENT_IDX) |
      featureBit(Feature.RING_INDIRECT_DESC) |
      featureBit(Feature.RING_PACKED) |
      DEVICE_BIT_3,
  ) {
    this.features = features;
  }

  validateFeatures(features: bigint): string | undefined {
    return this.rejectFeature !== undefined && features & this.rejectFeature
      ? 'driver accepted a feature this device cannot combine'
      : undefined;
  }

  activate(context: ActivationContext): void | Promise<void> {
    this.log.push(`activate ${context.queues.map((q) => (q ? q.layout : '-')).join(',')}`);
    this.context = context;
    return this.activateDelay;
  }

  queueNotify(index: number): void {
    this.log.push(`notify ${index}`);
    const queue = this.context?.queues[index] as DeviceQueue;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const data = chain.reader().readBytes(chain.readableLength);
        const written = chain.writer().writeSome(data.reverse());
        queue.addUsed(chain, written);
      }
      if (queue.publishUsed()) this.context?.signalUsed(index);
    } while (queue.enableNotifications());
  }

  reset(): void | Promise<void> {
    this.log.push('reset');
    this.context = undefined;
    return this.resetDelay;
  }
}

function controllerFor(device: VirtioDevice, requireVersion1 = true) {
  const { memory } = createTestMemory({ size: 1 << 20 });
  const interrupt = new FakeInterrupt();
  const controller = new DeviceController(device, { memory, interrupt, requireVersion1 });
  return { controller, interrupt, memory };
}

async function negotiate(controller: DeviceController, features: bigint) {
  await controller.writeStatus(ACK);
  await controller.writeStatus(ACK | DRIVER);
  controller.writeDriverFeatures(features);
  await controller.writeStatus(ACK | DRIVER | FEATURES_OK);
}

describe('feature negotiation (§2.2, §3.1.1)', () => {
  it('offers the device features plus VERSION_1, in 32-bit pages', () => {
    const { controller } = controllerFor(new EchoDevice(DEVICE_BIT_3));
    expect(controller.deviceFeaturesPage(0)).toBe(8);
    expect(controller.deviceFeaturesPage(1)).toBe(1); // VERSION_1 is bit 32
    expect(controller.deviceFeaturesPage(2)).toBe(0);
    expect(controller.deviceFeaturesPage(0xffffffff)).toBe(0);
  });

  it('masks driver features to the offered ones', async () => {
    const { controller } = controllerFor(new EchoDevice(DEVICE_BIT_3));
    await negotiate(controller, VERSION_1 | DEVICE_BIT_3 | (1n << 5n) | (1n << 40n));
    expect(controller.status & FEATURES_OK).toBe(FEATURES_OK);
    expect(controller.negotiatedFeatures).toBe(VERSION_1 | DEVICE_BIT_3);
    expect(controller.driverFeaturesPage(0)).toBe(8);
  });

  it('refuses FEATURES_OK without VERSION_1 on modern transports, and counts it', async () => {
    const { controller } = controllerFor(new EchoDevice());
    await negotiate(controller, DEVICE_BIT_3);
    expect(controller.status).toBe(ACK | DRIVER);
    expect(controller.negotiatedFeatures).toBe(0n);
    expect(controller.violations.count('FEATURES_NOT_ACCEPTED')).toBe(1);
    // A transport that does not need VERSION_1 accepts the same set.
    const legacy = controllerFor(new EchoDevice(), false).controller;
    await negotiate(legacy, DEVICE_BIT_3);
    expect(legacy.status & FEATURES_OK).toBe(FEATURES_OK);
  });

  it('refuses FEATURES_OK when the device rejects the combination', async () => {
    const device = new EchoDevice();
    device.rejectFeature = DEVICE_BIT_3;
    const { controller } = controllerFor(device);
    await negotiate(controller, VERSION_1 | DEVICE_BIT_3);
    expect(controller.status & FEATURES_OK).toBe(0);
    expect(controller.violations.recent().at(-1)?.message).toBe(
      'driver accepted a feature this device cannot combine',
    );
  });

  it('ignores feature writes after FEATURES_OK and pages beyond 1', async () => {
    const { controller } = controllerFor(new EchoDevice());
    await negotiate(controller, VERSION_1);
    controller.writeDriverFeaturesPage(0, 0xffffffff);
    expect(controller.negotiatedFeatures).toBe(VERSION_1);
    expect(controller.violations.count('FEATURES_AFTER_FEATURES_OK')).toBe(1);
    const other = controllerFor(new EchoDevice()).controller;
    other.writeDriverFeaturesPage(2, 1);
    other.writeDriverFeaturesPage(3, 0);
    expect(other.violations.count('REGISTER_ACCESS_INVALID')).toBe(1);
    expect(other.driverFeatures).toBe(0n);
  });
});

describe('device status (§2.1, §3.1.1)', () => {
  it('enforces the order ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK', async () => {
    const { controller } = controllerFor(new EchoDevice());
    await controller.writeStatus(DRIVER);
    expect(controller.status).toBe(0);
    await controller.writeStatus(ACK | FEATURES_OK);
    expect(controller.status).toBe(0);
    await controller.writeStatus(ACK);
    await controller.writeStatus(ACK | DRIVER | DRIVER_OK);
    expect(controller.status).toBe(ACK);
    expect(controller.violations.count('STATUS_ORDER')).toBe(3);
  });

  it('ignores attempts to clear bits without a reset, and to set DEVICE_NEEDS_RESET', async () => {
    const { controller } = controllerFor(new EchoDevice());
    await controller.writeStatus(ACK);
    await controller.writeStatus(ACK | DRIVER);
    await controller.writeStatus(DRIVER);
    expect(controller.status).toBe(ACK | DRIVER);
    expect(controller.violations.count('STATUS_CLEARED_BITS')).toBe(1);
    await controller.writeStatus(ACK | DRIVER | DEVICE_NEEDS_RESET);
    expect(controller.status).toBe(ACK | DRIVER);
  });

  it('records FAILED and leaves the device inactive', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await controller.writeStatus(ACK);
    await controller.writeStatus(ACK | FAILED);
    expect(controller.status).toBe(ACK | FAILED);
    expect(controller.activation.state).toBe('inactive');
  });

  it('after FAILED, accepts nothing but a reset (§2.1: the driver gave up)', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await negotiate(controller, VERSION_1);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | FAILED);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | FAILED | DRIVER_OK);
    expect(controller.status).toBe(ACK | DRIVER | FEATURES_OK | FAILED);
    expect(controller.activation.state).toBe('inactive');
    expect(device.log).toEqual([]);
    expect(controller.violations.count('STATUS_ORDER')).toBe(1);
    await controller.writeStatus(0);
    expect(controller.status).toBe(0);
    await negotiate(controller, VERSION_1);
    expect(controller.status).toBe(ACK | DRIVER | FEATURES_OK);
  });

  it('keeps DEVICE_NEEDS_RESET until a reset, whatever the driver writes', async () => {
    const driver = await TestDriver.create(new EchoDevice());
    const c = driver.controller;
    c.requestReset('test');
    const live = ACK | DRIVER | FEATURES_OK | DRIVER_OK;
    expect(c.status).toBe(live | DEVICE_NEEDS_RESET);
    await c.writeStatus(live);
    expect(c.status).toBe(live | DEVICE_NEEDS_RESET);
    await c.writeStatus(live | FAILED);
    expect(c.status).toBe(live | FAILED | DEVICE_NEEDS_RESET);
    await driver.reset();
    expect(c.status).toBe(0);
  });

  it('emits typed status events', async () => {
    const { controller } = controllerFor(new EchoDevice());
    const seen: [number, number][] = [];
    controller.events.on('status', (status, previous) => seen.push([status, previous]));
    await controller.writeStatus(ACK);
    await controller.writeStatus(ACK | DRIVER);
    await controller.writeStatus(0);
    expect(seen).toEqual([
      [ACK, 0],
      [ACK | DRIVER, ACK],
      [0, ACK | DRIVER],
    ]);
  });
});

describe('activation and queues', () => {
  it.each(['split', 'packed'] as const)(
    'activates with %s queues the driver enabled and moves buffers',
    async (layout) => {
      const device = new EchoDevice();
      const driver = await TestDriver.create(device, { layout });
      expect(device.log[0]).toBe(`activate ${layout},${layout}`);
      expect(driver.controller.activation.state).toBe('active');
      const reply = await driver.send(0, { readable: [Uint8Array.of(1, 2, 3)], writable: [8] });
      expect(reply.len).toBe(3);
      expect([...reply.written]).toEqual([3, 2, 1]);
      expect(driver.interrupt.usedCount(0)).toBeGreaterThan(0);
    },
  );

  it('refuses queue sizes above the maximum and non-powers of two for split rings', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await negotiate(controller, VERSION_1);
    expect(controller.writeQueueSize(0, 128)).toBe(false);
    expect(controller.writeQueueSize(0, 0)).toBe(false);
    expect(controller.writeQueueSize(0, 48)).toBe(false);
    expect(controller.queue(0)?.size).toBe(64);
    expect(controller.writeQueueSize(0, 32)).toBe(true);
    expect(controller.violations.count('QUEUE_SIZE_INVALID')).toBe(3);
    expect(controller.writeQueueSize(7, 32)).toBe(false);
    expect(controller.violations.count('QUEUE_INDEX_INVALID')).toBe(1);
  });

  it('accepts any size up to the maximum for packed rings', async () => {
    const { controller } = controllerFor(new EchoDevice());
    await negotiate(controller, VERSION_1 | featureBit(Feature.RING_PACKED));
    expect(controller.ringLayout).toBe('packed');
    expect(controller.writeQueueSize(0, 48)).toBe(true);
  });

  it('freezes queue registers once the queue is enabled and after DRIVER_OK', async () => {
    const driver = await TestDriver.create(new EchoDevice());
    const c = driver.controller;
    const before = { ...c.queue(0)! };
    expect(c.writeQueueSize(0, 16)).toBe(false);
    expect(c.writeQueueAddress(0, 'desc', 0, 0x1000)).toBe(false);
    expect(c.writeQueueReady(0, false)).toBe(false);
    expect(c.queue(0)).toEqual(before);
    expect(c.violations.count('QUEUE_CONFIG_AFTER_DRIVER_OK')).toBe(3);
  });

  it('sets DEVICE_NEEDS_RESET and interrupts when a ring lies outside guest memory', async () => {
    const device = new EchoDevice();
    const { controller, interrupt } = controllerFor(device);
    await negotiate(controller, VERSION_1);
    controller.writeQueueAddress(0, 'desc', 0, 0xfff000);
    controller.writeQueueReady(0, true);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(controller.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
    expect(controller.activation.state).toBe('failed');
    expect(device.log).toEqual([]);
    expect(interrupt.config).toBe(1);
    expect(controller.violations.count('QUEUE_ADDRESS_INVALID')).toBe(1);
  });

  it.each([0x20_0000, 0x8000_0000, 0xffff_ffff])(
    'rejects, never rounds or truncates, a ring address with high half 0x%s',
    async (high) => {
      const device = new EchoDevice();
      const { controller } = controllerFor(device);
      await negotiate(controller, VERSION_1);
      // Low halves that are valid ring addresses: dropping the high bits would "work".
      controller.writeQueueAddress(0, 'desc', 0, 0x1000);
      controller.writeQueueAddress(0, 'driver', 0, 0x2000);
      controller.writeQueueAddress(0, 'driver', 1, high);
      controller.writeQueueAddress(0, 'device', 0, 0x3000);
      controller.writeQueueReady(0, true);
      await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
      expect(controller.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
      expect(controller.activation.state).toBe('failed');
      expect(controller.violations.count('QUEUE_ADDRESS_INVALID')).toBe(1);
      expect(device.log).toEqual([]);
    },
  );

  it.each([
    ['a bigint beyond 2^53', 2n ** 53n + 0x2000n],
    ['a bigint beyond 2^64', 2n ** 64n + 0x2000n],
    ['a negative bigint', -0x2000n],
    ['a number beyond 2^53', 2 ** 53 + 0x2000],
    ['a fractional number', 0x2000 + 0.5],
  ])('writeQueueAddress64 never rounds %s into a valid address', async (_, address) => {
    const { controller } = controllerFor(new EchoDevice());
    await negotiate(controller, VERSION_1);
    controller.writeQueueAddress64(0, 'desc', 0x1000n);
    controller.writeQueueAddress64(0, 'driver', address);
    controller.writeQueueAddress64(0, 'device', 0x3000);
    controller.writeQueueReady(0, true);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(controller.activation.state).toBe('failed');
    expect(controller.violations.count('QUEUE_ADDRESS_INVALID')).toBe(1);
  });

  it('accepts the same ring with every address below 2^53', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await negotiate(controller, VERSION_1);
    controller.writeQueueAddress(0, 'desc', 0, 0x1000);
    controller.writeQueueAddress64(0, 'driver', 0x2000n);
    controller.writeQueueAddress64(0, 'device', 0x3000);
    controller.writeQueueReady(0, true);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(controller.activation.state).toBe('active');
  });

  it.each([
    ['desc', 0x1008],
    ['driver', 0x2001],
    ['device', 0x3002],
  ] as const)('refuses a misaligned %s area at DRIVER_OK', async (area, address) => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await negotiate(controller, VERSION_1);
    const addresses = { desc: 0x1000, driver: 0x2000, device: 0x3000, [area]: address };
    for (const [name, value] of Object.entries(addresses)) {
      controller.writeQueueAddress(0, name as 'desc', 0, value);
    }
    controller.writeQueueReady(0, true);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(controller.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
    expect(controller.violations.recent().at(-1)).toMatchObject({
      code: 'QUEUE_ADDRESS_INVALID',
      message: expect.stringMatching(/aligned/),
    });
  });

  it('refuses a split queue size that is not a power of two even if set before FEATURES_OK', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    await controller.writeStatus(ACK);
    await controller.writeStatus(ACK | DRIVER);
    expect(controller.writeQueueSize(0, 48)).toBe(true); // layout not known yet
    controller.writeDriverFeatures(VERSION_1);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK);
    controller.writeQueueAddress(0, 'desc', 0, 0x1000);
    controller.writeQueueAddress(0, 'driver', 0, 0x2000);
    controller.writeQueueAddress(0, 'device', 0, 0x3000);
    controller.writeQueueReady(0, true);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(controller.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
    expect(controller.violations.count('QUEUE_SIZE_INVALID')).toBe(1);
    expect(device.log).toEqual([]);
  });

  it('holds notifications while an async activation runs, then delivers them', async () => {
    const device = new EchoDevice();
    let finish!: () => void;
    device.activateDelay = new Promise((resolve) => {
      finish = resolve;
    });
    const driver = await TestDriver.create(device, { deferDriverOk: true });
    const started = driver.start();
    expect(driver.controller.activation.state).toBe('activating');
    const { token } = driver.post(0, { readable: [Uint8Array.of(9)], writable: [1] });
    driver.kick(0, true);
    expect(device.log).toEqual(['activate split,split']);
    finish();
    await started;
    expect(device.log).toEqual(['activate split,split', 'notify 0']);
    expect((await driver.wait(0, token)).written).toEqual(Uint8Array.of(9));
  });

  it('counts notifications before DRIVER_OK and for queues that were not enabled', async () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    controller.notify(0);
    expect(controller.violations.count('NOTIFY_BEFORE_DRIVER_OK')).toBe(1);
    await negotiate(controller, VERSION_1);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    controller.notify(1);
    controller.notify(2);
    expect(controller.violations.count('QUEUE_INDEX_INVALID')).toBe(2);
    expect(device.log).toEqual(['activate -,-']);
  });

  it('turns a device exception during notify into DEVICE_NEEDS_RESET, not a crash', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    device.queueNotify = () => {
      throw new Error('backend exploded');
    };
    expect(() => driver.controller.notify(0)).not.toThrow();
    expect(driver.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
    expect(driver.controller.activation).toEqual({
      state: 'failed',
      reason: expect.stringContaining('backend exploded'),
    });
    expect(driver.interrupt.config).toBe(1);
  });
});

describe('guest protocol violations in rings', () => {
  it('set DEVICE_NEEDS_RESET with a config interrupt (§2.1.2)', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    const needsReset = vi.fn();
    driver.controller.events.on('needs-reset', needsReset);
    const queue = driver.queues[0]!;
    // Publish a head index beyond the queue size straight into the split avail ring.
    driver.memory.writeU16(queue.driverAddr + 4, 200);
    driver.memory.writeU16(queue.driverAddr + 2, 1);
    driver.controller.notify(0);
    expect(driver.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
    expect(driver.controller.violations.count('HEAD_OUT_OF_RANGE')).toBe(1);
    expect(needsReset).toHaveBeenCalledTimes(1);
    expect(driver.interrupt.config).toBe(1);
    // A reset and re-initialization make the device usable again.
    await driver.reset();
    await driver.initialize();
    const reply = await driver.send(0, { readable: [Uint8Array.of(4, 5)], writable: [2] });
    expect([...reply.written]).toEqual([5, 4]);
  });
});

describe('reset', () => {
  it('detaches queues, clears features and queue registers, and returns to status 0', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    const c = driver.controller;
    const activation = c.activation;
    if (activation.state !== 'active') throw new Error('device not active');
    const queue = activation.queues[0]!;
    await driver.reset();
    expect(c.status).toBe(0);
    expect(c.negotiatedFeatures).toBe(0n);
    expect(c.queue(0)).toMatchObject({ size: 64, ready: false, desc: [0, 0] });
    expect(c.activation.state).toBe('inactive');
    expect(device.log.at(-1)).toBe('reset');
    // A completion that arrives after reset must not reach the ring.
    const usedIdxBefore = driver.memory.readU16(driver.queues[0]!.deviceAddr + 2);
    queue.addUsed({ id: 0, writableLength: 0 } as never, 0);
    queue.publishUsed();
    expect(driver.memory.readU16(driver.queues[0]!.deviceAddr + 2)).toBe(usedIdxBefore);
  });

  it('keeps status non-zero until an async device reset settles (§4.1.4.3.2)', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    let settle!: () => void;
    device.resetDelay = new Promise((resolve) => {
      settle = resolve;
    });
    const resetting = driver.controller.writeStatus(0);
    expect(driver.status).not.toBe(0);
    expect(driver.controller.activation.state).toBe('resetting');
    await driver.controller.writeStatus(ACK);
    expect(driver.controller.violations.count('STATUS_ORDER')).toBe(1);
    settle();
    await resetting;
    expect(driver.status).toBe(0);
  });

  it('settled() waits for a status write the caller did not keep', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    let settle!: () => void;
    device.resetDelay = new Promise((resolve) => {
      settle = resolve;
    });
    // A transport fires the write and forgets it; only settled() knows it is still running.
    void driver.controller.writeStatus(0);
    let done = false;
    const waiting = driver.controller.settled().then(() => {
      done = true;
    });
    await new Promise<void>((resolve) => setTimeout(resolve, 5));
    expect(done).toBe(false);
    settle();
    await waiting;
    expect(driver.status).toBe(0);
  });
});

describe('config space', () => {
  it('bumps the generation and interrupts only after DRIVER_OK', async () => {
    const device = new EchoDevice();
    const { controller, interrupt } = controllerFor(device);
    device.config.setU32(0, 1);
    expect(controller.configGeneration).toBe(1);
    expect(interrupt.config).toBe(0);
    await negotiate(controller, VERSION_1);
    await controller.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    device.config.setU32(0, 2);
    expect(controller.configGeneration).toBe(2);
    expect(interrupt.config).toBe(1);
  });

  it('counts out-of-range and read-only accesses', () => {
    const device = new EchoDevice();
    const { controller } = controllerFor(device);
    const out = Uint8Array.of(1, 2, 3, 4);
    controller.readConfig(6, out);
    expect([...out]).toEqual([0, 0, 0, 0]);
    controller.writeConfig(0, Uint8Array.of(1));
    controller.writeConfig(4, Uint8Array.of(7, 7, 7, 7));
    controller.writeConfig(8, Uint8Array.of(1));
    expect(controller.violations.toJSON()).toEqual({
      CONFIG_ACCESS_OUT_OF_RANGE: 2,
      CONFIG_WRITE_READ_ONLY: 1,
    });
    expect(device.config.getU32(4)).toBe(0x07070707);
  });
});

describe('device shape', () => {
  it('refuses queue maxima that are not powers of two', () => {
    const device = new EchoDevice();
    (device as { queues: { maxSize: number }[] }).queues = [{ maxSize: 100 }];
    expect(() => controllerFor(device)).toThrow(/queue 0 with invalid maximum size 100/);
  });
});

describe('what a device is given', () => {
  it('has no way to touch status bits: activate gets memory, queues, features and two callbacks', async () => {
    const device = new EchoDevice();
    await TestDriver.create(device);
    expect(Object.keys(device.context!).sort()).toEqual([
      'features',
      'memory',
      'queues',
      'reportViolation',
      'signalUsed',
    ]);
  });
});

describe('interrupts during activation', () => {
  it('lets a device signal used buffers from inside activate()', async () => {
    const device = new EchoDevice();
    device.activate = (context) => {
      device.context = context;
      context.signalUsed(0);
    };
    const driver = await TestDriver.create(device);
    expect(driver.interrupt.usedCount(0)).toBe(1);
  });
});

describe('host listeners', () => {
  it('a throwing violation listener does not escape into the transport or the device loop', async () => {
    const device = new EchoDevice();
    const driver = await TestDriver.create(device);
    driver.controller.events.on('violation', () => {
      throw new Error('listener bug');
    });
    const queue = driver.queues[0]!;
    driver.memory.writeU16(queue.driverAddr + 4, 200);
    driver.memory.writeU16(queue.driverAddr + 2, 1);
    expect(() => driver.controller.notify(0)).not.toThrow();
    expect(driver.controller.violations.count('HEAD_OUT_OF_RANGE')).toBe(1);
    expect(driver.status & DEVICE_NEEDS_RESET).toBe(DEVICE_NEEDS_RESET);
  });
});
