/**
 * Transport conformance: every transport × ring layout runs Linux's init sequence, moves buffers
 * through the echo device on both queues, takes interrupts, reads and writes config space, is
 * reset and re-initialized, and survives hostile register sequences, ending each in the state the
 * spec prescribes. To add a transport, append its {@link TransportCase} to `cases`.
 */

import { DeviceStatus, Feature, featureBit, type RingLayout } from '@virtkit/core';
import { createTestMemory, type TestMemory } from '@virtkit/core/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import type { TransportCase, TransportDriver, TransportFixture } from './driver.js';
import {
  ECHO_CONFIG_MAGIC,
  ECHO_DEVICE_TYPE,
  ECHO_MAX_PAYLOAD,
  ECHO_QUEUE_MAX,
  EchoConfig,
  EchoDevice,
  EchoFeature,
} from './echo-device.js';
import {
  DriverSession,
  type InitializedDevice,
  type LinuxInitOptions,
  linuxInit,
} from './linux-init.js';
import { mmioCase } from './mmio-driver.js';
import { pciIntxCase, pciMsixCase } from './pci-driver.js';

/** Transports under test. */
const cases: TransportCase[] = [mmioCase, pciMsixCase, pciIntxCase];
const layouts: RingLayout[] = ['split', 'packed'];

const { ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, FAILED } = DeviceStatus;
const LIVE = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
const VERSION_1 = featureBit(Feature.VERSION_1);
const REVERSE = featureBit(EchoFeature.REVERSE);

function text(value: string): Uint8Array {
  return new TextEncoder().encode(value);
}

function reversed(bytes: Uint8Array): Uint8Array {
  return bytes.slice().reverse();
}

/** Linux `virtio_cread64` on a 32-bit config bus: two reads, retried while the generation moves. */
function readConfig64(driver: TransportDriver, offset: number): bigint {
  for (;;) {
    const before = driver.configGeneration();
    const low = driver.readConfig(offset, 4);
    const high = driver.readConfig(offset + 4, 4);
    if (driver.configGeneration() === before) return (BigInt(high) << 32n) | BigInt(low);
  }
}

