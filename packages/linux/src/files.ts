/**
 * File descriptors and files: open/close, plain, positioned and vectored reads and writes
 * (zero-copy from typed arrays), syncing, space allocation and hole punching, size queries, and
 * the block-device ioctls a disk backend needs.
 *
 * Reads and writes that may meet a non-blocking descriptor (`read`, `write`, `readv`, `writev`)
 * return `null` instead of throwing when the call would block (`EAGAIN`): that is normal flow on
 * sockets, TAP devices and eventfds, and an exception per empty poll would be costly. Calls
 * interrupted by a signal (`EINTR`) are restarted.
 */

import {
  BLKDISCARD,
  BLKGETSIZE64,
  BLKSSZGET,
  F_GETFL,
  F_SETFL,
  O_NONBLOCK,
  RWF_NOWAIT,
  S_IFBLK,
  S_IFMT,
  S_IFREG,
} from './constants.js';
import { LinuxError } from './errors.js';
import { type AsyncCallback, lastErrno, libc } from './libc.js';
import { type IovecInput, IovecList, iovecs, rawIovecs } from './memory.js';
import { closeWatcherOf } from './watch.js';

const EINTR = 4;
const EAGAIN = 11;

/** Throws the `LinuxError` for the errno the last call left. */
export function throwErrno(syscall: string, path?: string): never {
  throw new LinuxError(lastErrno(), syscall, path === undefined ? {} : { path });
}

/** Result of a read or write that may meet a non-blocking descriptor; restarts on EINTR. */
function nonBlockingResult(result: number, syscall: string): number | null | typeof RETRY {
  if (result >= 0) return result;
  const errno = lastErrno();
  if (errno === EINTR) return RETRY;
  if (errno === EAGAIN) return null;
  throw new LinuxError(errno, syscall);
}

/** Result of a call that must not block or fail; restarts on EINTR. */
function blockingResult(result: number, syscall: string): number | typeof RETRY {
  if (result >= 0) return result;
  const errno = lastErrno();
  if (errno === EINTR) return RETRY;
  throw new LinuxError(errno, syscall);
}

const RETRY = Symbol('retry');

/**
 * Opens `path` and returns the descriptor. `flags` combine `O_*` constants; add `O_CLOEXEC`
 * unless the descriptor must survive `exec`.
 *
 * @param mode - permission bits for a file `O_CREAT` creates (default `0o644`)
 * @example
 * ```ts
 * const fd = open('/var/lib/disk.img', O_RDWR | O_CLOEXEC);
 * ```
 */
export function open(path: string, flags: number, mode = 0o644): number {
  const c = libc();
  for (;;) {
    const fd = c.open(path, flags, mode);
    if (fd >= 0) return fd;
    if (lastErrno() !== EINTR) throwErrno('open', path);
  }
}

/**
 * Closes a descriptor, first closing its `FdWatcher` if it has one (libuv aborts the process
 * when a watched descriptor disappears under it). Not retried on `EINTR`: Linux releases the
 * descriptor regardless.
 */
export function close(fd: number): void {
  closeWatcherOf(fd);
  if (libc().close(fd) < 0) throwErrno('close');
}

/**
 * Reads into `buffer` at the current file position. Returns the byte count (0 at end of file),
 * or `null` if the descriptor is non-blocking and nothing is available.
 */
export function read(fd: number, buffer: ArrayBufferView): number | null {
  const c = libc();
  for (;;) {
    const result = nonBlockingResult(c.read(fd, buffer, buffer.byteLength), 'read');
    if (result !== RETRY) return result;
  }
}

/**
 * Writes `buffer` at the current file position. Returns the byte count (possibly short), or
 * `null` if the descriptor is non-blocking and cannot take data now.
 */
export function write(fd: number, buffer: ArrayBufferView): number | null {
  const c = libc();
  for (;;) {
    const result = nonBlockingResult(c.write(fd, buffer, buffer.byteLength), 'write');
    if (result !== RETRY) return result;
  }
}

/** Reads into `buffer` from byte `offset` of the file. Returns the byte count (0 past the end). */
export function pread(fd: number, buffer: ArrayBufferView, offset: number): number {
  const c = libc();
  for (;;) {
    const result = blockingResult(c.pread(fd, buffer, buffer.byteLength, offset), 'pread');
    if (result !== RETRY) return result;
  }
}

