// Hostile-driver properties: random transmit chains, control commands and received frames.
// Whatever the guest (or the peer) sends, no exception escapes the device loop (the device never
// ends up in DEVICE_NEEDS_RESET through its own failure), every chain is answered, nothing is
// written past a buffer, and every frame is either delivered or counted as dropped.

import { DeviceStatus, featureBit } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryPair } from './backends/memory.js';
import { NET_ERR, NET_OK, NetFeature } from './constants.js';
import { NetDevice } from './device.js';
import { accept, GUEST_MAC, sleep, until } from './test-support.js';

const LAYOUTS = ['split', 'packed'] as const;
const MAX_PAIRS = 3;

async function bench(layout: 'split' | 'packed', vnetHeader: boolean, without = 0n) {
  const [backend, wire] = createMemoryPair({ vnetHeader, capacity: 1024 });
  const device = new NetDevice({ backend, mac: GUEST_MAC, queuePairs: MAX_PAIRS, mtu: 1500 });
  const driver = await TestDriver.create(device, {
    layout,
    features: accept(device.features, without),
  });
  return { device, driver, wire };
}

function healthy(driver: TestDriver): void {
  expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
  expect(driver.controller.activation.state).toBe('active');
}

/** Random bytes, with the first 12 often shaped like a plausible header. */
const headerish = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 40 }),
  fc
    .record({
      flags: fc.constantFrom(0, 1, 2, 3, 0xff),
      gso: fc.constantFrom(0, 1, 3, 4, 5, 0x80, 0x81, 0x84, 0x7f),
      rest: fc.uint8Array({ minLength: 10, maxLength: 10 }),
    })
    .map(({ flags, gso, rest }) => Uint8Array.of(flags, gso, ...rest)),
);

/** The spec's answer to a control command, computed independently of the handler. */
function expectedAck(bytes: Uint8Array, features: bigint, pairs: number): number {
  const has = (bit: number) => (features & featureBit(bit)) !== 0n;
  if (bytes.length < 2) return NET_ERR;
  const [cls, cmd] = [bytes[0]!, bytes[1]!];
  const data = bytes.subarray(2);
  const ok = (condition: boolean) => (condition ? NET_OK : NET_ERR);
  switch (cls) {
    case 0:
      return ok(
        ((cmd <= 1 && has(NetFeature.CTRL_RX)) ||
          (cmd >= 2 && cmd <= 5 && has(NetFeature.CTRL_RX_EXTRA))) &&
          data.length === 1,
      );
    case 1: {
      if (cmd === 1) return ok(has(NetFeature.CTRL_MAC_ADDR) && data.length === 6);
      if (cmd !== 0 || !has(NetFeature.CTRL_RX) || data.length < 4) return NET_ERR;
      const view = new DataView(data.buffer, data.byteOffset, data.length);
      const first = view.getUint32(0, true);
      const second = 4 + first * 6;
      if (second + 4 > data.length) return NET_ERR;
      return ok(second + 4 + view.getUint32(second, true) * 6 === data.length);
    }
    case 2:
      return ok(
        cmd <= 1 &&
          has(NetFeature.CTRL_VLAN) &&
          data.length === 2 &&
          (data[0]! | (data[1]! << 8)) < 4096,
      );
    case 3:
      return ok(cmd === 0 && has(NetFeature.GUEST_ANNOUNCE) && data.length === 0);
    case 4: {
      if (cmd !== 0 || !has(NetFeature.MQ) || data.length !== 2) return NET_ERR;
      const n = data[0]! | (data[1]! << 8);
      return ok(n >= 1 && n <= pairs);
    }
    default:
      return NET_ERR;
  }
}

const u16 = (values: number[]) =>
  fc.constantFrom(...values).map((n) => Uint8Array.of(n & 0xff, n >> 8));
/** Data near what each class takes: right and wrong lengths, values at the edges of validity. */
const dataFor: Record<number, fc.Arbitrary<Uint8Array>> = {
  0: fc.uint8Array({ minLength: 0, maxLength: 2 }),
  1: fc.oneof(
    fc.uint8Array({ minLength: 5, maxLength: 7 }),
    fc.constant(Uint8Array.of(1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0)),
    fc.constant(Uint8Array.of(0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x5e, 0, 0, 1)),
    fc.constant(Uint8Array.of(0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x5e, 0, 0)),
    fc.constant(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 9)),
    fc.uint8Array({ minLength: 0, maxLength: 12 }),
  ),
  2: fc.oneof(u16([0, 1, 4095, 4096, 0xffff]), fc.uint8Array({ minLength: 1, maxLength: 3 })),
  3: fc.uint8Array({ minLength: 0, maxLength: 1 }),
  4: fc.oneof(u16([0, 1, 2, 3, 4, 0x8000, 0xffff]), fc.uint8Array({ minLength: 1, maxLength: 3 })),
  5: fc.uint8Array({ minLength: 0, maxLength: 9 }),
  6: fc.uint8Array({ minLength: 0, maxLength: 4 }),
};

// Mostly commands near validity, so the edge of each check is hit; some plain random bytes.
const controlCommand = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 24 }) },
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.integer({ min: 0, max: 6 }),
        fc.oneof(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 7 })),
      )
      .chain(([cls, cmd]) => dataFor[cls]!.map((data) => Uint8Array.of(cls, cmd, ...data))),
  },
);

