/**
 * Throughput of the split ring's device side: pop + addUsed + publishUsed of single-descriptor
 * chains in batches of 256, the driver's work (re-publishing the same 256 heads) kept out of the
 * timed loop. Run: node bench/split.bench.ts through any TypeScript loader, e.g.
 * `npx esbuild --bundle --platform=node --format=esm bench/split.bench.ts | node --input-type=module`.
 */

import { GuestMemory } from '../src/memory.js';
import { SplitDeviceQueue } from '../src/queue/split.js';

const SIZE = 256;
const ROUNDS = 40_000;

function run(shared: boolean, writable: boolean): number {
  const buffer = shared ? new SharedArrayBuffer(1 << 20) : new ArrayBuffer(1 << 20);
  const memory = GuestMemory.fromBuffer(buffer);
  const descAddr = 0x1000;
  const driverAddr = 0x2000;
  const deviceAddr = 0x3000;
  for (let i = 0; i < SIZE; i++) {
    const at = descAddr + 16 * i;
    memory.writeU32(at, 0x10000 + 64 * i);
    memory.writeU32(at + 8, 64);
    memory.writeU16(at + 12, writable ? 2 : 0);
    memory.writeU16(driverAddr + 4 + 2 * i, i);
  }
  let violations = 0;
  const queue = new SplitDeviceQueue(
    { index: 0, size: SIZE, descAddr, driverAddr, deviceAddr, eventIdx: true, indirect: true },
    { memory, onViolation: () => violations++ },
  );
  const availIdx = new Uint16Array(buffer, driverAddr + 2, 1);
  let idx = 0;
  let interrupts = 0;
  const start = performance.now();
  for (let round = 0; round < ROUNDS; round++) {
    idx = (idx + SIZE) & 0xffff;
    Atomics.store(availIdx, 0, idx);
    for (let chain = queue.pop(); chain !== null; chain = queue.pop()) {
      queue.addUsed(chain, chain.writableLength);
    }
    if (queue.publishUsed()) interrupts++;
  }
  const seconds = (performance.now() - start) / 1000;
  if (violations !== 0 || queue.inFlight !== 0 || interrupts === 0)
    throw new Error('bench ring broke');
  return (ROUNDS * SIZE) / seconds;
}

for (const shared of [false, true]) {
  for (const writable of [false, true]) {
    run(shared, writable); // warm-up
    const rate = run(shared, writable);
    console.log(
      `split ${shared ? 'SharedArrayBuffer' : 'ArrayBuffer      '} ${writable ? 'writable' : 'readable'}: ${(rate / 1e6).toFixed(2)} M chains/s`,
    );
  }
}
