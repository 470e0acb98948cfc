/**
 * Throughput of the packed ring's device side: pop + addUsed + publishUsed (+ the notification
 * check) of 1- and 4-descriptor chains, one full 256-slot ring per batch. The driver's work
 * (re-marking the slots available for the next lap) runs between batches and is not timed.
 * Run from packages/core with any TypeScript loader, e.g.
 * `../../node_modules/.pnpm/node_modules/.bin/esbuild --bundle --platform=node --format=esm
 * bench/packed.bench.ts | node --input-type=module`.
 */

import { GuestMemory } from '../src/memory.js';
import { PackedDeviceQueue } from '../src/queue/packed.js';

const SIZE = 256;
const ROUNDS = 20_000;
const AVAIL = 1 << 7;
const USED = 1 << 15;
const NEXT = 1;
const WRITE = 2;

function run(shared: boolean, segments: number, indirect: boolean): number {
  const buffer = shared ? new SharedArrayBuffer(1 << 20) : new ArrayBuffer(1 << 20);
  const memory = GuestMemory.fromBuffer(buffer);
  const descAddr = 0x1000;
  const driverAddr = 0x3000;
  const deviceAddr = 0x3004;
  const tables = 0x4000;
  const desc32 = new Uint32Array(buffer, descAddr, 4 * SIZE);
  const desc16 = new Uint16Array(buffer, descAddr, 8 * SIZE);
  const slotsPerChain = indirect ? 1 : segments;
  const chainsPerRound = Math.floor(SIZE / slotsPerChain);
  // One readable header segment, the rest writable, as a block request looks.
  const segmentFlags = (s: number) => (s === 0 ? 0 : WRITE);
  if (indirect) {
    for (let c = 0; c < chainsPerRound; c++) {
      for (let s = 0; s < segments; s++) {
        const at = tables + 16 * (segments * c + s);
        memory.writeU32(at, 0x40000 + 512 * (segments * c + s));
        memory.writeU32(at + 8, 512);
        memory.writeU16(at + 14, segmentFlags(s));
      }
    }
  }
  let violations = 0;
  const queue = new PackedDeviceQueue(
    { index: 0, size: SIZE, descAddr, driverAddr, deviceAddr, eventIdx: true, indirect: true },
    { memory, onViolation: () => violations++ },
  );

  let slot = 0;
  let wrap = 1;
  /** The driver: makes `chainsPerRound` chains available, the first head's flags last. */
  const refill = () => {
    let headFlagsIndex = -1;
    let headFlags = 0;
    for (let c = 0; c < chainsPerRound; c++) {
      for (let s = 0; s < slotsPerChain; s++) {
        const base = slot << 2;
        let flags = wrap ? AVAIL : USED;
        if (indirect) {
          desc32[base] = tables + 16 * segments * c;
          desc32[base + 2] = 16 * segments;
          flags |= 4;
        } else {
          desc32[base] = 0x40000 + 512 * (segments * c + s);
          desc32[base + 2] = 512;
          flags |= segmentFlags(s) | (s + 1 < slotsPerChain ? NEXT : 0);
        }
        desc32[base + 1] = 0;
        desc16[(slot << 3) + 6] = c;
        if (headFlagsIndex < 0) {
          headFlagsIndex = (slot << 3) + 7;
          headFlags = flags;
        } else {
          desc16[(slot << 3) + 7] = flags;
        }
        slot++;
        if (slot === SIZE) {
          slot = 0;
          wrap ^= 1;
        }
      }
    }
    Atomics.store(desc16, headFlagsIndex, headFlags);
  };

  let interrupts = 0;
  let timed = 0;
  for (let round = 0; round < ROUNDS; round++) {
    refill();
    const start = performance.now();
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain !== null; chain = queue.pop()) {
        queue.addUsed(chain, chain.writableLength);
      }
      if (queue.publishUsed()) interrupts++;
    } while (queue.enableNotifications());
    timed += performance.now() - start;
  }
  if (violations !== 0 || queue.inFlight !== 0 || interrupts === 0 || queue.broken) {
    throw new Error('bench ring broke');
  }
  return (ROUNDS * chainsPerRound) / (timed / 1000);
}

const rows = [];
for (const shared of [false, true]) {
  for (const [segments, indirect] of [
    [1, false],
    [4, false],
    [4, true],
  ] as const) {
    run(shared, segments, indirect); // warm-up
    const samples = [0, 1, 2].map(() => run(shared, segments, indirect));
    samples.sort((a, b) => a - b);
    rows.push({
      memory: shared ? 'SharedArrayBuffer' : 'ArrayBuffer',
      chain: `${segments} descriptor${segments > 1 ? 's' : ''}${indirect ? ' (indirect)' : ''}`,
      'chains/s (median of 3)': Math.round(samples[1]!).toLocaleString('en'),
    });
  }
}
console.table(rows);
