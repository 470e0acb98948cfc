/**
 * Random guest accesses against every transport's windows (`TransportFixture.windows()`): mostly
 * its registers at their natural widths, otherwise any offset (a little outside each window too)
 * and any width from 0 to 8 bytes; reads and writes of small values, all ones or anything, after
 * the driver left the device reset, half set up or live. Nothing may throw out of a bus access,
 * and a driver that starts over afterwards (re-probe, reset, Linux's init) must find a working
 * device: whatever the guest did to the registers, a reset puts the transport and the device back
 * in the state the spec prescribes.
 */

import type { RingLayout } from '@virtkit/core';
import { createTestMemory } from '@virtkit/core/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TransportCase } from './driver.js';
import { EchoDevice, EchoFeature } from './echo-device.js';
import { DriverSession, linuxInit } from './linux-init.js';
import { mmioCase } from './mmio-driver.js';
import { pciIntxCase, pciMsixCase } from './pci-driver.js';

const cases: TransportCase[] = [mmioCase, pciMsixCase, pciIntxCase];
const layouts: RingLayout[] = ['split', 'packed'];
const REVERSE = 1n << BigInt(EchoFeature.REVERSE);

/**
 * One access. Offsets are mostly aligned to the width and values mostly small or all ones, so
 * the storm reaches the registers' meaning (status bits, queue indices, vectors, selectors), not
 * only the width and alignment checks.
 */
const accessArbitrary = fc.record({
  window: fc.nat(),
  offset: fc.nat(),
  /** Which register of the window (most of the time), or a raw offset. */
  register: fc.option(fc.nat(), { freq: 4 }),
  aligned: fc.boolean(),
  width: fc.constantFrom(0, 1, 2, 2, 3, 4, 4, 4, 8),
  write: fc.boolean(),
  value: fc.oneof(
    fc.constantFrom(
      ...[0, 0, 0, 1, 1, 2, 3, 4, 7, 8, 0xb, 0xf, 0x10, 0x40, 0x80, 0xff, 0x8000, 0xffff],
      ...[0x1000, 0x2_0000, 0x8000_0000, 2 ** 32 - 1],
    ),
    fc.nat(),
  ),
});

function bytesOf(value: number, width: number): Uint8Array {
  const data = new Uint8Array(width);
  let rest = value;
  for (let i = 0; i < width; i++) {
    data[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  return data;
}

const scenarioArbitrary = fc.record({
  /** Where the driver left the device before the storm. */
  start: fc.constantFrom('reset', 'queues set up', 'live'),
  accesses: fc.array(accessArbitrary, { maxLength: 100, size: 'max' }),
});

describe.each(cases)('$name under random register accesses', (transportCase) => {
  it.each(layouts)(
    'never throws, and a reset brings back a working device (%s ring)',
    async (layout) => {
      let protocolViolations = 0;
      let registerViolations = 0;
      await fc.assert(
        fc.asyncProperty(scenarioArbitrary, async ({ start, accesses }) => {
          const guest = createTestMemory({ size: 1 << 20 });
          const fixture = transportCase.create(new EchoDevice(), guest);
          const { driver } = fixture;
          const options = { layout, queues: 2, driverFeatures: REVERSE, guest } as const;
          if (start !== 'reset') {
            await linuxInit(driver, { ...options, skipDriverOk: start === 'queues set up' });
          }
          const windows = fixture.windows();
          for (const access of accesses) {
            const window = windows[access.window % windows.length]!;
            // Aligned inside the window, or anywhere from 4 bytes before it to 4 bytes past it.
            const register =
              access.register === null || window.registers.length === 0
                ? undefined
                : window.registers[access.register % window.registers.length];
            let offset: number;
            let width = access.width;
            if (register) {
              [offset, width] = register;
            } else {
              // Aligned inside the window, or anywhere from 4 bytes before it to 4 bytes past it.
              const step = Math.max(width, 1);
              offset = access.aligned
                ? (access.offset % Math.ceil(window.size / step)) * step
                : (access.offset % (window.size + 8)) - 4;
            }
            const data = bytesOf(access.value, width);
            if (access.write) window.device.write(offset, data);
            else window.device.read(offset, data);
            expect(fixture.controller.status).toBeGreaterThanOrEqual(0);
            expect(fixture.controller.status).toBeLessThanOrEqual(0xff);
          }
          protocolViolations += fixture.controller.violations.count();
          registerViolations += fixture.transportViolations();
          // A driver that starts over: probe again, reset, Linux's init, buffers on both queues.
          driver.probe();
          const session = new DriverSession(driver, guest, await linuxInit(driver, options));
          expect(driver.getStatus() & 0x0f).toBe(0x0f);
          for (const queue of [0, 1]) {
            const payload = new TextEncoder().encode(`queue ${queue} after the storm`);
            const token = session.post(queue, payload, 64);
            session.kick(queue);
            expect(session.handleInterrupt()?.used).toBe(true);
            const [done] = session.collect(queue);
            expect(done?.token).toBe(token);
            expect(done?.bytes).toEqual(payload.slice().reverse());
          }
        }),
        { numRuns: 60 },
      );
      // The storm reached the controller's protocol checks, not only the transport's own checks.
      expect(registerViolations).toBeGreaterThan(0);
      expect(protocolViolations).toBeGreaterThan(0);
    },
  );
});