/** Writes `buffer` at byte `offset` of the file. Returns the byte count. */
export function pwrite(fd: number, buffer: ArrayBufferView, offset: number): number {
  const c = libc();
  for (;;) {
    const result = blockingResult(c.pwrite(fd, buffer, buffer.byteLength, offset), 'pwrite');
    if (result !== RETRY) return result;
  }
}

/**
 * Scatter read at the current position into the buffers in order (e.g. a TAP frame into
 * `[vnetHeader, frame]`). Returns the byte count, or `null` if a non-blocking descriptor has
 * nothing to read.
 */
export function readv(fd: number, buffers: IovecInput): number | null {
  const c = libc();
  const list = iovecs(buffers);
  for (;;) {
    const result = nonBlockingResult(c.readv(fd, list[rawIovecs], list.count), 'readv');
    if (result !== RETRY) return result;
  }
}

/**
 * Gather write at the current position from the buffers in order. Returns the byte count, or
 * `null` if a non-blocking descriptor cannot take data now.
 */
export function writev(fd: number, buffers: IovecInput): number | null {
  const c = libc();
  const list = iovecs(buffers);
  for (;;) {
    const result = nonBlockingResult(c.writev(fd, list[rawIovecs], list.count), 'writev');
    if (result !== RETRY) return result;
  }
}

/**
 * Scatter read from byte `offset` of the file into the buffers in order, without copies: the
 * kernel writes straight into the typed arrays' memory (guest RAM, for a disk backend).
 * Returns the byte count.
 *
 * @example
 * ```ts
 * const iov = new IovecList();
 * for (const segment of request.segments) iov.pushAddress(ramAddress + segment.offset, segment.length);
 * preadv(diskFd, iov, request.sector * 512);
 * ```
 */
export function preadv(fd: number, buffers: IovecInput, offset: number): number {
  const c = libc();
  const list = iovecs(buffers);
  for (;;) {
    const result = blockingResult(c.preadv(fd, list[rawIovecs], list.count, offset), 'preadv');
    if (result !== RETRY) return result;
  }
}

/** Gather write to byte `offset` of the file from the buffers in order. Returns the byte count. */
export function pwritev(fd: number, buffers: IovecInput, offset: number): number {
  const c = libc();
  const list = iovecs(buffers);
  for (;;) {
    const result = blockingResult(c.pwritev(fd, list[rawIovecs], list.count, offset), 'pwritev');
    if (result !== RETRY) return result;
  }
}

/**
 * {@link preadv} that never waits (`RWF_NOWAIT`): it reads what the page cache holds now and
 * returns `null` (`EAGAIN`) when the first byte would need the disk, or a lock another thread
 * holds. A count short of the request means only that much was cached. File systems that cannot
 * (tmpfs on the kernels tried) fail with `EOPNOTSUPP`; ask once, then stop. This is how an
 * engine serves cached reads on the calling thread and sends only the rest to a worker (as
 * io_uring does inside the kernel).
 */
export function preadvNoWait(fd: number, buffers: IovecInput, offset: number): number | null {
  return vectorNoWait('preadv2', fd, buffers, offset);
}

/** {@link pwritev} that never waits: see {@link preadvNoWait} (few file systems can, for writes). */
export function pwritevNoWait(fd: number, buffers: IovecInput, offset: number): number | null {
  return vectorNoWait('pwritev2', fd, buffers, offset);
}

function vectorNoWait(
  call: 'preadv2' | 'pwritev2',
  fd: number,
  buffers: IovecInput,
  offset: number,
): number | null {
  const bound = libc()[call];
  const list = iovecs(buffers);
  for (;;) {
    const result = bound(fd, list[rawIovecs], list.count, offset, RWF_NOWAIT);
    if (result >= 0) return result;
    const errno = lastErrno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new LinuxError(errno, call);
  }
}

/** Flushes the file's data and metadata to stable storage. */
export function fsync(fd: number): void {
  if (libc().fsync(fd) < 0) throwErrno('fsync');
}