describe.each(cases)('$name transport', (transportCase) => {
  describe.each(layouts)('%s ring', (layout) => {
    let guest: TestMemory;
    let device: EchoDevice;
    let fixture: TransportFixture;
    let driver: TransportDriver;

    beforeEach(() => {
      guest = createTestMemory({ size: 8 << 20 });
      device = new EchoDevice();
      fixture = transportCase.create(device, guest);
      driver = fixture.driver;
    });

    async function init(extra: Partial<LinuxInitOptions> = {}) {
      const initialized = await linuxInit(driver, {
        layout,
        queues: 2,
        driverFeatures: REVERSE,
        guest,
        ...extra,
      });
      return new DriverSession(driver, guest, initialized);
    }

    /** Sends one buffer on `queue` and returns what came back after the interrupt. */
    function roundTrip(session: DriverSession, queue: number, payload: Uint8Array, room = 64) {
      const token = session.post(queue, payload, room);
      session.kick(queue);
      const causes = session.handleInterrupt();
      expect(causes?.used).toBe(true);
      const [done, ...rest] = session.collect(queue);
      expect(rest).toEqual([]);
      expect(done?.token).toBe(token);
      return done!;
    }

    /** Manual init up to DRIVER (reset, ACKNOWLEDGE, DRIVER). */
    async function upToDriver(): Promise<void> {
      await driver.reset();
      driver.setStatus(ACKNOWLEDGE);
      driver.setStatus(ACKNOWLEDGE | DRIVER);
    }

    /** Manual init up to FEATURES_OK with the layout's ring features. */
    async function upToFeaturesOk(): Promise<void> {
      await upToDriver();
      const packed = layout === 'packed' ? featureBit(Feature.RING_PACKED) : 0n;
      driver.writeDriverFeatures(VERSION_1 | packed);
      driver.setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK);
      expect(driver.getStatus()).toBe(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    describe('initialization', () => {
      it('probes the echo device', () => {
        const identity = driver.probe();
        expect(identity.deviceType).toBe(ECHO_DEVICE_TYPE);
        expect(Number.isInteger(identity.vendorId)).toBe(true);
      });

      it("runs Linux's init sequence to DRIVER_OK with the negotiated features", async () => {
        driver.probe();
        const session = await init();
        expect(driver.getStatus()).toBe(LIVE);
        expect(device.activations).toBe(1);
        const packed = featureBit(Feature.RING_PACKED);
        const expected =
          REVERSE |
          VERSION_1 |
          featureBit(Feature.RING_EVENT_IDX) |
          featureBit(Feature.RING_INDIRECT_DESC) |
          (layout === 'packed' ? packed : 0n);
        expect(session.device.features).toBe(expected);
        expect(device.negotiated).toBe(expected);
        expect(fixture.controller.ringLayout).toBe(layout);
        expect(driver.queueReady(0)).toBe(true);
        expect(driver.queueReady(1)).toBe(true);
        expect(fixture.controller.activation.state).toBe('active');
      });

      it('reports each queue maximum and 0 for queues the device lacks', () => {
        expect(driver.queueMaxSize(0)).toBe(ECHO_QUEUE_MAX[0]);
        expect(driver.queueMaxSize(1)).toBe(ECHO_QUEUE_MAX[1]);
        expect(driver.queueMaxSize(2)).toBe(0);
        expect(driver.queueMaxSize(0xffff)).toBe(0);
        const count = driver.queueCount();
        if (count !== undefined) expect(count).toBe(2);
      });

      it('pages device features and reads pages beyond 1 as 0', () => {
        expect(driver.deviceFeaturesPage(0)).toBe(Number(BigInt.asUintN(32, device.features)));
        expect(BigInt(driver.deviceFeaturesPage(1)) << 32n).toBe(
          (device.features | VERSION_1) & ~0xffff_ffffn,
        );
        expect(driver.deviceFeaturesPage(2)).toBe(0);
        expect(driver.deviceFeaturesPage(3)).toBe(0);
      });
    });

    describe('buffers', () => {
      it('echoes buffers on both queues, reversed as negotiated', async () => {
        const session = await init();
        for (const queue of [0, 1]) {
          const payload = text(`hello queue ${queue}`);
          const done = roundTrip(session, queue, payload);
          expect(done.len).toBe(payload.length);
          expect(done.bytes).toEqual(reversed(payload));
        }
        expect(device.served).toEqual([1, 1]);
      });

      it('copies without reversing when REVERSE is not negotiated', async () => {
        const session = await init({ driverFeatures: 0n });
        expect(device.negotiated! & REVERSE).toBe(0n);
        const payload = text('as is');
        expect(roundTrip(session, 1, payload).bytes).toEqual(payload);
      });

      it('reports the bytes that fit, and handles a buffer with nothing to read', async () => {
        const session = await init();
        const payload = text('0123456789');
        const done = roundTrip(session, 0, payload, 4);
        expect(done.len).toBe(4);
        expect(done.bytes).toEqual(text('9876'));
        expect(roundTrip(session, 0, new Uint8Array(0), 16).len).toBe(0);
      });

      it('keeps going across many ring wrap-arounds, in batches', async () => {
        const session = await init({ queueSizes: [256, 16] });
        let sent = 0;
        for (let batch = 0; batch < 20; batch++) {
          const tokens = new Map<number, Uint8Array>();
          for (let i = 0; i < 12; i++) {
            const payload = text(`batch ${batch} buffer ${i} ${'x'.repeat(i)}`);
            tokens.set(session.post(1, payload, 128), payload);
            sent++;
          }
          session.kick(1);
          expect(session.handleInterrupt()?.used).toBe(true);
          const done = session.collect(1);
          expect(done.map((d) => d.token)).toEqual([...tokens.keys()]);
          for (const completion of done) {
            expect(completion.bytes).toEqual(reversed(tokens.get(completion.token)!));
          }
        }
        expect(device.served[1]).toBe(sent);
        expect(fixture.controller.violations.count()).toBe(0);
        expect(fixture.transportViolations()).toBe(0);
      });

      it('serves a maximum-size payload', async () => {
        const session = await init();
        const payload = new Uint8Array(ECHO_MAX_PAYLOAD).map((_, i) => i & 0xff);
        const done = roundTrip(session, 0, payload, ECHO_MAX_PAYLOAD);
        expect(done.bytes).toEqual(reversed(payload));
      });
    });

    describe('interrupts', () => {
      it('raises an interrupt for used buffers and drops it once handled', async () => {
        const session = await init();
        expect(driver.interruptPending()).toBe(false);
        session.post(0, text('ping'), 8);
        session.kick(0);
        expect(driver.interruptPending()).toBe(true);
        expect(driver.handleInterrupt()).toEqual({ used: true, config: false });
        expect(driver.interruptPending()).toBe(false);
        expect(session.collect(0)).toHaveLength(1);
        // Nothing new happened: nothing is pending, the handler finds no cause.
        expect(driver.interruptPending()).toBe(false);
      });

      it('raises nothing before the driver is live', async () => {
        await upToFeaturesOk();
        device.changeConfig(5n);
        expect(driver.interruptPending()).toBe(false);
      });
    });

    describe('configuration space', () => {
      it('reads fields of every width', async () => {
        await init();
        expect(driver.readConfig(EchoConfig.MAGIC, 1)).toBe(ECHO_CONFIG_MAGIC);
        expect(driver.readConfig(EchoConfig.MAX_PAYLOAD, 2)).toBe(ECHO_MAX_PAYLOAD);
        expect(driver.readConfig(EchoConfig.SCRATCH, 4)).toBe(0);
        expect(readConfig64(driver, EchoConfig.COUNTER)).toBe(0n);
      });

      it('writes the writable field and ignores writes to read-only ones', async () => {
        await init();
        driver.writeConfig(EchoConfig.SCRATCH, 4, 0xdead_beef);
        expect(driver.readConfig(EchoConfig.SCRATCH, 4)).toBe(0xdead_beef);
        driver.writeConfig(EchoConfig.SCRATCH, 2, 0x1234);
        expect(driver.readConfig(EchoConfig.SCRATCH, 4)).toBe(0xdead_1234);
        driver.writeConfig(EchoConfig.MAGIC, 1, 0);
        driver.writeConfig(EchoConfig.COUNTER, 4, 7);
        expect(driver.readConfig(EchoConfig.MAGIC, 1)).toBe(ECHO_CONFIG_MAGIC);
        expect(readConfig64(driver, EchoConfig.COUNTER)).toBe(0n);
        expect(device.scratchWrites).toBe(2);
        expect(fixture.controller.violations.count('CONFIG_WRITE_READ_ONLY')).toBe(2);
      });

      it('signals a device change with a config interrupt and a new generation', async () => {
        const session = await init();
        const before = driver.configGeneration();
        device.changeConfig(0x1_0000_0002n);
        expect(driver.interruptPending()).toBe(true);
        expect(driver.handleInterrupt()).toEqual({ used: false, config: true });
        expect(driver.interruptPending()).toBe(false);
        expect(driver.configGeneration()).not.toBe(before);
        expect(readConfig64(driver, EchoConfig.COUNTER)).toBe(0x1_0000_0002n);
        // Queues are unaffected.
        expect(roundTrip(session, 0, text('still here')).len).toBe(10);
      });

      it('reads 0 outside the config space without harm', async () => {
        await init();
        expect(driver.readConfig(EchoConfig.SIZE, 4)).toBe(0);
        driver.writeConfig(EchoConfig.SIZE + 4, 4, 1);
        expect(driver.getStatus()).toBe(LIVE);
      });
    });

    describe('reset', () => {
      it('resets status, queues and interrupts, and re-initializes', async () => {
        const session = await init();
        roundTrip(session, 0, text('before reset'));
        device.changeConfig(3n); // leave an interrupt pending across the reset
        expect(driver.interruptPending()).toBe(true);
        await driver.reset();
        expect(driver.getStatus()).toBe(0);
        expect(device.resets).toBe(1);
        expect(driver.interruptPending()).toBe(false);
        for (const index of [0, 1]) {
          expect(driver.queueReady(index)).toBe(false);
          expect(fixture.controller.queue(index)).toMatchObject({
            size: ECHO_QUEUE_MAX[index],
            ready: false,
            desc: [0, 0],
            driver: [0, 0],
            device: [0, 0],
          });
        }
        expect(fixture.controller.driverFeatures).toBe(0n);
        const again = await init();
        expect(driver.getStatus()).toBe(LIVE);
        expect(device.activations).toBe(2);
        expect(roundTrip(again, 1, text('after reset')).bytes).toEqual(
          reversed(text('after reset')),
        );
      });
    });

    describe('hostile sequences', () => {
      it('ignores queue setup after DRIVER_OK', async () => {
        const session = await init();
        const before = structuredClone(fixture.controller.queue(0));
        driver.setQueueSize(0, 16);
        driver.setQueueAddresses(0, { desc: 0x1000, driver: 0x2000, device: 0x3000 });
        driver.setQueueReady(0, false);
        expect(fixture.controller.queue(0)).toEqual(before);
        expect(driver.queueReady(0)).toBe(true);
        expect(driver.getStatus()).toBe(LIVE);
        expect(fixture.controller.violations.count('QUEUE_CONFIG_AFTER_DRIVER_OK')).toBeGreaterThan(
          0,
        );
        expect(roundTrip(session, 0, text('unharmed')).len).toBe(8);
      });

      it('refuses a queue size above the maximum, or not a power of two on a split ring', async () => {
        await upToFeaturesOk();
        driver.setQueueSize(1, ECHO_QUEUE_MAX[1] * 2);
        expect(fixture.controller.queue(1)!.size).toBe(ECHO_QUEUE_MAX[1]);
        driver.setQueueSize(1, 0);
        expect(fixture.controller.queue(1)!.size).toBe(ECHO_QUEUE_MAX[1]);
        driver.setQueueSize(1, 48);
        // §2.7: split queue sizes are powers of two; §2.8: packed ones need not be.
        expect(fixture.controller.queue(1)!.size).toBe(layout === 'split' ? ECHO_QUEUE_MAX[1] : 48);
        expect(driver.getStatus()).toBe(ACKNOWLEDGE | DRIVER | FEATURES_OK);
      });

      it('ignores queue registers of a queue the device does not have', async () => {
        const session = await init({ skipDriverOk: true });
        const queues = [0, 1].map((index) => structuredClone(fixture.controller.queue(index)));
        for (const missing of [2, 5, 0xffff]) {
          driver.setQueueSize(missing, 8);
          driver.setQueueAddresses(missing, { desc: 0x1000, driver: 0x2000, device: 0x3000 });
          driver.setQueueReady(missing, true);
          expect(driver.queueReady(missing)).toBe(false);
          expect(driver.queueMaxSize(missing)).toBe(0);
        }
        // Nothing leaked into the queues that exist (a selector clamped or wrapped would).
        expect([0, 1].map((index) => fixture.controller.queue(index))).toEqual(queues);
        // Each of the three queues: size, six address halves, enable.
        expect(fixture.controller.violations.count('QUEUE_INDEX_INVALID')).toBe(3 * 8);
        driver.setStatus(LIVE);
        driver.notify(7);
        driver.notify(0xffff);
        expect(device.served).toEqual([0, 0]);
        expect(driver.getStatus()).toBe(LIVE);
        expect(roundTrip(session, 0, text('fine')).len).toBe(4);
        expect(roundTrip(session, 1, text('also fine')).len).toBe(9);
      });

      it('ignores queue setup while the queue is enabled, before DRIVER_OK too', async () => {
        await init({ skipDriverOk: true });
        const before = structuredClone(fixture.controller.queue(1));
        expect(before?.ready).toBe(true);
        driver.setQueueSize(1, 8);
        driver.setQueueAddresses(1, { desc: 0x1000, driver: 0x2000, device: 0x3000 });
        expect(fixture.controller.queue(1)).toEqual(before);
        expect(fixture.controller.violations.count('QUEUE_CONFIG_AFTER_DRIVER_OK')).toBe(7);
        expect(driver.getStatus()).toBe(ACKNOWLEDGE | DRIVER | FEATURES_OK);
      });

      it("keeps its state when the guest programs its window over another function's", async (context) => {
        if (!fixture.overlapWindow) {
          context.skip(`${transportCase.name} windows are fixed`);
          return;
        }
        const session = await init();
        const seen = fixture.overlapWindow();
        // Counted once, as one overlapping pair (BAR_OVERLAP), nothing else.
        expect(seen.violations).toBe(1);
        // The overlapped range goes to the function first in bus order, every time: the
        // driver's read and its "reset" reached the other function, not this device.
        expect(seen.statusThroughOverlap).toBe(seen.otherFunctionStatus);
        expect(seen.otherFunctionAccesses).toBe(3);
        expect(device.resets).toBe(0);
        expect(driver.getStatus()).toBe(LIVE);
        expect(roundTrip(session, 0, text('moved back')).len).toBe(10);
        expect(fixture.transportViolations()).toBe(1);
      });

      it('ignores feature pages beyond 1', async () => {
        await upToDriver();
        driver.writeDriverFeaturesPage(2, 0xffff_ffff);
        driver.writeDriverFeaturesPage(7, 1);
        expect(fixture.controller.driverFeatures).toBe(0n);
        driver.writeDriverFeatures(VERSION_1);
        driver.writeDriverFeaturesPage(2, 0xffff_ffff);
        expect(fixture.controller.driverFeatures).toBe(VERSION_1);
      });

      it('leaves FEATURES_OK clear when VERSION_1 is missing, and recovers after a reset', async () => {
        await upToDriver();
        driver.writeDriverFeatures(driver.deviceFeatures() & ~VERSION_1);
        driver.setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        expect(driver.getStatus() & FEATURES_OK).toBe(0);
        driver.setStatus(ACKNOWLEDGE | DRIVER | FAILED);
        expect(driver.getStatus() & FAILED).toBe(FAILED);
        // DRIVER_OK without FEATURES_OK does not activate the device either.
        driver.setStatus(ACKNOWLEDGE | DRIVER | FAILED | DRIVER_OK);
        expect(driver.getStatus() & DRIVER_OK).toBe(0);
        expect(device.activations).toBe(0);
        const session = await init();
        expect(roundTrip(session, 0, text('ok')).len).toBe(2);
      });

      it('ignores notifications before DRIVER_OK; buffers wait for a later kick', async () => {
        const session = await init({ skipDriverOk: true });
        session.post(0, text('early'), 16);
        session.kick(0);
        driver.notify(0);
        expect(device.served).toEqual([0, 0]);
        expect(driver.interruptPending()).toBe(false);
        expect(fixture.controller.violations.count('NOTIFY_BEFORE_DRIVER_OK')).toBeGreaterThan(0);
        driver.setStatus(LIVE);
        driver.notify(0);
        expect(session.handleInterrupt()?.used).toBe(true);
        expect(session.collect(0)[0]?.bytes).toEqual(reversed(text('early')));
      });

      it('counts misaligned, oversized and odd-width register accesses and changes nothing', async () => {
        const session = await init();
        const before = fixture.transportViolations();
        const state = fixture.transportState();
        const queues = [0, 1].map((index) => structuredClone(fixture.controller.queue(index)));
        const expected = fixture.hostileAccesses();
        expect(expected).toBeGreaterThan(10);
        expect(fixture.transportViolations() - before).toBe(expected);
        expect(fixture.transportState()).toEqual(state);
        expect([0, 1].map((index) => fixture.controller.queue(index))).toEqual(queues);
        expect(fixture.controller.violations.count()).toBe(0);
        expect(device.scratchWrites).toBe(0);
        expect(driver.readConfig(EchoConfig.SCRATCH, 4)).toBe(0);
        expect(driver.getStatus()).toBe(LIVE);
        expect(device.resets).toBe(0);
        expect(driver.queueReady(0)).toBe(true);
        expect(driver.queueReady(1)).toBe(true);
        expect(driver.interruptPending()).toBe(false);
        expect(roundTrip(session, 1, text('survived')).bytes).toEqual(reversed(text('survived')));
      });

      it('makes the same accesses before initialization without harm', async () => {
        const expected = fixture.hostileAccesses();
        expect(fixture.transportViolations()).toBe(expected);
        expect(driver.getStatus()).toBe(0);
        expect(device.scratchWrites).toBe(0);
        const session = await init();
        expect(roundTrip(session, 0, text('then init')).len).toBe(9);
      });
    });

    it('initializes several times in a row (re-probe after reset)', async () => {
      let initialized: InitializedDevice | undefined;
      for (let round = 0; round < 3; round++) {
        const session = await init();
        initialized = session.device;
        expect(roundTrip(session, round % 2, text(`round ${round}`)).len).toBe(7);
      }
      expect(device.activations).toBe(3);
      expect(device.resets).toBe(2);
      expect(initialized?.queues).toHaveLength(2);
    });
  });
});
