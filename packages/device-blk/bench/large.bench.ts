/**
 * One large request at a time (queue depth 1), as `dd bs=1M oflag=direct` sends them: 1 MiB of
 * data in 256 separate 4 KiB guest pages. Prints microseconds per request through the whole
 * device with each engine (aio=threads: host addresses, one preadv/pwritev, on this thread
 * because the image is on tmpfs; the same forced onto a worker thread; aio=sync: on this thread)
 * and, for comparison, for a bare `fs.readv` / `fs.writev` of the same buffers. CPU time counts the driver side too (it runs in this process,
 * and polls with setImmediate while the thread pool works, so compare wall time across engines).
 * Run from packages/device-blk: `node bench/run.mjs large`.
 */

import { closeSync, mkdtempSync, openSync, readv, rmSync, writeFileSync, writev } from 'node:fs';
import type { Segment } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { openFileBackend } from '../src/backends/file.js';
import { BlockDevice } from '../src/device.js';
import { header, workerOnlyIo } from '../src/test-support.js';

const IMAGE = 256 << 20;
const PAGES = 256;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const dir = mkdtempSync(join('/dev/shm', 'virtkit-blk-large-'));

import { join } from 'node:path';

const path = join(dir, 'disk.img');
writeFileSync(path, new Uint8Array(IMAGE).fill(1));

async function device(type: 0 | 1, sync = false, workerOnly = false) {
  const backend = await openFileBackend({
    path,
    aio: sync ? 'sync' : 'threads',
    ...(workerOnly ? { io: await workerOnlyIo() } : {}),
  });
  const dev = new BlockDevice({ backend });
  const driver = await TestDriver.create(dev, { memory: { size: 64 << 20 } });
  const queue = driver.queues[0]!;
  const head = driver.allocate(16);
  // Scattered pages: every other page, as a guest's page allocator would hand them out.
  const pages: Segment[] = [];
  for (let i = 0; i < PAGES; i++) {
    driver.allocate(4096);
    pages.push(driver.allocate(4096));
  }
  const status = driver.allocate(1);
  let done = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const deadline = start + SECONDS * 1000;
  while (performance.now() < deadline) {
    const sector = (done % (IMAGE / (PAGES * 4096))) * PAGES * 8;
    driver.memory.write(head.addr, header(type, sector));
    if (type === 0) queue.add([head], [...pages, status], 0);
    else queue.add([head, ...pages], [status], 0);
    if (queue.publish()) driver.controller.notify(0);
    for (;;) {
      if (queue.takeUsed()) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    done++;
  }
  const elapsed = performance.now() - start;
  const used = process.cpuUsage(cpu);
  await dev.close();
  return {
    us: (elapsed * 1000) / done,
    cpuUs: (used.user + used.system) / done,
    userUs: used.user / done,
  };
}

async function bare(type: 0 | 1) {
  const fd = openSync(path, 'r+');
  const memory = new Uint8Array(new ArrayBuffer(8 << 20));
  const views = Array.from({ length: PAGES }, (_, i) => memory.subarray(i * 8192, i * 8192 + 4096));
  let done = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const deadline = start + SECONDS * 1000;
  while (performance.now() < deadline) {
    const position = (done % (IMAGE / (PAGES * 4096))) * PAGES * 4096;
    await new Promise<void>((resolve, reject) => {
      (type === 0 ? readv : writev)(fd, views, position, (error) =>
        error ? reject(error) : resolve(),
      );
    });
    done++;
  }
  const elapsed = performance.now() - start;
  const used = process.cpuUsage(cpu);
  closeSync(fd);
  return {
    us: (elapsed * 1000) / done,
    cpuUs: (used.user + used.system) / done,
    userUs: used.user / done,
  };
}

const rows: Record<string, string | number>[] = [];
for (let round = 0; round < 2; round++) {
  for (const type of [0, 1] as const) {
    const name = type === 0 ? 'read' : 'write';
    for (const [what, fn] of [
      ['device aio=threads', device],
      ['device aio=threads, worker only', (t: 0 | 1) => device(t, false, true)],
      ['device aio=sync', (t: 0 | 1) => device(t, true)],
      ['bare fs', bare],
    ] as const) {
      const r = await fn(type);
      rows.push({
        what,
        op: name,
        'µs/req': r.us.toFixed(1),
        'cpu µs/req': r.cpuUs.toFixed(1),
        'user µs/req': r.userUs.toFixed(1),
      });
    }
  }
}
console.table(rows);
rmSync(dir, { recursive: true, force: true });