/** Flushes the file's data (and the metadata needed to read it back) to stable storage. */
export function fdatasync(fd: number): void {
  if (libc().fdatasync(fd) < 0) throwErrno('fdatasync');
}

/**
 * Allocates, deallocates or zeroes a byte range. `mode` 0 allocates (and extends the file);
 * `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` deallocates (a discard); `FALLOC_FL_ZERO_RANGE`
 * zeroes (a write-zeroes). File systems that cannot do it fail with `EOPNOTSUPP`.
 */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  const c = libc();
  while (c.fallocate(fd, mode, offset, length) < 0) {
    if (lastErrno() !== EINTR) throwErrno('fallocate');
  }
}

/** Sets the file's size, extending with zeroes or cutting. */
export function ftruncate(fd: number, length: number): void {
  const c = libc();
  while (c.ftruncate(fd, length) < 0) {
    if (lastErrno() !== EINTR) throwErrno('ftruncate');
  }
}

/** The parts of `struct stat` a VMM uses. */
export interface FileStat {
  /** Size in bytes (0 for a block device: use {@link blockDeviceSize}). */
  readonly size: number;
  /** Allocated space in 512-byte units (drops when holes are punched). */
  readonly blocks: number;
  /** Preferred I/O size in bytes. */
  readonly blockSize: number;
  /** File type and permission bits (`S_IFMT` masks the type). */
  readonly mode: number;
  /** True for a regular file. */
  readonly isFile: boolean;
  /** True for a block device. */
  readonly isBlockDevice: boolean;
}

// struct stat on x86_64 (<asm/stat.h>): 144 bytes; offsets in 32-bit words below.
const statWords = new Uint32Array(new ArrayBuffer(144));
const TWO_32 = 0x1_0000_0000;

function statU64(word: number): number {
  return statWords[word]! + statWords[word + 1]! * TWO_32;
}

/** Returns size, allocated blocks, preferred block size and type of an open file. */
export function fstat(fd: number): FileStat {
  if (libc().fstat(fd, statWords) < 0) throwErrno('fstat');
  const mode = statWords[6]!; // st_mode at byte 24
  return {
    size: statU64(12), // st_size at byte 48
    blocks: statU64(16), // st_blocks at byte 64
    blockSize: statU64(14), // st_blksize at byte 56
    mode,
    isFile: (mode & S_IFMT) === S_IFREG,
    isBlockDevice: (mode & S_IFMT) === S_IFBLK,
  };
}

const statfsWords = new Uint32Array(new ArrayBuffer(120));

/**
 * The type of the file system an open file is on (`statfs.f_type`: `TMPFS_MAGIC`,
 * `RAMFS_MAGIC`, ...). A file on tmpfs or ramfs is memory: reading and writing it copies bytes
 * and never waits for a device.
 */
export function fileSystemType(fd: number): number {
  if (libc().fstatfs(fd, statfsWords) < 0) throwErrno('fstatfs');
  return statfsWords[0]!; // f_type: a long at byte 0; magic numbers fit in 32 bits
}

/** Turns `O_NONBLOCK` on or off for a descriptor. */
export function setNonBlocking(fd: number, nonBlocking: boolean): void {
  const c = libc();
  const flags = c.fcntl(fd, F_GETFL, 0);
  if (flags < 0) throwErrno('fcntl(F_GETFL)');
  const wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (wanted !== flags && c.fcntl(fd, F_SETFL, wanted) < 0) throwErrno('fcntl(F_SETFL)');
}

const u64Pair = new Uint32Array(new ArrayBuffer(16));

/** Size in bytes of a block device (`BLKGETSIZE64`). */
export function blockDeviceSize(fd: number): number {
  if (libc().ioctl(fd, BLKGETSIZE64, u64Pair) < 0) throwErrno('ioctl(BLKGETSIZE64)');
  return u64Pair[0]! + u64Pair[1]! * TWO_32;
}

/** Logical sector size of a block device (`BLKSSZGET`): the `O_DIRECT` alignment it needs. */
export function logicalBlockSize(fd: number): number {
  const size = new Int32Array(1);
  if (libc().ioctl(fd, BLKSSZGET, size) < 0) throwErrno('ioctl(BLKSSZGET)');
  return size[0]!;
}

