import { DeviceStatus, VirtkitError } from '@virtkit/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CONTROL_RECEIVE_QUEUE,
  CONTROL_TRANSMIT_QUEUE,
  ConsoleConfig,
  ControlEvent,
  NO_PORT_ID,
  receiveQueueIndex,
  transmitQueueIndex,
} from './constants.js';
import { ConsoleDevice } from './device.js';
import { PENDING_INPUT_LIMIT } from './port.js';
import { encodeControlMessage } from './requests.js';
import { GuestConsole, MemoryBackend } from './test-support.js';

const MAX_PORTS = 4;

/** Driver-side mistakes the harness itself refuses (a full ring) are not device behaviour. */
function ignoreFullRing(action: () => void): void {
  try {
    action();
  } catch (error) {
    if (!(error instanceof VirtkitError && error.code === 'DRIVER')) throw error;
  }
}

const portId = fc.oneof(
  fc.integer({ min: 0, max: MAX_PORTS + 1 }),
  fc.constant(NO_PORT_ID),
  fc.nat({ max: 0xffff_ffff }),
);
const controlBytes = fc.oneof(
  fc.uint8Array({ maxLength: 24 }),
  fc
    .record({
      id: portId,
      event: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.nat({ max: 0xffff })),
      value: fc.oneof(fc.integer({ min: 0, max: 2 }), fc.nat({ max: 0xffff })),
    })
    .map(({ id, event, value }) => encodeControlMessage(id, event, value)),
);
const dataQueue = fc.integer({ min: 0, max: MAX_PORTS - 1 });
const sizes = fc.array(fc.integer({ min: 1, max: 96 }), { minLength: 1, maxLength: 3 });

type Action =
  | { kind: 'control'; bytes: Uint8Array; withWritable: boolean }
  | { kind: 'controlBuffers'; sizes: number[]; withReadable: boolean }
  | { kind: 'receiveBuffers'; port: number; sizes: number[]; withReadable: boolean }
  | { kind: 'write'; port: number; bytes: Uint8Array; withWritable: boolean }
  | { kind: 'type'; port: number; bytes: Uint8Array }
  | { kind: 'connect'; port: number; connected: boolean }
  | { kind: 'drain'; port: number }
  | { kind: 'resize'; port: number; cols: number; rows: number }
  | { kind: 'emergency'; offset: number; bytes: Uint8Array }
  | { kind: 'add' }
  | { kind: 'remove'; port: number }
  | { kind: 'reset' };

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.record({
    kind: fc.constant('control' as const),
    bytes: controlBytes,
    withWritable: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('controlBuffers' as const),
    sizes: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 4 }),
    withReadable: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('receiveBuffers' as const),
    port: dataQueue,
    sizes,
    withReadable: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('write' as const),
    port: dataQueue,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 200 }),
    withWritable: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('type' as const),
    port: dataQueue,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 200 }),
  }),
  fc.record({ kind: fc.constant('connect' as const), port: dataQueue, connected: fc.boolean() }),
  fc.record({ kind: fc.constant('drain' as const), port: dataQueue }),
  fc.record({
    kind: fc.constant('resize' as const),
    port: dataQueue,
    cols: fc.nat({ max: 70000 }),
    rows: fc.nat({ max: 70000 }),
  }),
  fc.record({
    kind: fc.constant('emergency' as const),
    offset: fc.integer({ min: 0, max: 14 }),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }),
  }),
  fc.constant({ kind: 'add' as const }),
  fc.record({
    kind: fc.constant('remove' as const),
    port: fc.integer({ min: 1, max: MAX_PORTS - 1 }),
  }),
  fc.constant({ kind: 'reset' as const }),
);

