import { Feature, featureBit, type RingLayout } from '@virtkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { VhostUserBackend } from './backend.js';
import { VHOST_USER_F_PROTOCOL_FEATURES } from './constants.js';
import { EchoDevice } from './test-device.js';
import { type FrontendQueue, TestFrontend } from './testing/frontend.js';

const text = (value: string) => new TextEncoder().encode(value);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

interface Setup {
  readonly device: EchoDevice;
  readonly backend: VhostUserBackend;
  readonly frontend: TestFrontend;
  readonly logs: string[];
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function setup(device = new EchoDevice(), guest = {}): Setup {
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, { log: (line) => logs.push(line) });
  const frontend = TestFrontend.pair(backend, guest);
  cleanups.push(async () => {
    frontend.close();
    await backend.close();
    frontend.guest.release();
  });
  return { device, backend, frontend, logs };
}

async function roundTrip(queue: FrontendQueue, message: string): Promise<string> {
  const reply = await queue.send([text(message)], [message.length]);
  return decode(reply.written);
}

const layouts: RingLayout[] = ['split', 'packed'];

describe('VhostUserBackend with a TypeScript front-end', () => {
  for (const layout of layouts) {
    for (const eventIdx of [false, true]) {
      for (const indirect of [false, true]) {
        it(`serves requests on a ${layout} ring (event idx ${eventIdx}, indirect ${indirect})`, async () => {
          const { device, backend, frontend } = setup(new EchoDevice(), { regions: 2 });
          const features =
            ~(featureBit(Feature.RING_EVENT_IDX) | featureBit(Feature.RING_INDIRECT_DESC)) |
            (eventIdx ? featureBit(Feature.RING_EVENT_IDX) : 0n) |
            (indirect ? featureBit(Feature.RING_INDIRECT_DESC) : 0n);
          await frontend.handshake({ layout, features });
          const queue = await frontend.startQueue(0, { size: 64 });
          expect(await roundTrip(queue, 'hello vhost-user')).toBe('resu-tsohv olleh');
          expect(backend.activeQueues).toEqual([0]);
          expect(device.activations).toBe(1);
          const negotiated = device.lastFeatures;
          expect((negotiated & featureBit(Feature.RING_PACKED)) !== 0n).toBe(layout === 'packed');
          expect(negotiated & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)).toBe(0n);
          // Many requests in a batch, several ring laps, segments over both regions.
          for (let lap = 0; lap < 3; lap++) {
            const tokens = Array.from({ length: 12 }, (_, i) =>
              queue.post([text(`req-${lap}-`), text(`${i}`.padStart(3, '0'))], [4, 4, 4]),
            );
            queue.kick();
            for (const [i, token] of tokens.entries()) {
              const { written } = await queue.wait(token);
              const sent = `req-${lap}-${`${i}`.padStart(3, '0')}`;
              expect(decode(written)).toBe([...sent].reverse().join(''));
            }
          }
          expect(device.handled).toBe(37);
        });
      }
    }
  }
});