/** Discards `[offset, offset + length)` of a block device (`BLKDISCARD`); both sector-aligned. */
export function blockDiscard(fd: number, offset: number, length: number): void {
  u64Pair[0] = offset >>> 0;
  u64Pair[1] = Math.floor(offset / TWO_32);
  u64Pair[2] = length >>> 0;
  u64Pair[3] = Math.floor(length / TWO_32);
  if (libc().ioctl(fd, BLKDISCARD, u64Pair) < 0) throwErrno('ioctl(BLKDISCARD)');
}

/**
 * How many of this package's asynchronous calls run at once. koffi refuses calls beyond its
 * `max_async_calls` (256 by default: "Too many asynchronous calls are running"), and a device
 * can have more requests in flight than that (queues × queue size), so calls past this limit
 * wait, in order, for one to finish. libuv's pool runs 4 at a time anyway.
 */
export const MAX_RUNNING_ASYNC_CALLS = 224;
let runningAsync = 0;
const waitingAsync: (() => void)[] = [];

/**
 * Runs a call on koffi's worker threads and settles with its result, or a `LinuxError`.
 * `keepAlive` holds the buffers the call uses until it is done.
 */
function runAsync(
  syscall: string,
  start: (callback: AsyncCallback) => void,
  keepAlive: unknown,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const run = () => {
      runningAsync++;
      const done = () => {
        runningAsync--;
        waitingAsync.shift()?.();
      };
      try {
        start((error, result) => {
          void keepAlive;
          // errno is this call's only during this callback: read it before the next call starts.
          if (error) reject(error);
          else if (result < 0) reject(new LinuxError(lastErrno(), syscall));
          else resolve(result);
          done();
        });
      } catch (error) {
        done();
        reject(error);
      }
    };
    if (runningAsync < MAX_RUNNING_ASYNC_CALLS) run();
    else waitingAsync.push(run);
  });
}

/**
 * {@link preadv} on a worker thread, for disks slow enough that blocking the event loop costs
 * more than the hand-off (~20–40 µs measured). Do not touch the buffers, nor a list passed in,
 * until it settles.
 */
export function preadvAsync(fd: number, buffers: IovecInput, offset: number): Promise<number> {
  const list = buffers instanceof IovecList ? buffers : IovecList.from(buffers);
  const raw = list[rawIovecs];
  return runAsync(
    'preadv',
    (callback) => libc().preadv.async(fd, raw, list.count, offset, callback),
    [buffers, list],
  );
}

/** {@link pwritev} on a worker thread; see {@link preadvAsync}. */
export function pwritevAsync(fd: number, buffers: IovecInput, offset: number): Promise<number> {
  const list = buffers instanceof IovecList ? buffers : IovecList.from(buffers);
  const raw = list[rawIovecs];
  return runAsync(
    'pwritev',
    (callback) => libc().pwritev.async(fd, raw, list.count, offset, callback),
    [buffers, list],
  );
}

/** {@link fdatasync} on a worker thread: a flush can take milliseconds. */
export async function fdatasyncAsync(fd: number): Promise<void> {
  await runAsync('fdatasync', (callback) => libc().fdatasync.async(fd, callback), undefined);
}

/** {@link fsync} on a worker thread. */
export async function fsyncAsync(fd: number): Promise<void> {
  await runAsync('fsync', (callback) => libc().fsync.async(fd, callback), undefined);
}

/**
 * {@link fallocate} on a worker thread. Punching or zeroing a large range can hold the calling
 * thread for a tenth of a second or more (the file system frees or converts every extent), which
 * would stall every device on the event loop. Restarts on `EINTR`; other failures reject with a
 * `LinuxError` (`EOPNOTSUPP` where the file system cannot do `mode`).
 */
export async function fallocateAsync(
  fd: number,
  mode: number,
  offset: number,
  length: number,
): Promise<void> {
  for (;;) {
    try {
      await runAsync(
        'fallocate',
        (callback) => libc().fallocate.async(fd, mode, offset, length, callback),
        undefined,
      );
      return;
    } catch (error) {
      if (!(error instanceof LinuxError) || error.errno !== EINTR) throw error;
    }
  }
}
