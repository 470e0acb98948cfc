/**
 * virtio-net over every transport × ring layout, through the register-level drivers: Linux's init
 * with virtio_net's feature table, the config space as Linux reads it (mac byte by byte, status,
 * max_virtqueue_pairs, mtu), a frame each way, control commands on the control queue (placed
 * after the last pair once MQ is negotiated), a config-change interrupt for an announcement, and
 * reset with re-initialization.
 *
 * The device comes from `@virtkit/device-net` through core's registry with its in-process
 * backend, loaded at run time: until this package lists it as a dev dependency the suite is
 * skipped (and says so).
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
import { type Completion, DriverSession, linuxInit } from '../linux-init.js';
import { mmioCase } from '../mmio-driver.js';
import { pciIntxCase, pciMsixCase } from '../pci-driver.js';

const specifier = '@virtkit/device-net';
const net = (await import(/* @vite-ignore */ specifier).catch(() => undefined)) as
  | { netPlugin: DevicePlugin }
  | undefined;

/** The parts of NetDevice and its memory backend the suite uses (duck-typed: no static import). */
interface Wire {
  inject(frame: Uint8Array): unknown;
  receive(channel: number): Uint8Array | null;
}
interface NetDeviceLike extends VirtioDevice {
  readonly backend: { readonly peer: Wire };
  announce(): boolean;
}

const cases: TransportCase[] = [mmioCase, pciMsixCase, pciIntxCase];
const layouts: RingLayout[] = ['split', 'packed'];
const LIVE =
  DeviceStatus.ACKNOWLEDGE |
  DeviceStatus.DRIVER |
  DeviceStatus.FEATURES_OK |
  DeviceStatus.DRIVER_OK;

/** Linux virtio_net's feature table (drivers/net/virtio_net.c `features[]`), bits 0-23. */
const NET_FEATURES = [
  0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
].reduce((mask, bit) => mask | (1n << BigInt(bit)), 0n);
const MRG_RXBUF = 1n << 15n;
const CTRL_VQ = 1n << 17n;
const MQ = 1n << 22n;
const MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

