/**
 * virtio-console over every transport × ring layout, through the register-level drivers: Linux's
 * init with virtio_console's feature table (SIZE, MULTIPORT), the config space as Linux reads it,
 * the multiport control handshake (DEVICE_READY → DEVICE_ADD → PORT_READY → CONSOLE_PORT, RESIZE,
 * PORT_NAME, PORT_OPEN), data both ways on port 0 and on a named port, a config-change interrupt
 * for a resize without MULTIPORT, an emergency write through the config window, and reset with
 * re-initialization.
 *
 * The device comes from `@virtkit/device-console` (ConsoleDevice over Node streams), loaded at run
 * time like the other device suites: until this package lists it as a dev dependency the suite is
 * skipped (and says so).
 */

import { PassThrough } from 'node:stream';
import { DeviceStatus, type RingLayout, type VirtioDevice } from '@virtkit/core';
import { createTestMemory, type TestMemory } from '@virtkit/core/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import type { TransportCase, TransportDriver, TransportFixture } from '../driver.js';
import { type Completion, DriverSession, linuxInit } from '../linux-init.js';
import { mmioCase } from '../mmio-driver.js';
import { pciIntxCase, pciMsixCase } from '../pci-driver.js';

const specifier = '@virtkit/device-console';
/** The parts of the package the suite uses (duck-typed: no static import). */
interface ConsolePortLike {
  readonly guestOpen: boolean;
  on(event: 'guest-open', listener: () => void): unknown;
}
interface ConsoleDeviceLike extends VirtioDevice {
  port(id: number): ConsolePortLike | undefined;
}
interface ConsolePackage {
  ConsoleDevice: new (options: {
    backend: unknown;
    ports?: { backend: unknown; name?: string }[];
    maxPorts?: number;
  }) => ConsoleDeviceLike;
  StreamBackend: new (options: {
    input?: PassThrough;
    output?: PassThrough;
    size?: { cols: number; rows: number };
  }) => { setSize(size: { cols: number; rows: number }): void };
}
const consolePackage = (await import(/* @vite-ignore */ specifier).catch(() => undefined)) as
  | ConsolePackage
  | undefined;

const cases: TransportCase[] = [mmioCase, pciMsixCase, pciIntxCase];
const layouts: RingLayout[] = ['split', 'packed'];
const LIVE =
  DeviceStatus.ACKNOWLEDGE |
  DeviceStatus.DRIVER |
  DeviceStatus.FEATURES_OK |
  DeviceStatus.DRIVER_OK;

/** Linux virtio_console's feature table (drivers/char/virtio_console.c `features[]`). */
const SIZE = 1n << 0n;
const MULTIPORT = 1n << 1n;
const EMERG_WRITE = 1n << 2n;
const LINUX_FEATURES = SIZE | MULTIPORT;

/** Control events, §5.3.6.2. */
const DEVICE_READY = 0;
const DEVICE_ADD = 1;
const PORT_READY = 3;
const CONSOLE_PORT = 4;
const RESIZE = 5;
const PORT_OPEN = 6;
const PORT_NAME = 7;

function control(id: number, event: number, value: number): Uint8Array {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, id, true);
  view.setUint16(4, event, true);
  view.setUint16(6, value, true);
  return bytes;
}

interface Message {
  readonly id: number;
  readonly event: number;
  readonly value: number;
  readonly payload: Uint8Array;
}

function decode(bytes: Uint8Array): Message {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    id: view.getUint32(0, true),
    event: view.getUint16(4, true),
    value: view.getUint16(6, true),
    payload: bytes.slice(8),
  };
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