/** Splits `bytes` into 1..3 pieces at random points. */
const pieces = (bytes: Uint8Array) =>
  fc
    .uniqueArray(fc.integer({ min: 1, max: Math.max(1, bytes.length - 1) }), { maxLength: 2 })
    .map((cuts) => {
      const points = [
        0,
        ...cuts.filter((c) => c < bytes.length).sort((a, b) => a - b),
        bytes.length,
      ];
      const out: Uint8Array[] = [];
      for (let i = 0; i + 1 < points.length; i++) {
        if (points[i + 1]! > points[i]!) out.push(bytes.subarray(points[i], points[i + 1]));
      }
      return out.length > 0 ? out : [bytes];
    });

describe.each(LAYOUTS)('hostile input over %s rings', (layout) => {
  it('random transmit chains are all answered, forwarded only when valid, and counted', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(
          fc
            .tuple(
              headerish,
              fc.uint8Array({ minLength: 0, maxLength: 1600 }),
              fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 2 }),
            )
            .chain(([h, body, writable]) =>
              pieces(Uint8Array.from([...h, ...body])).map((readable) => ({ readable, writable })),
            ),
          { minLength: 1, maxLength: 12 },
        ),
        async (vnetHeader, chains) => {
          const { device, driver, wire } = await bench(layout, vnetHeader);
          try {
            const tokens = chains.map((chain) => driver.post(1, chain).token);
            driver.kick(1, true);
            for (const token of tokens) expect((await driver.wait(1, token)).len).toBe(0);
            const s = device.stats;
            expect(s.txFrames + s.txErrors + s.txDroppedSize + s.txDroppedLink).toBe(chains.length);
            expect(wire.pending).toBe(s.txFrames);
            for (let frame = wire.receive(); frame; frame = wire.receive()) {
              const length = frame.length - (vnetHeader ? 12 : 0);
              expect(length).toBeGreaterThanOrEqual(14);
            }
            healthy(driver);
          } finally {
            await device.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('random control commands get the spec answer in a 1-byte ack', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(controlCommand, fc.constantFrom(0, 1, 1, 1, 3)), {
          minLength: 10,
          maxLength: 30,
        }),
        fc.constantFrom(
          0n,
          featureBit(NetFeature.CTRL_RX_EXTRA),
          featureBit(NetFeature.MQ) | featureBit(NetFeature.CTRL_VLAN),
        ),
        async (commands, without) => {
          const { device, driver } = await bench(layout, false, without);
          const features = driver.controller.negotiatedFeatures;
          const ctrl = features & featureBit(NetFeature.MQ) ? 2 * MAX_PAIRS : 2;
          try {
            for (const [bytes, room] of commands) {
              // A chain needs at least one segment.
              const ackRoom = bytes.length === 0 ? Math.max(room, 1) : room;
              const reply = await driver.send(ctrl, {
                readable: bytes.length > 0 ? [bytes] : [],
                writable: ackRoom > 0 ? [ackRoom] : [],
              });
              if (ackRoom === 0) {
                expect(reply.len).toBe(0);
              } else {
                expect(reply.len).toBe(1);
                expect(reply.written[0]).toBe(expectedAck(bytes, features, MAX_PAIRS));
              }
            }
            expect(device.activePairs).toBeGreaterThanOrEqual(1);
            expect(device.activePairs).toBeLessThanOrEqual(MAX_PAIRS);
            healthy(driver);
          } finally {
            await device.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('random received frames and buffer sizes: delivered intact or counted, never overflowing', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.boolean(),
        fc.array(
          fc
            .tuple(headerish, fc.uint8Array({ minLength: 0, maxLength: 3000 }))
            .map(([h, b]) => Uint8Array.from([...h, ...b])),
          { minLength: 1, maxLength: 10 },
        ),
        fc.array(fc.integer({ min: 1, max: 2048 }), { minLength: 1, maxLength: 24 }),
        async (vnetHeader, mergeable, frames, sizes) => {
          const without = mergeable ? 0n : featureBit(NetFeature.MRG_RXBUF);
          const { device, driver, wire } = await bench(layout, vnetHeader, without);
          try {
            const posted = new Map<number, number>();
            const post = (size: number) =>
              posted.set(driver.post(0, { writable: [size] }).token, size);
            for (const size of sizes) post(size);
            driver.kick(0, true);
            for (const frame of frames) wire.inject(frame);
            const s = device.stats;
            const accounted = () =>
              s.rxFrames +
              s.rxFiltered +
              s.rxDroppedSize +
              s.rxDroppedOffload +
              s.rxErrors +
              s.rxDroppedNoQueue;
            // Keep the guest supplied with ordinary buffers until every frame is accounted for.
            for (let round = 0; accounted() < frames.length && round < 100; round++) {
              await sleep(1);
              for (let i = 0; i < 4; i++) post(1526);
              driver.kick(0, true);
            }
            await until(() => accounted() === frames.length, 2000, 'every frame accounted for');
            for (const token of driver.collect(0)) {
              const { len } = await driver.wait(0, token);
              expect(len).toBeLessThanOrEqual(posted.get(token)!);
            }
            healthy(driver);
          } finally {
            await device.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
