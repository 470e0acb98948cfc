/**
 * Requests per second through the whole device (ring, parsing, backend, completion batching),
 * driven by core's TestDriver: 4 KiB reads, 64 in flight per kick, on an in-memory disk and on a
 * page-cached raw image. Run from packages/device-blk: `node bench/run.mjs device`.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RingLayout } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { openFileBackend } from '../src/backends/file.js';
import { nodeFileIo } from '../src/backends/file-io.js';
import { MemoryBackend } from '../src/backends/memory.js';
import type { BlockBackend } from '../src/backends/types.js';
import { BlockDevice } from '../src/device.js';
import { header, workerOnlyIo } from '../src/test-support.js';

const IMAGE = 64 << 20;
const BATCH = 64;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 1);

async function run(backend: BlockBackend, layout: RingLayout) {
  const device = new BlockDevice({ backend });
  const driver = await TestDriver.create(device, { layout, memory: { size: 64 << 20 } });
  // Reuse the same guest buffers every batch: the harness allocator only bumps.
  const queue = driver.queues[0]!;
  const requests = Array.from({ length: BATCH }, () => ({
    head: driver.allocate(16),
    data: driver.allocate(4096),
    status: driver.allocate(1),
  }));
  let done = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const start = performance.now();
  while (performance.now() < deadline) {
    for (const [i, r] of requests.entries()) {
      const sector = Math.floor(Math.random() * (IMAGE / 4096)) * 8;
      driver.memory.write(r.head.addr, header(0, sector));
      queue.add([r.head], [r.data, r.status], i);
    }
    if (queue.publish()) driver.controller.notify(0);
    let collected = 0;
    while (collected < BATCH) {
      const used = queue.takeUsed();
      if (used) {
        collected++;
        continue;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    done += BATCH;
  }
  const seconds = (performance.now() - start) / 1000;
  await device.close();
  return Math.round(done / seconds);
}

const dir = mkdtempSync(join(tmpdir(), 'virtkit-blk-bench-'));
const path = join(dir, 'disk.img');
writeFileSync(path, new Uint8Array(IMAGE).fill(1));
const rows: Record<string, string | number>[] = [];
const only = process.env.BENCH_ONLY; // e.g. "file" or "memory"
for (const layout of ['split', 'packed'] as const) {
  if (only !== 'file') {
    rows.push({
      backend: 'memory',
      layout,
      'reads/s': await run(new MemoryBackend({ size: IMAGE }), layout),
    });
  }
  if (only !== 'memory') {
    for (const [engine, io] of [
      ['aio=threads, default', await nodeFileIo()],
      ['aio=threads, worker only', await workerOnlyIo()],
    ] as const) {
      const backend = await openFileBackend({ path, io });
      rows.push({ backend: `file (${engine})`, layout, 'reads/s': await run(backend, layout) });
    }
  }
}
console.table(rows);
rmSync(dir, { recursive: true, force: true });
