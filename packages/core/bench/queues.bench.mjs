// Device-side virtqueue throughput: pop + addUsed + publishUsed + enableNotifications (the
// notification check), for 1- and 4-descriptor chains on split and packed rings of 256 entries,
// one full ring per batch. The driver's refill and collection run between batches and are not
// timed. Runs against the built package (what users get): `pnpm build` first.
// Writes bench-results/core.json at the repository root (median of RUNS runs) and prints a table.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  GuestMemory,
  PackedDeviceQueue,
  PackedDriverQueue,
  SplitDeviceQueue,
  SplitDriverQueue,
} from '../dist/index.js';

const SIZE = 256;
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const SECONDS_PER_RUN = Number(process.env.BENCH_SECONDS ?? 0.4);

function setup(layout, segments) {
  const memory = GuestMemory.fromBuffer(new ArrayBuffer(8 << 20));
  let next = 0x1000;
  const allocate = (size, align) => {
    next = Math.ceil(next / align) * align;
    const at = next;
    next += size;
    return at;
  };
  const options = { index: 0, size: SIZE, eventIdx: true, indirect: false, allocate };
  const driver =
    layout === 'split'
      ? new SplitDriverQueue(memory, options)
      : new PackedDriverQueue(memory, options);
  let violations = 0;
  const setupArgs = [
    {
      index: 0,
      size: SIZE,
      descAddr: driver.descAddr,
      driverAddr: driver.driverAddr,
      deviceAddr: driver.deviceAddr,
      eventIdx: true,
      indirect: true,
    },
    { memory, onViolation: () => violations++ },
  ];
  const device =
    layout === 'split' ? new SplitDeviceQueue(...setupArgs) : new PackedDeviceQueue(...setupArgs);
  // One readable header segment and writable data segments, as a block request looks.
  const buffers = [];
  for (let i = 0; i < SIZE; i++) {
    const chain = [];
    for (let s = 0; s < segments; s++) chain.push({ addr: allocate(512, 16), len: 512 });
    buffers.push(chain);
  }
  const perBatch = Math.floor(SIZE / segments);
  return { driver, device, buffers, perBatch, violations: () => violations };
}

function runOnce(layout, segments) {
  const { driver, device, buffers, perBatch, violations } = setup(layout, segments);
  let chains = 0;
  let interrupts = 0;
  let timed = 0;
  const deadline = performance.now() + SECONDS_PER_RUN * 1000;
  while (performance.now() < deadline) {
    for (let i = 0; i < perBatch; i++) {
      const chain = buffers[i];
      driver.add(chain.slice(0, 1), chain.slice(1), i);
    }
    driver.publish();
    const start = performance.now();
    do {
      device.disableNotifications();
      for (let chain = device.pop(); chain !== null; chain = device.pop()) {
        device.addUsed(chain, chain.writableLength);
        chains++;
      }
      if (device.publishUsed()) interrupts++;
    } while (device.enableNotifications());
    timed += performance.now() - start;
    while (driver.takeUsed() !== null);
  }
  if (violations() !== 0 || device.broken || interrupts === 0)
    throw new Error(`${layout} ring broke during the benchmark`);
  return chains / (timed / 1000);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const results = {};
const rows = [];
for (const layout of ['split', 'packed']) {
  for (const segments of [1, 4]) {
    runOnce(layout, segments); // warm-up: let the JIT settle
    const samples = Array.from({ length: RUNS }, () => runOnce(layout, segments));
    const key = `${layout}_${segments}desc_chains_per_s`;
    results[key] = Math.round(median(samples));
    rows.push({
      ring: layout,
      descriptors: segments,
      'median chains/s': results[key].toLocaleString('en'),
      min: Math.round(Math.min(...samples)).toLocaleString('en'),
      max: Math.round(Math.max(...samples)).toLocaleString('en'),
    });
  }
}
console.table(rows);
const root = fileURLToPath(new URL('../../../', import.meta.url));
mkdirSync(`${root}bench-results`, { recursive: true });
const report = {
  ...results,
  runs: RUNS,
  queue_size: SIZE,
  node: process.version,
  date: new Date().toISOString(),
  note: 'device side only: pop + addUsed + publishUsed + enableNotifications; 4-descriptor chains fill the 256-entry ring with 64 chains per batch',
};
writeFileSync(`${root}bench-results/core.json`, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote bench-results/core.json (split 1-descriptor target: >= 5,000,000 chains/s)`);