describe.skipIf(!consolePackage)(
  `virtio-console over transports${consolePackage ? '' : ` (skipped: ${specifier} is not a dev dependency of transport-conformance)`}`,
  () => {
    const { ConsoleDevice, StreamBackend } = consolePackage!;

    describe.each(cases)('$name transport', (transportCase) => {
      describe.each(layouts)('%s ring', (layout) => {
        let guest: TestMemory;
        let device: ConsoleDeviceLike;
        let fixture: TransportFixture;
        let driver: TransportDriver;
        let terminal: { input: PassThrough; output: PassThrough };
        let agent: { input: PassThrough; output: PassThrough };
        let terminalBackend: InstanceType<ConsolePackage['StreamBackend']>;

        beforeEach(() => {
          terminal = { input: new PassThrough(), output: new PassThrough() };
          agent = { input: new PassThrough(), output: new PassThrough() };
          terminalBackend = new StreamBackend({ ...terminal, size: { cols: 100, rows: 30 } });
          device = new ConsoleDevice({
            backend: terminalBackend,
            ports: [{ backend: new StreamBackend(agent), name: 'org.example.agent' }],
            maxPorts: 2,
          });
          guest = createTestMemory({ size: 8 << 20 });
          fixture = transportCase.create(device, guest);
          driver = fixture.driver;
        });

        async function init(features = LINUX_FEATURES): Promise<DriverSession> {
          driver.probe();
          const initialized = await linuxInit(driver, {
            layout,
            queues: features & MULTIPORT ? 6 : 2,
            driverFeatures: features,
            guest,
          });
          return new DriverSession(driver, guest, initialized);
        }

        /** Device-readable only, as Linux's __send_to_port and __send_control_msg do. */
        function send(session: DriverSession, queue: number, bytes: Uint8Array): void {
          const addr = guest.allocate(bytes.length, 8);
          guest.memory.write(addr, bytes);
          expect(session.device.queues[queue]!.add([{ addr, len: bytes.length }], [], 0)).toBe(
            true,
          );
          session.kick(queue);
        }

        /** Device-writable only, page-sized for control as Linux's fill_queue. */
        function fill(session: DriverSession, queue: number, count: number, size: number): void {
          for (let i = 0; i < count; i++) session.post(queue, new Uint8Array(0), size);
          session.kick(queue);
        }

        async function completions(session: DriverSession, queue: number): Promise<Completion[]> {
          for (let i = 0; i < 200; i++) {
            session.handleInterrupt();
            const done = session.collect(queue);
            if (done.length > 0) return done;
            await tick();
          }
          throw new Error(`nothing came back on queue ${queue}`);
        }

        /** Control messages the device sent, reposting a buffer for each. */
        async function messages(session: DriverSession): Promise<Message[]> {
          const done = await completions(session, 2);
          fill(session, 2, done.length, 4096);
          return done.map((c) => decode(c.bytes));
        }

        /** Linux's probe with MULTIPORT, up to every port being ready. */
        async function handshake(session: DriverSession): Promise<Message[]> {
          fill(session, 2, 8, 4096);
          send(session, 3, control(0xffff_ffff, DEVICE_READY, 1));
          const adds = await messages(session);
          expect(adds.map((m) => [m.id, m.event])).toEqual([
            [0, DEVICE_ADD],
            [1, DEVICE_ADD],
          ]);
          fill(session, 0, 4, 4096);
          fill(session, 4, 4, 4096);
          send(session, 3, control(0, PORT_READY, 1));
          send(session, 3, control(1, PORT_READY, 1));
          const replies: Message[] = [];
          while (replies.length < 5) replies.push(...(await messages(session)));
          return replies;
        }

        it('initializes with virtio_console features and shows its config space', async () => {
          const session = await init();
          expect(driver.probe().deviceType).toBe(3);
          expect(driver.getStatus()).toBe(LIVE);
          expect(session.device.features & (SIZE | MULTIPORT)).toBe(SIZE | MULTIPORT);
          expect(driver.deviceFeatures() & EMERG_WRITE).toBe(EMERG_WRITE);
          expect(driver.readConfig(0, 2)).toBe(100); // cols
          expect(driver.readConfig(2, 2)).toBe(30); // rows
          expect(driver.readConfig(4, 4)).toBe(2); // max_nr_ports
          expect(fixture.controller.violations.count()).toBe(0);
        });

        it('runs the multiport handshake and moves data on port 0 and the named port', async () => {
          const session = await init();
          const replies = await handshake(session);
          expect(replies.map((m) => [m.id, m.event, m.value])).toEqual([
            [0, CONSOLE_PORT, 1],
            [0, RESIZE, 0],
            [0, PORT_OPEN, 1],
            [1, PORT_NAME, 1],
            [1, PORT_OPEN, 1],
          ]);
          const resize = new DataView(replies[1]!.payload.buffer);
          // cols then rows: what Linux 6.1.192 and 6.12.117 read (see ResizeLayout).
          expect([resize.getUint16(0, true), resize.getUint16(2, true)]).toEqual([100, 30]);
          expect(text(replies[3]!.payload)).toBe('org.example.agent');

          // init_port_console: PORT_OPEN 1 for the console; open(2) of /dev/vport0p1 for port 1.
          send(session, 3, control(0, PORT_OPEN, 1));
          send(session, 3, control(1, PORT_OPEN, 1));
          await completions(session, 3);
          expect(device.port(1)!.guestOpen).toBe(true);

          send(session, 1, new TextEncoder().encode('login: '));
          send(session, 5, new TextEncoder().encode('{"ping":1}'));
          await completions(session, 1);
          await completions(session, 5);
          expect(terminal.output.read()?.toString()).toBe('login: ');
          expect(agent.output.read()?.toString()).toBe('{"ping":1}');

          terminal.input.write('root\n');
          agent.input.write('{"pong":1}');
          const [typed] = await completions(session, 0);
          const [answer] = await completions(session, 4);
          expect(text(typed!.bytes)).toBe('root\n');
          expect(text(answer!.bytes)).toBe('{"pong":1}');
          expect(fixture.controller.violations.count()).toBe(0);
        });

        it('raises a config interrupt for a resize without MULTIPORT', async () => {
          const session = await init(SIZE);
          session.handleInterrupt(); // the one activation raises so Linux reads the size
          terminalBackend.setSize({ cols: 132, rows: 43 });
          const causes = session.handleInterrupt();
          expect(causes?.config).toBe(true);
          expect(driver.readConfig(0, 2)).toBe(132);
          expect(driver.readConfig(2, 2)).toBe(43);
        });

        it('outputs an emergency write on port 0, before and after initialization', async () => {
          await driver.reset();
          driver.writeConfig(8, 4, 0x45); // 'E'
          await init(SIZE);
          driver.writeConfig(8, 1, 0x21); // '!'
          expect(terminal.output.read()?.toString()).toBe('E!');
          expect(driver.readConfig(8, 4)).toBe(0); // write-only
        });

        it('comes back after a reset and runs the handshake again', async () => {
          await handshake(await init());
          await driver.reset();
          expect(driver.getStatus()).toBe(0);
          const replies = await handshake(await init());
          expect(replies[0]).toMatchObject({ id: 0, event: CONSOLE_PORT, value: 1 });
        });
      });
    });
  },
);
