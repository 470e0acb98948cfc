import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  TMPFS_MAGIC,
} from './constants.js';
import { LinuxError } from './errors.js';
import {
  blockDeviceSize,
  blockDiscard,
  close,
  fallocate,
  fallocateAsync,
  fdatasync,
  fdatasyncAsync,
  fileSystemType,
  fstat,
  fsync,
  fsyncAsync,
  ftruncate,
  logicalBlockSize,
  MAX_RUNNING_ASYNC_CALLS,
  open,
  pread,
  preadv,
  preadvAsync,
  preadvNoWait,
  pwrite,
  pwritev,
  pwritevAsync,
  pwritevNoWait,
  read,
  write,
} from './files.js';
import { alignedBuffer, IovecList } from './memory.js';
import { memfdCreate } from './mmap.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtkit-linux-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function tempFile(): { fd: number; path: string } {
  const path = join(dir, `file-${files++}`);
  return { fd: open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), path };
}

function bytes(view: Uint8Array): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

describe('positioned I/O', () => {
  it('fileSystemType tells tmpfs (a memfd) from the file system stat(1) names', () => {
    const memfd = memfdCreate('virtkit-fstype');
    try {
      expect(fileSystemType(memfd)).toBe(TMPFS_MAGIC);
    } finally {
      close(memfd);
    }
    const { fd } = tempFile();
    try {
      const expected = Number.parseInt(
        execFileSync('stat', ['-f', '-c', '%t', dir]).toString(),
        16,
      );
      expect(fileSystemType(fd)).toBe(expected);
    } finally {
      close(fd);
    }
    expect(() => fileSystemType(-1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('preadvNoWait reads cached data without waiting, or says the file system cannot', () => {
    for (const { fd, tmpfs } of [
      { fd: memfdCreate('virtkit-nowait'), tmpfs: true },
      { ...tempFile(), tmpfs: false },
    ]) {
      try {
        const data = pattern(8192, 7);
        expect(pwrite(fd, data, 0)).toBe(8192);
        const back = new Uint8Array(8192);
        // Kernels before 6.6 (and tmpfs in the ones tested) refuse RWF_NOWAIT: EOPNOTSUPP.
        if (tmpfs || fileSystemType(fd) === TMPFS_MAGIC) {
          try {
            expect(preadvNoWait(fd, [back], 0)).toBe(8192);
            expect(back).toEqual(data);
          } catch (error) {
            expect(error).toMatchObject({ code: 'EOPNOTSUPP', syscall: 'preadv2' });
          }
        } else {
          // Just written, so cached: the whole read succeeds on this thread.
          expect(preadvNoWait(fd, [back.subarray(0, 4096), back.subarray(4096)], 0)).toBe(8192);
          expect(back).toEqual(data);
        }
        // Writes: some file systems can (XFS), others refuse (ext4 buffered, tmpfs).
        try {
          const written = pwritevNoWait(fd, [pattern(100, 9)], 0);
          expect(written === null || written === 100).toBe(true);
        } catch (error) {
          expect(error).toMatchObject({ code: 'EOPNOTSUPP', syscall: 'pwritev2' });
        }
      } finally {
        close(fd);
      }
    }
    expect(() => preadvNoWait(-1, [new Uint8Array(1)], 0)).toThrow(
      expect.objectContaining({ code: 'EBADF' }),
    );
  });

  it('pwrite then pread round-trips at an offset, and fstat sees the size', () => {
    const { fd } = tempFile();
    try {
      const data = pattern(1000, 1);
      expect(pwrite(fd, data, 4096)).toBe(1000);
      const back = new Uint8Array(1000);
      expect(pread(fd, back, 4096)).toBe(1000);
      expect(back).toEqual(data);
      expect(pread(fd, new Uint8Array(10), 5096)).toBe(0); // past the end
      expect(fstat(fd)).toMatchObject({ size: 5096, isFile: true, isBlockDevice: false });
      fsync(fd);
      fdatasync(fd);
    } finally {
      close(fd);
    }
  });

  it('read and write follow the file position', () => {
    const { fd } = tempFile();
    try {
      expect(write(fd, pattern(3, 0))).toBe(3);
      expect(write(fd, pattern(3, 100))).toBe(3);
      const back = new Uint8Array(6);
      expect(pread(fd, back, 0)).toBe(6);
      expect(back).toEqual(Uint8Array.of(...pattern(3, 0), ...pattern(3, 100)));
      expect(read(fd, back)).toBe(0); // at end
    } finally {
      close(fd);
    }
  });

  it('pwritev gathers and preadv scatters, across buffer kinds, in place', () => {
    const { fd } = tempFile();
    try {
      const shared = new SharedArrayBuffer(256);
      const pieces = [
        pattern(7, 1),
        new Uint8Array(shared, 100, 50).fill(0xab),
        new DataView(pattern(33, 2).buffer, 3, 20),
        Buffer.from('tail'),
      ];
      expect(pwritev(fd, pieces, 10)).toBe(7 + 50 + 20 + 4);
      const expected = new Uint8Array(81);
      let at = 0;
      for (const piece of pieces) {
        expected.set(new Uint8Array(piece.buffer, piece.byteOffset, piece.byteLength), at);
        at += piece.byteLength;
      }
      // Read into a guest-memory-like SharedArrayBuffer through raw addresses and a subarray.
      const ram = new SharedArrayBuffer(4096);
      const bytes = new Uint8Array(ram);
      const iov = new IovecList(4);
      iov.push(bytes.subarray(1000, 1040)).push(bytes.subarray(2000, 2041));
      expect(iov.count).toBe(2);
      expect(iov.totalLength).toBe(81);
      expect(preadv(fd, iov, 10)).toBe(81);
      expect(Uint8Array.of(...bytes.subarray(1000, 1040), ...bytes.subarray(2000, 2041))).toEqual(
        expected,
      );
      expect(bytes[999]).toBe(0);
      expect(bytes[2041]).toBe(0);
    } finally {
      close(fd);
    }
  });

  it('async variants run off the event loop and report errors as LinuxError', async () => {
    const { fd } = tempFile();
    try {
      const data = [pattern(4096, 5), pattern(100, 6)];
      await expect(pwritevAsync(fd, data, 0)).resolves.toBe(4196);
      await fdatasyncAsync(fd);
      await fsyncAsync(fd);
      const back = [new Uint8Array(4096), new Uint8Array(100)];
      await expect(preadvAsync(fd, back, 0)).resolves.toBe(4196);
      expect(back).toEqual(data);
    } finally {
      close(fd);
    }
    await expect(preadvAsync(fd, [new Uint8Array(1)], 0)).rejects.toMatchObject({
      code: 'EBADF',
      syscall: 'preadv',
    });
    await expect(fdatasyncAsync(fd)).rejects.toBeInstanceOf(LinuxError);
  });

  it('queues async calls past what koffi runs at once, instead of failing them', async () => {
    // koffi refuses more than 256 at once ("Too many asynchronous calls are running"); a disk
    // with several deep queues has more requests than that in flight.
    const { fd } = tempFile();
    try {
      const count = MAX_RUNNING_ASYNC_CALLS * 3;
      await pwritevAsync(fd, [pattern(count, 9)], 0);
      const buffers = Array.from({ length: count }, () => new Uint8Array(1));
      const reads = await Promise.all(buffers.map((buffer, i) => preadvAsync(fd, [buffer], i)));
      expect(reads.every((n) => n === 1)).toBe(true);
      expect(Uint8Array.from(buffers, (b) => b[0]!)).toEqual(pattern(count, 9));
      // Failures release their place too.
      const failures = await Promise.allSettled(
        Array.from({ length: count }, () => preadvAsync(-1, [new Uint8Array(1)], 0)),
      );
      expect(failures.every((f) => f.status === 'rejected')).toBe(true);
      await expect(preadvAsync(fd, [new Uint8Array(1)], 0)).resolves.toBe(1);
    } finally {
      close(fd);
    }
  });
});

describe('space management', () => {
  it('punches a hole: data reads as zeroes and allocated blocks drop', (context) => {
    const { fd } = tempFile();
    try {
      const megabyte = pattern(1 << 20, 9);
      pwrite(fd, megabyte, 0);
      fdatasync(fd);
      const before = fstat(fd).blocks;
      try {
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 << 10, 512 << 10);
      } catch (error) {
        if ((error as LinuxError).code === 'EOPNOTSUPP') {
          context.skip(`the file system of ${dir} cannot punch holes`);
        }
        throw error;
      }
      const after = fstat(fd);
      expect(after.size).toBe(1 << 20); // KEEP_SIZE
      // 512 KiB = 1024 sectors of 512 bytes released (allow for metadata blocks).
      expect(before - after.blocks).toBeGreaterThanOrEqual(1000);
      const back = new Uint8Array(1 << 20);
      pread(fd, back, 0);
      // Buffer.equals: a deep toEqual over a megabyte takes a second.
      expect(bytes(back.subarray(256 << 10, 768 << 10)).equals(Buffer.alloc(512 << 10))).toBe(true);
      expect(bytes(back.subarray(0, 256 << 10)).equals(megabyte.subarray(0, 256 << 10))).toBe(true);
      expect(bytes(back.subarray(768 << 10)).equals(megabyte.subarray(768 << 10))).toBe(true);
    } finally {
      close(fd);
    }
  });

  it('fallocateAsync punches off the event loop; errors reject as LinuxError', async (context) => {
    const { fd } = tempFile();
    try {
      const megabyte = pattern(1 << 20, 11);
      pwrite(fd, megabyte, 0);
      fdatasync(fd);
      const before = fstat(fd).blocks;
      let settled = false;
      const punch = fallocateAsync(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 512 << 10);
      void punch.then(
        () => (settled = true),
        () => (settled = true),
      );
      // A call made on this thread (even one wrapped in a promise) would have settled once the
      // microtasks drain; the worker thread's answer needs a turn of the event loop.
      for (let i = 0; i < 10; i++) await Promise.resolve();
      expect(settled).toBe(false);
      try {
        await punch;
      } catch (error) {
        if ((error as LinuxError).code === 'EOPNOTSUPP') {
          context.skip(`the file system of ${dir} cannot punch holes`);
        }
        throw error;
      }
      const after = fstat(fd);
      expect(after.size).toBe(1 << 20);
      expect(before - after.blocks).toBeGreaterThanOrEqual(1000);
      const back = new Uint8Array(1 << 20);
      pread(fd, back, 0);
      expect(bytes(back.subarray(0, 512 << 10)).equals(Buffer.alloc(512 << 10))).toBe(true);
      expect(bytes(back.subarray(512 << 10)).equals(megabyte.subarray(512 << 10))).toBe(true);
      await fallocateAsync(fd, FALLOC_FL_ZERO_RANGE, 512 << 10, 4096);
      pread(fd, back, 0);
      expect(back.subarray(512 << 10, (512 << 10) + 4096).every((byte) => byte === 0)).toBe(true);
      expect(back[(512 << 10) + 4096]).toBe(megabyte[(512 << 10) + 4096]);
      // Mode 0 allocates and extends, as the synchronous call does.
      await fallocateAsync(fd, 0, 0, 2 << 20);
      expect(fstat(fd).size).toBe(2 << 20);
      await expect(fallocateAsync(fd, 0x7fff_0000, 0, 4096)).rejects.toMatchObject({
        name: 'LinuxError',
        syscall: 'fallocate',
      });
    } finally {
      close(fd);
    }
    await expect(fallocateAsync(fd, 0, 0, 1)).rejects.toMatchObject({
      code: 'EBADF',
      errno: 9,
      syscall: 'fallocate',
    });
  });

  it('zero-range zeroes without changing the size; ftruncate and plain fallocate resize', () => {
    const { fd } = tempFile();
    try {
      pwrite(fd, pattern(8192, 3), 0);
      fallocate(fd, FALLOC_FL_ZERO_RANGE, 4096, 4096);
      const back = new Uint8Array(8192);
      pread(fd, back, 0);
      expect(back.subarray(0, 4096)).toEqual(pattern(8192, 3).subarray(0, 4096));
      expect(back.subarray(4096).every((byte) => byte === 0)).toBe(true);
      expect(fstat(fd).size).toBe(8192);
      ftruncate(fd, 100);
      expect(fstat(fd).size).toBe(100);
      fallocate(fd, 0, 0, 1 << 16);
      expect(fstat(fd).size).toBe(1 << 16);
    } finally {
      close(fd);
    }
  });
});

describe('O_DIRECT', () => {
  it('alignedBuffer gives aligned memory', () => {
    for (const alignment of [512, 4096, 65536]) {
      const buffer = alignedBuffer(8192, alignment);
      expect(buffer.byteLength).toBe(8192);
      // Through the kernel's eyes: an O_DIRECT read needs this; checked below. Here the address.
      expect(buffer.byteOffset).toBeLessThan(alignment);
    }
    expect(() => alignedBuffer(10, 3)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('reads and writes with aligned buffers, and the kernel refuses misaligned offsets', (context) => {
    const { path } = tempFile();
    let fd: number;
    try {
      fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
    } catch (error) {
      if ((error as LinuxError).code === 'EINVAL') {
        context.skip(`the file system of ${dir} does not support O_DIRECT`);
      }
      throw error;
    }
    try {
      const out = alignedBuffer(8192);
      out.set(pattern(8192, 4));
      expect(pwrite(fd, out, 4096)).toBe(8192);
      const back = alignedBuffer(4096);
      expect(preadv(fd, [back], 8192)).toBe(4096);
      expect(back).toEqual(pattern(8192, 4).subarray(4096));
      // Memory alignment rules vary by device (Linux 6.0+ only asks for the DMA alignment), but
      // file offsets must always be multiples of the logical block size.
      expect(() => pread(fd, back, 1)).toThrow(
        expect.objectContaining({ code: 'EINVAL', syscall: 'pread' }),
      );
    } finally {
      close(fd);
    }
  });
});

describe('errors', () => {
  it('names the path for open failures', () => {
    const path = join(dir, 'missing');
    try {
      open(path, O_RDONLY);
      expect.unreachable();
    } catch (error) {
      expect(error).toMatchObject({ code: 'ENOENT', errno: 2, syscall: 'open', path });
      expect((error as Error).message).toBe(
        `open ${path} failed: no such file or directory (ENOENT)`,
      );
    }
  });

  it('bad descriptors give EBADF', () => {
    const badFd = 1_000_000;
    for (const call of [
      () => pread(badFd, new Uint8Array(1), 0),
      () => pwritev(badFd, [new Uint8Array(1)], 0),
      () => fstat(badFd),
      () => fallocate(badFd, 0, 0, 1),
      () => close(badFd),
    ]) {
      expect(call).toThrow(expect.objectContaining({ name: 'LinuxError', code: 'EBADF' }));
    }
  });
});

describe('block devices', () => {
  it('reads size and sector size and discards through a loop device', (context) => {
    const { fd, path } = tempFile();
    ftruncate(fd, 4 << 20);
    close(fd);
    let device: string;
    try {
      device = execFileSync('losetup', ['--find', '--show', path], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }).trim();
    } catch (error) {
      context.skip(`no loop device can be set up here: ${(error as Error).message.split('\n')[0]}`);
      return;
    }
    try {
      const blockFd = open(device, O_RDWR | O_CLOEXEC);
      try {
        expect(fstat(blockFd).isBlockDevice).toBe(true);
        expect(blockDeviceSize(blockFd)).toBe(4 << 20);
        expect([512, 4096]).toContain(logicalBlockSize(blockFd));
        blockDiscard(blockFd, 0, 1 << 20);
        expect(() => blockDiscard(blockFd, 1, 512)).toThrow(
          expect.objectContaining({ code: 'EINVAL', syscall: 'ioctl(BLKDISCARD)' }),
        );
      } finally {
        close(blockFd);
      }
      const regular = open(path, O_RDONLY | O_CLOEXEC);
      try {
        expect(() => blockDeviceSize(regular)).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
      } finally {
        close(regular);
      }
    } finally {
      execFileSync('losetup', ['--detach', device]);
    }
  });
});