function frame(dst: number[], length: number): Uint8Array {
  const bytes = Uint8Array.from({ length }, (_, i) => (i * 11) & 0xff);
  bytes.set(dst, 0);
  bytes.set(PEER, 6);
  bytes[12] = 0x88;
  bytes[13] = 0xb5;
  return bytes;
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

describe.skipIf(!net)(
  `virtio-net over transports${net ? '' : ` (skipped: ${specifier} is not a dev dependency of transport-conformance)`}`,
  () => {
    describe.each(cases)('$name transport', (transportCase) => {
      describe.each(layouts)('%s ring', (layout) => {
        let guest: TestMemory;
        let device: NetDeviceLike;
        let wire: Wire;
        let fixture: TransportFixture;
        let driver: TransportDriver;

        beforeEach(async () => {
          const registry = new DeviceRegistry();
          registry.register(net!.netPlugin);
          device = (await registry.create('net', {
            backend: 'memory',
            mac: '52:54:00:12:34:56',
            queues: 2,
            mtu: 1500,
          })) as NetDeviceLike;
          wire = device.backend.peer;
          guest = createTestMemory({ size: 8 << 20 });
          fixture = transportCase.create(device, guest);
          driver = fixture.driver;
        });

        async function init(features = NET_FEATURES): Promise<DriverSession> {
          driver.probe();
          const mq = (features & MQ) !== 0n;
          const initialized = await linuxInit(driver, {
            layout,
            queues: mq ? 5 : 3,
            driverFeatures: features,
            guest,
          });
          return new DriverSession(driver, guest, initialized);
        }

        /** Posts a transmit buffer (device-readable only, as Linux's xmit_skb does). */
        function transmit(session: DriverSession, queue: number, bytes: Uint8Array): void {
          const addr = guest.allocate(bytes.length, 8);
          guest.memory.write(addr, bytes);
          expect(session.device.queues[queue]!.add([{ addr, len: bytes.length }], [], 0)).toBe(
            true,
          );
          session.kick(queue);
        }

        /** Waits for the interrupt and the used buffers of `queue`. */
        async function completions(session: DriverSession, queue: number): Promise<Completion[]> {
          for (let i = 0; i < 200; i++) {
            session.handleInterrupt();
            const done = session.collect(queue);
            if (done.length > 0) return done;
            await tick();
          }
          throw new Error(`nothing came back on queue ${queue}`);
        }

        async function command(session: DriverSession, ctrl: number, bytes: number[]) {
          session.post(ctrl, Uint8Array.from(bytes), 1);
          session.kick(ctrl);
          const [done] = await completions(session, ctrl);
          expect(done!.len).toBe(1);
          return done!.bytes[0];
        }

        it('initializes with virtio_net features and shows its config space', async () => {
          const session = await init();
          expect(driver.probe().deviceType).toBe(1);
          expect(driver.getStatus()).toBe(LIVE);
          expect(session.device.features & (MRG_RXBUF | CTRL_VQ | MQ)).toBe(
            MRG_RXBUF | CTRL_VQ | MQ,
          );
          expect([0, 1, 2, 3, 4, 5].map((i) => driver.readConfig(i, 1))).toEqual(MAC);
          expect(driver.readConfig(6, 2)).toBe(1); // VIRTIO_NET_S_LINK_UP
          expect(driver.readConfig(8, 2)).toBe(2); // max_virtqueue_pairs
          expect(driver.readConfig(10, 2)).toBe(1500); // mtu
          expect(fixture.controller.violations.count()).toBe(0);
        });

        it('carries a frame each way with the 12-byte header', async () => {
          const session = await init();
          const out = frame(PEER, 200);
          const header = new Uint8Array(12);
          transmit(session, 1, Uint8Array.from([...header, ...out]));
          const [sent] = await completions(session, 1);
          expect(sent!.len).toBe(0);
          expect(wire.receive(0)).toEqual(out);

          const token = session.post(0, new Uint8Array(0), 1526);
          session.kick(0);
          const back = frame(MAC, 300);
          wire.inject(back);
          const [received] = await completions(session, 0);
          expect(received!.token).toBe(token);
          expect(received!.len).toBe(12 + back.length);
          expect([...received!.bytes.subarray(0, 12)]).toEqual([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0,
          ]);
          expect(received!.bytes.subarray(12)).toEqual(back);
        });

        it('answers control commands on the queue after the last pair, and uses pair 2', async () => {
          const session = await init();
          expect(await command(session, 4, [4, 0, 2, 0])).toBe(0); // VQ_PAIRS_SET 2
          expect(await command(session, 4, [4, 0, 3, 0])).toBe(1); // more than max: ERR
          expect(await command(session, 4, [0, 0, 0])).toBe(0); // promisc off
          expect(await command(session, 4, [9, 9])).toBe(1);
          const out = frame(PEER, 100);
          transmit(session, 3, Uint8Array.from([...new Uint8Array(12), ...out]));
          await completions(session, 3);
          expect(wire.receive(0)).toEqual(out);
          expect(driver.getStatus()).toBe(LIVE);
        });

        it('puts the control queue at 2 without MQ, and raises a config interrupt to announce', async () => {
          const session = await init(NET_FEATURES & ~MQ);
          expect(device.announce()).toBe(true);
          const causes = session.handleInterrupt();
          expect(causes?.config).toBe(true);
          expect(driver.readConfig(6, 2)).toBe(3); // LINK_UP | ANNOUNCE
          expect(await command(session, 2, [3, 0])).toBe(0); // ANNOUNCE_ACK
          expect(driver.readConfig(6, 2)).toBe(1);
        });

        it('comes back after a reset', async () => {
          await init();
          await driver.reset();
          expect(driver.getStatus()).toBe(0);
          const session = await init();
          session.post(0, new Uint8Array(0), 1526);
          session.kick(0);
          const back = frame(MAC, 64);
          wire.inject(back);
          const [received] = await completions(session, 0);
          expect(received!.bytes.subarray(12)).toEqual(back);
        });
      });
    });
  },
);
