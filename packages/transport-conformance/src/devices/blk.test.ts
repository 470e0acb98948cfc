/**
 * virtio-blk over every transport × ring layout, through the register-level drivers: Linux's init
 * with the block features, config space reads (64-bit capacity in two halves), reads and writes
 * on two request queues, GET_ID, FLUSH, a refused request, the writeback toggle, and reset with
 * re-initialization.
 *
 * The device comes from `@virtkit/device-blk` through core's registry, loaded at run time: until
 * this package lists it as a dev dependency the suite is skipped (and says so).
 */

import {
  type DevicePlugin,
  DeviceRegistry,
  DeviceStatus,
  type RingLayout,
  type VirtioDevice,
} from '@virtkit/core';
import { createTestMemory, type TestMemory } from '@virtkit/core/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import type { TransportCase, TransportDriver, TransportFixture } from '../driver.js';
import { DriverSession, linuxInit } from '../linux-init.js';
import { mmioCase } from '../mmio-driver.js';
import { pciIntxCase, pciMsixCase } from '../pci-driver.js';

const specifier = '@virtkit/device-blk';
const blk = (await import(/* @vite-ignore */ specifier).catch(() => undefined)) as
  | { blkPlugin: DevicePlugin }
  | undefined;

const cases: TransportCase[] = [mmioCase, pciMsixCase, pciIntxCase];
const layouts: RingLayout[] = ['split', 'packed'];
const LIVE =
  DeviceStatus.ACKNOWLEDGE |
  DeviceStatus.DRIVER |
  DeviceStatus.FEATURES_OK |
  DeviceStatus.DRIVER_OK;

/** virtio-blk feature bits (§5.2.3) the "driver" knows, as Linux's virtblk feature table. */
const BLK_FEATURES = [1, 2, 4, 5, 6, 9, 10, 11, 12, 13, 14].reduce(
  (mask, bit) => mask | (1n << BigInt(bit)),
  0n,
);
const MQ = 1n << 12n;
const IN = 0;
const OUT = 1;
const FLUSH = 4;
const GET_ID = 8;
const CAPACITY = 1 << 20;

function header(type: number, sector = 0): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setBigUint64(8, BigInt(sector), true);
  return bytes;
}

function withData(head: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  out.set(data, head.length);
  return out;
}

describe.skipIf(!blk)(
  `virtio-blk over transports${blk ? '' : ` (skipped: ${specifier} is not a dev dependency of transport-conformance)`}`,
  () => {
    describe.each(cases)('$name transport', (transportCase) => {
      describe.each(layouts)('%s ring', (layout) => {
        let guest: TestMemory;
        let device: VirtioDevice;
        let fixture: TransportFixture;
        let driver: TransportDriver;

        beforeEach(async () => {
          const registry = new DeviceRegistry();
          registry.register(blk!.blkPlugin);
          device = await registry.create('blk', {
            backend: 'memory',
            size: String(CAPACITY),
            serial: 'conformance-disk',
            queues: 2,
            // Interrupt timing is the device's own (device-blk tests its moderation); here each
            // completion must interrupt at once, so the transport's interrupt path is checked.
            moderation: false,
          });
          guest = createTestMemory({ size: 8 << 20 });
          fixture = transportCase.create(device, guest);
          driver = fixture.driver;
        });

        async function init(): Promise<DriverSession> {
          driver.probe();
          const initialized = await linuxInit(driver, {
            layout,
            queues: 2,
            driverFeatures: BLK_FEATURES,
            guest,
          });
          return new DriverSession(driver, guest, initialized);
        }

        /** Sends one request and returns the writable bytes the device reported. */
        async function request(
          session: DriverSession,
          queue: number,
          readable: Uint8Array,
          room: number,
        ) {
          const token = session.post(queue, readable, room);
          session.kick(queue);
          // The device publishes the completions of one event-loop turn together, after it.
          await new Promise((resolve) => setImmediate(resolve));
          expect(session.handleInterrupt()?.used).toBe(true);
          const [done, ...rest] = session.collect(queue);
          expect(rest).toEqual([]);
          expect(done?.token).toBe(token);
          return done!;
        }

        it('initializes with the block features and shows its config space', async () => {
          const session = await init();
          expect(driver.probe().deviceType).toBe(2);
          expect(driver.getStatus()).toBe(LIVE);
          expect(session.device.features & MQ).toBe(MQ);
          const capacity = driver.readConfig(0, 4) + driver.readConfig(4, 4) * 2 ** 32;
          expect(capacity).toBe(CAPACITY / 512);
          expect(driver.readConfig(20, 4)).toBe(512); // blk_size
          expect(driver.readConfig(34, 2)).toBe(2); // num_queues
          expect(driver.readConfig(32, 1)).toBe(1); // writeback
        });

        it('writes and reads sectors on both request queues, answers GET_ID and FLUSH', async () => {
          const session = await init();
          for (const queue of [0, 1]) {
            const data = new Uint8Array(1024).fill(0x30 + queue);
            const written = await request(
              session,
              queue,
              withData(header(OUT, 8 * queue), data),
              1,
            );
            expect(written.len).toBe(1);
            expect(written.bytes[0]).toBe(0);
            const read = await request(session, queue, header(IN, 8 * queue), 1025);
            expect(read.len).toBe(1025);
            expect(read.bytes.subarray(0, 1024)).toEqual(data);
            expect(read.bytes[1024]).toBe(0);
          }
          const id = await request(session, 0, header(GET_ID), 21);
          expect(new TextDecoder().decode(id.bytes.subarray(0, 16))).toBe('conformance-disk');
          expect([...id.bytes.subarray(16)]).toEqual([0, 0, 0, 0, 0]);
          expect((await request(session, 1, header(FLUSH), 1)).bytes[0]).toBe(0);
        });

        it('refuses a read past the end with IOERR and counts it, staying live', async () => {
          const session = await init();
          const refused = await request(session, 0, header(IN, CAPACITY / 512), 513);
          expect(refused.len).toBe(1);
          expect(fixture.controller.violations.count('BLK_OUT_OF_RANGE')).toBe(1);
          expect(driver.getStatus()).toBe(LIVE);
          // The status byte is the last writable byte, past the reported length.
          const ok = await request(session, 0, header(IN, CAPACITY / 512 - 1), 513);
          expect(ok.len).toBe(513);
          expect(ok.bytes[512]).toBe(0);
        });

        it('toggles writeback through the config space, and comes back after a reset', async () => {
          await init();
          driver.writeConfig(32, 1, 0);
          expect(driver.readConfig(32, 1)).toBe(0);
          await driver.reset();
          expect(driver.getStatus()).toBe(0);
          const session = await init();
          expect(driver.readConfig(32, 1)).toBe(1);
          const read = await request(session, 1, header(IN, 0), 513);
          expect(read.bytes[512]).toBe(0);
        });
      });
    });
  },
);