describe('console device under hostile drivers and erratic backends', () => {
  it.each(['split', 'packed'] as const)(
    'never throws, never needs a reset, and keeps its books (%s)',
    async (layout) => {
      await fc.assert(
        fc.asyncProperty(fc.array(action, { maxLength: 40 }), async (actions) => {
          const backends = new Map<number, MemoryBackend>();
          const make = (id: number) => {
            const backend = new MemoryBackend({ size: { cols: 80, rows: 24 } });
            backend.limit = 256;
            backends.set(id, backend);
            return backend;
          };
          const device = new ConsoleDevice({
            backend: make(0),
            ports: [{ backend: make(1), name: 'one' }],
            maxPorts: MAX_PORTS,
            defer: (task) => task(),
          });
          const guest = await GuestConsole.create(device, {
            layout,
            eventIdx: true,
            indirect: true,
          });
          const written = new Map<number, number>();
          const typed = new Map<number, number>();
          const driver = guest.driver;
          for (const step of actions) {
            switch (step.kind) {
              case 'control':
                ignoreFullRing(() => {
                  driver.post(CONTROL_TRANSMIT_QUEUE, {
                    readable: step.bytes.length > 0 ? [step.bytes] : [],
                    writable: step.withWritable || step.bytes.length === 0 ? [8] : [],
                  });
                  driver.kick(CONTROL_TRANSMIT_QUEUE);
                });
                break;
              case 'controlBuffers':
                ignoreFullRing(() => {
                  for (const size of step.sizes) {
                    driver.post(CONTROL_RECEIVE_QUEUE, {
                      readable: step.withReadable ? [Uint8Array.of(1)] : [],
                      writable: [size],
                    });
                  }
                  driver.kick(CONTROL_RECEIVE_QUEUE);
                });
                driver.collect(CONTROL_RECEIVE_QUEUE);
                break;
              case 'receiveBuffers':
                ignoreFullRing(() => {
                  for (const size of step.sizes) {
                    driver.post(receiveQueueIndex(step.port), {
                      readable: step.withReadable ? [Uint8Array.of(1)] : [],
                      writable: [size],
                    });
                  }
                  driver.kick(receiveQueueIndex(step.port));
                });
                driver.collect(receiveQueueIndex(step.port));
                break;
              case 'write':
                ignoreFullRing(() => {
                  driver.post(transmitQueueIndex(step.port), {
                    readable: [step.bytes],
                    writable: step.withWritable ? [4] : [],
                  });
                  driver.kick(transmitQueueIndex(step.port));
                  written.set(step.port, (written.get(step.port) ?? 0) + step.bytes.length);
                });
                driver.collect(transmitQueueIndex(step.port));
                break;
              case 'type': {
                const backend = backends.get(step.port);
                if (backend?.host && !backend.closed) {
                  backend.type(step.bytes);
                  typed.set(step.port, (typed.get(step.port) ?? 0) + step.bytes.length);
                }
                break;
              }
              case 'connect':
                if (backends.get(step.port)?.host)
                  backends.get(step.port)!.setConnected(step.connected);
                break;
              case 'drain':
                if (backends.get(step.port)?.host) backends.get(step.port)!.drain();
                break;
              case 'resize':
                backends.get(step.port)?.host?.resize({ cols: step.cols, rows: step.rows });
                break;
              case 'emergency':
                driver.controller.writeConfig(step.offset, step.bytes);
                // A write covering emerg_wr's low byte (and within the space) is port 0 output.
                if (
                  step.offset <= ConsoleConfig.EMERG_WR &&
                  step.offset + step.bytes.length > ConsoleConfig.EMERG_WR &&
                  step.offset + step.bytes.length <= ConsoleConfig.SIZE
                ) {
                  written.set(0, (written.get(0) ?? 0) + 1);
                }
                break;
              case 'add':
                if (device.ports.length < MAX_PORTS) {
                  const id = device.addPort({ backend: make(-1) }).id;
                  backends.set(id, backends.get(-1)!);
                }
                break;
              case 'remove':
                if (device.port(step.port)) await device.removePort(step.port);
                break;
              case 'reset':
                await driver.reset();
                await driver.initialize();
                break;
            }
            expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
            expect(driver.controller.activation.state).toBe('active');
          }
          for (const port of device.ports) {
            const { bytesFromGuest, outputDropped, bytesToGuest, inputDropped } = port.stats;
            // Only a removed port's queue is credited elsewhere (orphanBytes); reset may drop.
            expect(bytesFromGuest + outputDropped).toBeLessThanOrEqual(written.get(port.id) ?? 0);
            expect(bytesToGuest + inputDropped).toBeLessThanOrEqual(typed.get(port.id) ?? 0);
          }
          // Everything the guest wrote to a live port reached its backend or was counted.
          for (const [id, backend] of backends) {
            const port = device.port(id);
            if (!port || id < 0) continue;
            const delivered = backend.written.reduce((sum, chunk) => sum + chunk.length, 0);
            expect(delivered).toBe(port.stats.bytesFromGuest);
          }
          // The port still works once the driver behaves.
          await driver.reset();
          await driver.initialize();
          backends.get(0)!.setConnected(true);
          backends.get(0)!.drain();
          await guest.probe();
          const before = device.port(0)!.stats.bytesFromGuest;
          await guest.write(0, 'ok');
          expect(device.port(0)!.stats.bytesFromGuest).toBe(before + 2);
          await device.close();
        }),
        { numRuns: 40 },
      );
    },
    30_000,
  );

  it('counts every malformed or unexpected control message exactly once', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 7 }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.nat({ max: 0xffff_ffff }),
        async (short, event, id) => {
          const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 2 });
          const guest = await GuestConsole.create(device);
          await guest.probe(); // announces ports 0 and nothing else
          const violations = guest.driver.controller.violations;
          if (short.length > 0) {
            await guest.driver.send(CONTROL_TRANSMIT_QUEUE, { readable: [short] });
            expect(violations.count('CONSOLE_CONTROL_SHORT')).toBe(1);
          }
          const before = violations.count();
          await guest.sendControl(id, event, 1);
          const after = violations.count();
          const driverEvent =
            event === ControlEvent.DEVICE_READY ||
            event === ControlEvent.PORT_READY ||
            event === ControlEvent.PORT_OPEN;
          if (!driverEvent) expect(violations.count('CONSOLE_CONTROL_EVENT')).toBe(1);
          else if (event !== ControlEvent.DEVICE_READY && id !== 0) {
            expect(violations.count('CONSOLE_PORT_UNKNOWN')).toBe(1);
          } else expect(after).toBe(before);
          expect(after - before).toBeLessThanOrEqual(1);
          expect(guest.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('holds no more than a bounded amount of input for a backend that ignores pauses', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    await GuestConsole.create(device);
    const chunk = new Uint8Array(64 * 1024);
    for (let i = 0; i < 10; i++) backend.type(chunk); // never paused by anyone
    const { inputDropped, bytesToGuest } = device.port(0)!.stats;
    expect(bytesToGuest).toBe(0);
    expect(10 * chunk.length - inputDropped).toBeLessThanOrEqual(PENDING_INPUT_LIMIT);
    expect(inputDropped).toBeGreaterThan(0);
  });

  it('yields between large outputs instead of copying 4 MiB in one go', async () => {
    const backend = new MemoryBackend();
    const deferred: (() => void)[] = [];
    const device = new ConsoleDevice({ backend, defer: (task) => deferred.push(task) });
    const guest = await GuestConsole.create(device);
    const token = guest.postWrite(0, new Uint8Array(4 << 20));
    expect(backend.written.reduce((n, c) => n + c.length, 0)).toBe(1 << 20);
    for (let i = 0; i < 3; i++) deferred.shift()!();
    expect(guest.collectWritten(0)).toEqual([token]);
    expect(device.port(0)!.stats.bytesFromGuest).toBe(4 << 20);
    // emerg_wr stays readable as zeros throughout
    expect([...guest.driver.readConfig(ConsoleConfig.EMERG_WR, 4)]).toEqual([0, 0, 0, 0]);
  });
});
