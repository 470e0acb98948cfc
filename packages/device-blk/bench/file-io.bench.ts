/**
 * The `aio=threads` engines, through the backend's guest path (`readGuest`/`writeGuest`, what the
 * device calls): host addresses with @virtkit/linux preadvAsync/pwritevAsync (koffi worker calls,
 * the default), against views with Node's fs.readv/fs.writev (when host I/O has no async calls),
 * and, as before, `read`/`write` with views on each. Random 4 KiB and sequential 128 KiB reads and
 * writes on a page-cached temp file, with 1 and 32 requests in flight, the buffers in an 8 MiB
 * guest memory.
 * Run from packages/device-blk (bundles the TypeScript sources, koffi stays external):
 * `node bench/run.mjs`.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '@virtkit/core';
import { openFileBackend } from '../src/backends/file.js';
import { type FileIo, linuxFileIo, nodeFileIo } from '../src/backends/file-io.js';

const IMAGE = 64 << 20;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 1);

async function run(
  io: FileIo,
  guestPath: boolean,
  path: string,
  op: 'read' | 'write',
  size: number,
  depth: number,
) {
  const backend = await openFileBackend({ path, io });
  const ram = new Uint8Array(new ArrayBuffer(8 << 20));
  const memory = GuestMemory.fromBuffer(ram.buffer);
  let done = 0;
  let bytes = 0;
  const deadline = performance.now() + SECONDS * 1000;
  let sequential = 0;
  const worker = async (slot: number) => {
    const buffer = ram.subarray(slot * size, (slot + 1) * size);
    // Two buffers per request, as a guest's scatter-gather list would have.
    const views = [buffer.subarray(0, size / 2), buffer.subarray(size / 2)];
    const ranges = [
      { addr: slot * size, len: size / 2 },
      { addr: slot * size + size / 2, len: size / 2 },
    ];
    while (performance.now() < deadline) {
      const offset =
        size === 4096
          ? Math.floor(Math.random() * (IMAGE / size)) * size
          : (sequential++ * size) % IMAGE;
      if (guestPath) {
        if (op === 'read') await backend.readGuest(offset, memory, ranges);
        else await backend.writeGuest(offset, memory, ranges);
      } else if (op === 'read') await backend.read(offset, views);
      else await backend.write(offset, views);
      done++;
      bytes += size;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: depth }, (_, i) => worker(i)));
  const seconds = (performance.now() - start) / 1000;
  await backend.close();
  return { iops: Math.round(done / seconds), mibps: Math.round(bytes / seconds / (1 << 20)) };
}

const dir = mkdtempSync(join(tmpdir(), 'virtkit-blk-bench-'));
const path = join(dir, 'disk.img');
writeFileSync(path, new Uint8Array(IMAGE).fill(1));
const withoutAsyncHostIo = async (): Promise<FileIo> => {
  const io = await nodeFileIo();
  if (io.hostIo) {
    const { preadvAsync: _r, pwritevAsync: _w, ...sync } = io.hostIo;
    io.hostIo = sync;
  }
  return io;
};
const engines: [string, FileIo | undefined, boolean][] = [
  ['guest: host iovec, koffi (default)', await nodeFileIo(), true],
  ['guest: views, node fs', await withoutAsyncHostIo(), true],
  ['views: node fs', await nodeFileIo(), false],
  ['views: @virtkit/linux', await linuxFileIo(), false],
];
const rows: Record<string, string | number>[] = [];
for (const [op, size] of [
  ['read', 4096],
  ['write', 4096],
  ['read', 131072],
  ['write', 131072],
] as const) {
  for (const depth of [1, 32]) {
    for (const [name, io, guestPath] of engines) {
      if (!io) continue;
      const result = await run(io, guestPath, path, op, size, depth);
      rows.push({ engine: name, op, size, depth, ...result });
    }
  }
}
console.table(rows);
rmSync(dir, { recursive: true, force: true });
