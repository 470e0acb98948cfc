import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { BlkStatus, BlkRequestType as T } from '../constants.js';
import { BlockDevice } from '../device.js';
import { blkRequest, header, segments, workerOnlyIo } from '../test-support.js';
import { type FileBackend, openFileBackend } from './file.js';
import { Fallocate, type FileIo, type HostIovec, nodeFileIo } from './file-io.js';

const dir = mkdtempSync(join(tmpdir(), 'virtkit-blk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** A temp image of `size` bytes filled with `fill`. */
function image(size: number, fill = 0): string {
  const path = join(dir, `disk-${files++}.img`);
  writeFileSync(path, new Uint8Array(size).fill(fill));
  return path;
}

/** The default system calls with every call recorded. */
async function spyIo(override: Partial<FileIo> = {}): Promise<{ io: FileIo; calls: string[] }> {
  const real = await nodeFileIo();
  const calls: string[] = [];
  const io: FileIo = { ...real, ...override };
  for (const key of ['preadv', 'pwritev', 'fdatasync', 'fallocate'] as const) {
    const inner = io[key] as ((...args: unknown[]) => unknown) | undefined;
    if (!inner) continue;
    (io as unknown as Record<string, unknown>)[key] = (...args: unknown[]) => {
      calls.push(key === 'fallocate' ? `fallocate:${args[1]}` : key);
      return inner(...args);
    };
  }
  return { io, calls };
}

/** The first `count` bytes of a buffer list. */
function firstBytes(buffers: readonly Uint8Array[], count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const buffer of buffers) {
    if (count === 0) break;
    out.push(buffer.subarray(0, Math.min(count, buffer.length)));
    count -= out.at(-1)!.length;
  }
  return out;
}

describe('openFileBackend', () => {
  it('opens an image and moves bytes both ways at exact offsets', async () => {
    const path = image(64 * 1024, 0x11);
    const backend = await openFileBackend({ path });
    expect(backend.capacity).toBe(64 * 1024);
    await backend.write(4096, [new Uint8Array(100).fill(1), new Uint8Array(412).fill(2)]);
    const out = [new Uint8Array(256), new Uint8Array(256)];
    await backend.read(4096, out);
    expect(out[0]!.subarray(0, 100).every((b) => b === 1)).toBe(true);
    expect(out[1]!.every((b) => b === 2)).toBe(true);
    await backend.close();
    const bytes = readFileSync(path);
    expect(bytes[4095]).toBe(0x11);
    expect(bytes[4096]).toBe(1);
    expect(bytes[4608]).toBe(0x11);
  });

  it('refuses images whose size is not a positive multiple of the sector size', async () => {
    await expect(openFileBackend({ path: image(1000) })).rejects.toMatchObject({
      code: 'BLK_IMAGE_SIZE',
      message: expect.stringMatching(/1000 bytes, not a positive multiple of 512/),
    });
    await expect(openFileBackend({ path: image(0) })).rejects.toMatchObject({
      code: 'BLK_IMAGE_SIZE',
    });
    await expect(openFileBackend({ path: image(1536), sizeAlignment: 1024 })).rejects.toMatchObject(
      {
        code: 'BLK_IMAGE_SIZE',
      },
    );
    await expect(openFileBackend({ path: join(dir, 'missing.img') })).rejects.toMatchObject({
      code: 'BLK_IMAGE_OPEN',
    });
    await expect(openFileBackend({ path: dir })).rejects.toMatchObject({ code: 'BLK_IMAGE_OPEN' });
  });

  it('refuses accesses outside the image and writes to a read-only image', async () => {
    const path = image(8192, 5);
    const backend = await openFileBackend({ path });
    await expect(backend.write(8192 - 512, [new Uint8Array(1024)])).rejects.toMatchObject({
      code: 'BLK_BACKEND_RANGE',
    });
    await expect(backend.read(-512, [new Uint8Array(512)])).rejects.toMatchObject({
      code: 'BLK_BACKEND_RANGE',
    });
    await expect(backend.discard(8192, 512)).rejects.toMatchObject({ code: 'BLK_BACKEND_RANGE' });
    await backend.close();
    const readOnly = await openFileBackend({ path, readOnly: true });
    expect(readOnly.readOnly).toBe(true);
    expect(readOnly.canUnmap).toBe(false);
    await expect(readOnly.write(0, [new Uint8Array(512)])).rejects.toMatchObject({
      code: 'BLK_BACKEND_READ_ONLY',
    });
    await readOnly.close();
    expect(statSync(path).size).toBe(8192);
    expect(readFileSync(path).every((b) => b === 5)).toBe(true);
  });

  it('repeats short transfers and splits more than 1024 buffers', async () => {
    const real = await nodeFileIo();
    const sizes: number[] = [];
    // A kernel may return fewer bytes than asked; this one gives at most 700 per call.
    const { io } = await spyIo({
      preadv: (fd, buffers, position) => {
        sizes.push(buffers.length);
        return real.preadv(fd, firstBytes(buffers, 700), position);
      },
    });
    const path = image(4 * 1024 * 1024);
    writeFileSync(
      path,
      Uint8Array.from({ length: 4 << 20 }, (_, i) => i % 251),
    );
    const backend = await openFileBackend({ path, io });
    const small = Array.from({ length: 1500 }, () => new Uint8Array(1));
    await backend.read(1, small);
    expect(small.map((b) => b[0])).toEqual(Array.from({ length: 1500 }, (_, i) => (i + 1) % 251));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(1024);
    expect(sizes.length).toBeGreaterThan(2);
    await backend.close();
  });

  it('zero-fills a read that meets the end of a file that shrank', async () => {
    const real = await nodeFileIo();
    // The file "ends" at 1024 bytes: reads stop there.
    const { io } = await spyIo({
      preadv: (fd, buffers, position) =>
        position >= 1024
          ? Promise.resolve(0)
          : real.preadv(fd, firstBytes(buffers, 1024 - position), position),
    });
    const backend = await openFileBackend({ path: image(4096, 9), io });
    const out = new Uint8Array(2048).fill(0xff);
    await backend.read(0, [out]);
    expect(out.subarray(0, 1024).every((b) => b === 9)).toBe(true);
    expect(out.subarray(1024).every((b) => b === 0)).toBe(true);
    await backend.close();
  });

  it('gives a stable default serial from device and inode, as Firecracker does', async () => {
    const path = image(4096);
    const first = await openFileBackend({ path });
    const second = await openFileBackend({ path });
    const stat = statSync(path, { bigint: true });
    expect(first.defaultSerial).toBe(`${stat.dev}${stat.rdev}${stat.ino}`.slice(0, 20));
    expect(second.defaultSerial).toBe(first.defaultSerial);
    await first.close();
    await second.close();
  });
});

describe('FileBackend flush', () => {
  it('calls fdatasync for FLUSH (spy)', async () => {
    const { io, calls } = await spyIo();
    const backend = await openFileBackend({ path: image(4096), io });
    await backend.write(0, [new Uint8Array(512).fill(1)]);
    expect(calls).toEqual(['pwritev']);
    await backend.flush();
    expect(calls).toEqual(['pwritev', 'fdatasync']);
    await backend.close();
  });

  it('really syncs a real file, and reports fdatasync failures', async () => {
    const path = image(4096);
    const backend = await openFileBackend({ path });
    await backend.write(0, [new Uint8Array(512).fill(7)]);
    await backend.flush();
    expect(backend.stats.syncs).toBe(1);
    expect(readFileSync(path)[0]).toBe(7);
    await backend.close();
    const failing = await openFileBackend({
      path,
      io: { ...(await nodeFileIo()), fdatasync: () => Promise.reject(new Error('EIO')) },
    });
    await expect(failing.flush()).rejects.toThrow('EIO');
    await failing.close();
  });
});

describe('FileBackend discard and write-zeroes', () => {
  it('punches holes for DISCARD: allocated blocks drop and the range reads as zeroes', async (context) => {
    const size = 4 << 20;
    const path = image(size, 0x5a);
    const backend = await openFileBackend({ path });
    await backend.flush();
    const before = statSync(path).blocks;
    await backend.discard(1 << 20, 2 << 20);
    if (!backend.canUnmap) {
      await backend.close();
      context.skip(`the file system under ${dir} cannot punch holes (fallocate EOPNOTSUPP)`);
    }
    const after = statSync(path).blocks;
    expect(backend.stats.punches).toBe(1);
    expect(after).toBeLessThanOrEqual(before - (2 << 20) / 512);
    const out = new Uint8Array(3 << 20);
    await backend.read(512 * 1024, [out]);
    expect(out.subarray(0, 512 * 1024).every((b) => b === 0x5a)).toBe(true);
    expect(out.subarray(512 * 1024, 512 * 1024 + (2 << 20)).every((b) => b === 0)).toBe(true);
    expect(out.subarray(512 * 1024 + (2 << 20)).every((b) => b === 0x5a)).toBe(true);
    expect(statSync(path).size).toBe(size);
    await backend.close();
  });

  it('uses PUNCH_HOLE for write-zeroes with unmap and ZERO_RANGE without', async () => {
    const { io, calls } = await spyIo();
    const path = image(64 * 1024, 0x77);
    const backend = await openFileBackend({ path, io });
    await backend.writeZeroes(0, 8192, true);
    await backend.writeZeroes(16384, 4096, false);
    expect(calls).toEqual([
      `fallocate:${Fallocate.PUNCH_HOLE | Fallocate.KEEP_SIZE}`,
      `fallocate:${Fallocate.ZERO_RANGE | Fallocate.KEEP_SIZE}`,
    ]);
    await backend.close();
    const bytes = readFileSync(path);
    expect(bytes.subarray(0, 8192).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(8192, 16384).every((b) => b === 0x77)).toBe(true);
    expect(bytes.subarray(16384, 20480).every((b) => b === 0)).toBe(true);
    expect(bytes[20480]).toBe(0x77);
  });

  it('runs fallocate off the event loop: a long discard is still pending after microtasks', async (context) => {
    const io = await nodeFileIo();
    if (!io.fallocate) context.skip('no fallocate binding on this host');
    const size = 16 << 20;
    const path = image(size, 0x3c);
    const backend = await openFileBackend({ path, io });
    await backend.flush();
    let settled = false;
    const discard = backend.discard(0, size).finally(() => {
      settled = true;
    });
    // Had fallocate run on this thread (as the synchronous binding did), the discard would have
    // settled before the microtasks drained; the worker's answer needs a turn of the event loop.
    for (let i = 0; i < 50; i++) await Promise.resolve();
    expect(settled).toBe(false);
    await discard;
    if (backend.canUnmap) {
      expect(backend.stats.punches).toBe(1);
      expect(statSync(path).blocks).toBeLessThan(size / 512 / 2);
    } else {
      expect(backend.stats.discardsIgnored).toBe(1);
    }
    const out = new Uint8Array(4096);
    await backend.read(size - 4096, [out]);
    expect(out.every((b) => b === (backend.canUnmap ? 0 : 0x3c))).toBe(true);
    await backend.close();
  });

  it.each([
    ['throws', 'sync'],
    ['rejects', 'async'],
  ] as const)(
    'where the file system refuses (fallocate %s): discard does nothing, write-zeroes writes zeroes',
    async (_, style) => {
      const refuse = () => {
        const error = Object.assign(new Error('fallocate failed: not supported'), {
          code: 'EOPNOTSUPP',
        });
        if (style === 'sync') throw error;
        return Promise.reject(error);
      };
      const { io, calls } = await spyIo({ fallocate: refuse });
      const path = image(64 * 1024, 0x33);
      const backend = await openFileBackend({ path, io });
      expect(backend.canUnmap).toBe(true);
      await backend.discard(0, 4096);
      expect(backend.canUnmap).toBe(false);
      expect(backend.stats.discardsIgnored).toBe(1);
      await backend.discard(0, 4096); // no second attempt
      await backend.writeZeroes(8192, 8192, true);
      expect(calls.filter((c) => c.startsWith('fallocate'))).toHaveLength(2); // punch once, zero range once
      expect(calls.at(-1)).toBe('pwritev');
      await backend.close();
      const bytes = readFileSync(path);
      expect(bytes.subarray(0, 8192).every((b) => b === 0x33)).toBe(true);
      expect(bytes.subarray(8192, 16384).every((b) => b === 0)).toBe(true);
    },
  );

  it('fails the request for other fallocate errors', async () => {
    const { io } = await spyIo({
      fallocate: () => {
        throw Object.assign(new Error('fallocate failed: I/O error'), { code: 'EIO' });
      },
    });
    const backend = await openFileBackend({ path: image(8192), io });
    await expect(backend.discard(0, 4096)).rejects.toThrow('I/O error');
    expect(backend.canUnmap).toBe(true);
    await backend.close();
  });
});

describe('FileBackend direct I/O', () => {
  async function openDirect(path: string): Promise<FileBackend | undefined> {
    try {
      return await openFileBackend({ path, direct: true });
    } catch (error) {
      if ((error as { code?: string }).code === 'BLK_IMAGE_OPEN') return undefined;
      throw error;
    }
  }

  it('moves data with O_DIRECT, bouncing unaligned guest buffers', async (context) => {
    const path = image(1 << 20, 0x21);
    const backend = await openDirect(path);
    if (!backend) context.skip(`O_DIRECT is not supported under ${dir}`);
    const io = await nodeFileIo();
    expect(backend!.directAlignment).toBe(512);
    // Unaligned memory: an odd offset into a buffer.
    const unaligned = new Uint8Array(8192 + 1).subarray(1).fill(0x42);
    await backend!.write(4096, [unaligned]);
    expect(backend!.stats.bounced).toBe(1);
    // Aligned memory goes straight to the kernel.
    const aligned = io.alignedBuffer!(4096, 4096);
    await backend!.read(4096, [aligned]);
    expect(backend!.stats.bounced).toBe(1);
    expect(aligned.every((b) => b === 0x42)).toBe(true);
    const odd = [new Uint8Array(100 + 412 + 1).subarray(1, 101), new Uint8Array(412)];
    await backend!.read(0, odd);
    expect(backend!.stats.bounced).toBe(2);
    expect(odd[0]!.every((b) => b === 0x21)).toBe(true);
    await backend!.flush();
    await backend!.close();
    expect(readFileSync(path)[4096 + 8191]).toBe(0x42);
  });
});

describe('BlockDevice over a file', () => {
  it('serves requests from a real image, FLUSH reaching fdatasync', async () => {
    const { io, calls } = await spyIo();
    const path = image(1 << 20);
    const backend = await openFileBackend({ path, io });
    const device = new BlockDevice({ backend, serial: 'file-disk' });
    for (const layout of ['split', 'packed'] as const) {
      const driver = await TestDriver.create(device, { layout });
      const data = new Uint8Array(4096).fill(layout === 'split' ? 1 : 2);
      expect((await blkRequest(driver, 0, [header(T.OUT, 8), data], [1])).status).toBe(0);
      const read = await blkRequest(driver, 0, [header(T.IN, 8)], [4096, 1]);
      expect(read.data).toEqual(data);
      calls.length = 0;
      expect((await blkRequest(driver, 0, [header(T.FLUSH)], [1])).status).toBe(BlkStatus.OK);
      expect(calls).toEqual(['fdatasync']);
      const discard = await blkRequest(
        driver,
        0,
        [header(T.DISCARD), segments({ sector: 8, sectors: 8 })],
        [1],
      );
      expect(discard.status).toBe(BlkStatus.OK);
      await driver.reset();
    }
    await device.close();
    expect(
      readFileSync(path)
        .subarray(4096, 8192)
        .every((b) => b === 0),
    ).toBe(true);
  });

  for (const [aio, what] of [
    ['threads', 'worker threads only'],
    ['threads', 'reads from the page cache on this thread'],
    ['sync', ''],
  ] as const) {
    it(`does zero-copy I/O into SharedArrayBuffer guest memory in two regions, split and packed (aio=${aio}${what && `, ${what}`})`, async () => {
      const path = image(1 << 20, 6);
      const io = what === 'worker threads only' ? await workerOnlyIo() : await nodeFileIo();
      const device = new BlockDevice({ backend: await openFileBackend({ path, aio, io }) });
      for (const layout of ['split', 'packed'] as const) {
        const driver = await TestDriver.create(device, {
          layout,
          memory: { shared: true, regions: 2 },
        });
        expect(driver.memory.regions[0]!.bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
        // The harness spreads buffers over both regions, so one request spans them.
        const data = Uint8Array.from(
          { length: 2048 },
          (_, i) => (i + (layout === 'split' ? 0 : 1)) & 0xff,
        );
        const write = await blkRequest(
          driver,
          0,
          [header(T.OUT, 4), data.subarray(0, 1024), data.subarray(1024)],
          [1],
        );
        expect(write.status).toBe(BlkStatus.OK);
        const read = await blkRequest(driver, 0, [header(T.IN, 4)], [1024, 1024, 1]);
        expect(read.data).toEqual(data);
        expect(readFileSync(path).subarray(2048, 4096)).toEqual(Buffer.from(data));
        await driver.reset();
      }
      await device.close();
    });
  }

  it('refuses writes to a read-only image', async () => {
    const path = image(64 * 1024, 4);
    const device = new BlockDevice({ backend: await openFileBackend({ path, readOnly: true }) });
    const driver = await TestDriver.create(device);
    const reply = await blkRequest(driver, 0, [header(T.OUT, 0), new Uint8Array(512)], [1]);
    expect(reply.status).toBe(BlkStatus.IOERR);
    expect((await blkRequest(driver, 0, [header(T.IN, 0)], [513])).data[0]).toBe(4);
    await device.close();
    expect(readFileSync(path).every((b) => b === 4)).toBe(true);
  });
});

describe('FileBackend aio=threads: what cannot wait runs on the calling thread', () => {
  function guest(size = 1 << 20) {
    return GuestMemory.fromBuffer(new ArrayBuffer(size));
  }

  it('serves an image in memory (a memfd: tmpfs) without a worker thread', async () => {
    const linux = await import('@virtkit/linux');
    const memfd = linux.memfdCreate('virtkit-blk-test');
    try {
      const path = `/proc/self/fd/${memfd}`;
      writeFileSync(path, new Uint8Array(64 << 10).fill(5));
      const backend = await openFileBackend({ path, aio: 'threads' });
      expect(backend.memoryBacked).toBe(true);
      const memory = guest();
      memory.fill(0x2000, 4096, 0x77);
      // Synchronous: done when the call returns, no promise.
      expect(backend.writeGuest(4096, memory, [{ addr: 0x2000, len: 4096 }])).toBeUndefined();
      expect(backend.readGuest(0, memory, [{ addr: 0x4000, len: 8192 }])).toBeUndefined();
      expect(memory.readU8(0x4000 + 4095)).toBe(5);
      expect(memory.readU8(0x4000 + 4096)).toBe(0x77);
      await backend.close();
    } finally {
      linux.close(memfd);
    }
    // The same image type on another file system goes to the worker threads.
    const io = await nodeFileIo();
    const onDisk = await openFileBackend({
      path: image(4096),
      aio: 'threads',
      io: { ...io, inMemory: () => false },
    });
    expect(onDisk.memoryBacked).toBe(false);
    expect(onDisk.writeGuest(0, guest(), [{ addr: 0, len: 512 }])).toBeInstanceOf(Promise);
    await onDisk.close();
    // A block device: its node is on devtmpfs (tmpfs to statfs), its data on a disk.
    const device = await openFileBackend({
      path: image(4096),
      aio: 'threads',
      io: {
        ...io,
        stat: async (fd) => ({ ...(await io.stat(fd)), isFile: false, isBlockDevice: true }),
        inMemory: () => true,
      },
    });
    expect(device.memoryBacked).toBe(false);
    await device.close();
  });

  it('reads what the page cache holds on this thread (RWF_NOWAIT), the rest on a worker', async () => {
    const real = await nodeFileIo();
    const host = real.hostIo!;
    const calls: string[] = [];
    // What each RWF_NOWAIT read does: move that many bytes, would block, or fail.
    const script: (number | 'EAGAIN' | 'EOPNOTSUPP')[] = [4096, 1000, 'EAGAIN', 'EOPNOTSUPP'];
    const io: FileIo = {
      ...real,
      inMemory: () => false,
      hostIo: {
        ...host,
        iovec: (capacity) => new RecordingIovec(host.iovec(capacity)),
        preadvNoWait: (fd, iov, position) => {
          calls.push(`nowait@${position}`);
          const step = script.shift()!;
          if (step === 'EAGAIN') return null;
          if (typeof step === 'string') throw Object.assign(new Error(step), { code: step });
          const shorter = host.iovec();
          let left = step;
          for (const [address, length] of (iov as RecordingIovec).entries) {
            const take = Math.min(left, length);
            if (take > 0) shorter.pushAddress(address, take);
            left -= take;
          }
          return host.preadv(fd, shorter, position);
        },
        preadvAsync: (fd, iov, position) => {
          calls.push(`worker@${position}`);
          return host.preadvAsync!(fd, (iov as RecordingIovec).inner, position);
        },
        pwritevNoWait: () => {
          throw Object.assign(new Error('EIO'), { code: 'EIO' });
        },
      },
    };
    const path = image(64 << 10);
    writeFileSync(
      path,
      Uint8Array.from({ length: 64 << 10 }, (_, i) => (i * 7 + (i >> 8)) & 0xff),
    );
    const file = readFileSync(path);
    const backend = await openFileBackend({ path, aio: 'threads', io });
    const memory = guest();
    const read = async (offset: number, expected: string[]) => {
      calls.length = 0;
      memory.fill(0, 8192, 0);
      const ranges = [
        { addr: 0x100, len: 1536 },
        { addr: 0x1000, len: 2560 },
      ];
      const done = backend.readGuest(offset, memory, ranges);
      // A promise exactly when a worker thread has part of the read.
      expect(done instanceof Promise).toBe(expected.some((call) => call.startsWith('worker')));
      await done;
      expect(calls).toEqual(expected);
      const out = new Uint8Array(4096);
      memory.read(0x100, out.subarray(0, 1536));
      memory.read(0x1000, out.subarray(1536));
      expect(Buffer.from(out).equals(file.subarray(offset, offset + 4096))).toBe(true);
      return done;
    };
    // All cached: done on this thread, no promise.
    expect(await read(0, ['nowait@0'])).toBeUndefined();
    expect(backend.stats.noWait).toBe(1);
    // Part cached: the rest (from inside the first range) on a worker.
    await read(4096, ['nowait@4096', 'worker@5096']);
    expect(backend.stats.noWait).toBe(2);
    // Would block: all of it on a worker.
    await read(8192, ['nowait@8192', 'worker@8192']);
    // The file system cannot: on a worker, and never tried again.
    await read(12288, ['nowait@12288', 'worker@12288']);
    await read(16384, ['worker@16384']);
    expect(backend.stats.noWait).toBe(2);
    // Other errors fail the request (the device answers IOERR).
    expect(() => backend.writeGuest(0, memory, [{ addr: 0, len: 512 }])).toThrow('EIO');
    await backend.close();
  });
});

describe('FileBackend aio=sync', () => {
  /** Guest RAM whose ranges the tests hand the backend directly. */
  function guest(size = 1 << 20) {
    return GuestMemory.fromBuffer(new ArrayBuffer(size));
  }

  it('aio=threads keeps a thousand guest reads in flight at once (more than koffi runs)', async () => {
    const path = image(1 << 20);
    writeFileSync(
      path,
      Uint8Array.from({ length: 1 << 20 }, (_, i) => (i >> 9) & 0xff),
    );
    const backend = await openFileBackend({ path, aio: 'threads', io: await workerOnlyIo() });
    const memory = guest();
    const reads = Array.from({ length: 1000 }, (_, i) =>
      backend.readGuest((i % 2048) * 512, memory, [{ addr: i * 512, len: 512 }]),
    );
    await Promise.all(reads);
    for (let i = 0; i < 1000; i++) expect(memory.readU8(i * 512 + 7)).toBe((i % 2048) & 0xff);
    await backend.close();
  });

  it('moves bytes both ways on the calling thread, with no promise in between', async () => {
    const path = image(1 << 20, 3);
    const backend = await openFileBackend({ path, aio: 'sync' });
    expect(backend.aio).toBe('sync');
    const memory = guest();
    memory.fill(0x100, 512, 0x61);
    memory.fill(0x1000, 1024, 0x62);
    const ranges = [
      { addr: 0x100, len: 512 },
      { addr: 0x1000, len: 1024 },
    ];
    // Synchronous: the bytes are in the file when the call returns.
    expect(backend.writeGuest(8192, memory, ranges)).toBeUndefined();
    const file = readFileSync(path);
    expect(file.subarray(8192, 8192 + 512).every((b) => b === 0x61)).toBe(true);
    expect(file.subarray(8192 + 512, 8192 + 1536).every((b) => b === 0x62)).toBe(true);
    expect(file[8192 + 1536]).toBe(3);
    expect(backend.readGuest(8192 - 512, memory, [{ addr: 0x8000, len: 2048 }])).toBeUndefined();
    const back = new Uint8Array(2048);
    memory.read(0x8000, back);
    expect(back.subarray(0, 512).every((b) => b === 3)).toBe(true);
    expect(back.subarray(512, 1024).every((b) => b === 0x61)).toBe(true);
    expect(back.subarray(1024).every((b) => b === 0x62)).toBe(true);
    // The same bounds checks as the asynchronous path.
    expect(() => backend.readGuest(1 << 20, memory, [{ addr: 0, len: 512 }])).toThrow(
      expect.objectContaining({ code: 'BLK_BACKEND_RANGE' }),
    );
    await backend.close();
  });

  for (const aio of ['sync', 'threads'] as const) {
    it(`repeats short transfers, splits more than 1024 pieces, and zero-fills at end of file (aio=${aio})`, async () => {
      const real = await nodeFileIo();
      const counts: number[] = [];
      let endOfFile = Number.POSITIVE_INFINITY;
      // A kernel may transfer less than asked; this one moves at most 700 bytes per call.
      const host = real.hostIo!;
      /** The first 700 bytes' worth of the list (and nothing past the "end" of the file). */
      const shorten = (iov: HostIovec, position: number): HostIovec => {
        counts.push(iov.count);
        const shorter = host.iovec();
        let left = Math.max(0, Math.min(700, endOfFile - position));
        for (const [address, length] of (iov as RecordingIovec).entries) {
          if (left === 0) break;
          const take = Math.min(left, length);
          shorter.pushAddress(address, take);
          left -= take;
        }
        return shorter;
      };
      const { preadvNoWait: _read, pwritevNoWait: _write, ...worker } = host;
      // Every transfer through the shortening calls: no reads served early from the cache.
      const { inMemory: _memory, ...rest } = real;
      const io: FileIo = {
        ...rest,
        hostIo: {
          ...worker,
          iovec: (capacity) => new RecordingIovec(host.iovec(capacity)),
          preadv: (fd, iov, position) => host.preadv(fd, shorten(iov, position), position),
          preadvAsync: (fd, iov, position) =>
            host.preadvAsync!(fd, shorten(iov, position), position),
        },
      };
      const path = image(4 << 20);
      writeFileSync(
        path,
        Uint8Array.from({ length: 4 << 20 }, (_, i) => i % 251),
      );
      const backend = await openFileBackend({ path, io, aio });
      const memory = guest();
      // 1500 one-byte ranges, every other byte.
      const ranges = Array.from({ length: 1500 }, (_, i) => ({ addr: 2 * i, len: 1 }));
      await backend.readGuest(1, memory, ranges);
      expect(ranges.map((r) => memory.readU8(r.addr))).toEqual(
        Array.from({ length: 1500 }, (_, i) => (i + 1) % 251),
      );
      expect(Math.max(...counts)).toBeLessThanOrEqual(1024);
      expect(counts.length).toBeGreaterThan(2);
      // Fewer than 1024 ranges go in one list; a short transfer stops inside a range (700 = 233
      // three-byte ranges and one byte) and the rest follows.
      counts.length = 0;
      const threes = Array.from({ length: 400 }, (_, i) => ({ addr: 0x8000 + 4 * i, len: 3 }));
      await backend.readGuest(5, memory, threes);
      expect(threes.flatMap((r) => [0, 1, 2].map((k) => memory.readU8(r.addr + k)))).toEqual(
        Array.from({ length: 1200 }, (_, i) => (i + 5) % 251),
      );
      expect(counts).toEqual([400, 167]);
      // The file "ends" at 1024 bytes: the rest of the read is zeroes, as a hole would be.
      endOfFile = 1024;
      memory.fill(0x10000, 2048, 0xff);
      await backend.readGuest(0, memory, [{ addr: 0x10000, len: 2048 }]);
      const out = new Uint8Array(2048);
      memory.read(0x10000, out);
      expect(out.subarray(0, 1024)).toEqual(Uint8Array.from({ length: 1024 }, (_, i) => i % 251));
      expect(out.subarray(1024).every((b) => b === 0)).toBe(true);
      await backend.close();
    });

    it(`bounces unaligned guest buffers under O_DIRECT and passes aligned ones straight (aio=${aio})`, async (context) => {
      const path = image(1 << 20, 0x21);
      let backend: FileBackend;
      try {
        backend = await openFileBackend({ path, direct: true, aio });
      } catch (error) {
        if ((error as { code?: string }).code === 'BLK_IMAGE_OPEN') {
          context.skip(`O_DIRECT is not supported under ${dir}`);
        }
        throw error;
      }
      const io = await nodeFileIo();
      const ram = io.alignedBuffer!(1 << 20, 4096);
      const memory = new GuestMemory([
        { guestAddress: 0, buffer: ram.buffer, byteOffset: ram.byteOffset, size: ram.length },
      ]);
      memory.fill(0x2000, 4096, 0x42);
      await backend.writeGuest(4096, memory, [{ addr: 0x2000, len: 4096 }]);
      expect(backend.stats.bounced).toBe(0);
      memory.fill(0x3001, 512, 0x43);
      await backend.writeGuest(0, memory, [{ addr: 0x3001, len: 512 }]);
      expect(backend.stats.bounced).toBe(1);
      await backend.readGuest(0, memory, [
        { addr: 0x5003, len: 100 },
        { addr: 0x6000, len: 412 },
      ]);
      expect(backend.stats.bounced).toBe(2);
      expect(memory.readU8(0x5003)).toBe(0x43);
      expect(memory.readU8(0x6000 + 411)).toBe(0x43);
      await backend.close();
      const file = readFileSync(path);
      expect(file.subarray(4096, 8192).every((b) => b === 0x42)).toBe(true);
      expect(file.subarray(0, 512).every((b) => b === 0x43)).toBe(true);
    });
  }

  it('needs @virtkit/linux', async () => {
    const { hostIo: _, ...io } = await nodeFileIo();
    await expect(openFileBackend({ path: image(4096), io, aio: 'sync' })).rejects.toMatchObject({
      code: 'BLK_OPTIONS',
    });
  });
});

/** An iovec list that remembers its entries, for spies. */
class RecordingIovec implements HostIovec {
  readonly entries: [number, number][] = [];
  readonly inner: HostIovec;
  constructor(inner: HostIovec) {
    this.inner = inner;
  }
  get count(): number {
    return this.inner.count;
  }
  get capacity(): number {
    return this.inner.capacity;
  }
  clear(): this {
    this.entries.length = 0;
    this.inner.clear();
    return this;
  }
  pushAddress(address: number, length: number): this {
    this.entries.push([address, length]);
    this.inner.pushAddress(address, length);
    return this;
  }
}
