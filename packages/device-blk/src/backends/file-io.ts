/**
 * The system calls the file backend makes, behind one interface: tests substitute spies (to see
 * that FLUSH really calls `fdatasync`) or failures, and the backend stays the same.
 *
 * {@link nodeFileIo} does positioned vectored I/O with Node's own `fs.readv`/`fs.writev` (libuv
 * `preadv`/`pwritev` on its thread pool, straight into guest memory) and `fs.fdatasync`. What Node
 * cannot do (`fallocate`, buffer addresses for `O_DIRECT`, block-device sizes) comes from
 * `@virtkit/linux`, loaded only when a file backend is opened, so memory-only users never load
 * native code. `fallocate` runs on a worker thread (`fallocateAsync`): punching a large hole takes
 * the file system a tenth of a second or more, and on the event loop that would stall every device.
 */

import * as fs from 'node:fs';

/** What the backend needs to know about an open file. */
export interface FileInfo {
  /** Size in bytes (for a block device, its capacity). */
  readonly size: number;
  /** Allocated 512-byte units (`st_blocks`). */
  readonly blocks: number;
  readonly isFile: boolean;
  readonly isBlockDevice: boolean;
  /** `st_dev`, `st_rdev`, `st_ino` as decimal strings (for a stable default serial). */
  readonly dev: string;
  readonly rdev: string;
  readonly ino: string;
}

/** The system calls of the file backend. All byte counts and positions are exact integers. */
export interface FileIo {
  /** `open(2)`; `flags` are `O_*` bits. Resolves to the descriptor. */
  open(path: string, flags: number): Promise<number>;
  close(fd: number): Promise<void>;
  /** `fstat(2)`, plus the device size for a block device. */
  stat(fd: number): Promise<FileInfo>;
  /** `preadv(2)`: resolves to the bytes read (short at end of file, or past 1024 buffers). */
  preadv(fd: number, buffers: readonly Uint8Array[], position: number): Promise<number>;
  /** `pwritev(2)`: resolves to the bytes written. */
  pwritev(fd: number, buffers: readonly Uint8Array[], position: number): Promise<number>;
  /** `fdatasync(2)`. */
  fdatasync(fd: number): Promise<void>;
  /**
   * `fallocate(2)`. Absent when the host has no binding; the backend then treats hole punching
   * as unsupported. Fails (by throwing or rejecting) with an error whose `code` is `EOPNOTSUPP`
   * where the file system refuses the mode. May complete synchronously, but should not: a large
   * punch or zero range can take long, so the default runs it off the event loop.
   */
  fallocate?(fd: number, mode: number, offset: number, length: number): void | Promise<void>;
  /** Host address of a view's first byte (for `O_DIRECT` alignment checks). */
  addressOf?(view: Uint8Array): number;
  /** `length` bytes at an address that is a multiple of `alignment` (for `O_DIRECT`). */
  alignedBuffer?(length: number, alignment: number): Uint8Array;
  /** Logical sector size of a block device (the `O_DIRECT` alignment it needs). */
  logicalBlockSize?(fd: number): number;
  /**
   * True if the file is on a file system whose files are memory (tmpfs, ramfs): reading and
   * writing it never waits for a device.
   */
  inMemory?(fd: number): boolean;
  /**
   * Vectored I/O on host addresses, run on the calling thread (`aio=sync`). Absent where
   * `@virtkit/linux` cannot load.
   */
  hostIo?: HostVectorIo;
}

/** A reusable `struct iovec[]` of raw host addresses (`@virtkit/linux`'s `IovecList`). */
export interface HostIovec {
  readonly count: number;
  readonly capacity: number;
  clear(): this;
  pushAddress(address: number, length: number): this;
}

/**
 * Vectored I/O on host addresses. Guest memory is addressed as a region's host base plus an
 * offset, so no view is made per descriptor: `aio=sync` calls on the device's thread, and
 * `aio=threads` the same calls on a worker thread.
 */
export interface HostVectorIo {
  /** Host address of a view's first byte (a guest region's base address). */
  addressOf(view: Uint8Array): number;
  /** A new, empty list of up to `capacity` entries (at most and by default 1024). */
  iovec(capacity?: number): HostIovec;
  /** `preadv(2)` on this thread: the byte count. */
  preadv(fd: number, iov: HostIovec, position: number): number;
  /** `pwritev(2)` on this thread: the byte count. */
  pwritev(fd: number, iov: HostIovec, position: number): number;
  /**
   * `preadv2(2)` with `RWF_NOWAIT` on this thread: the bytes the page cache held (possibly
   * short), or `null` when the first would need to wait. Throws `EOPNOTSUPP` where the file
   * system cannot.
   */
  preadvNoWait?(fd: number, iov: HostIovec, position: number): number | null;
  /** `pwritev2(2)` with `RWF_NOWAIT`: see {@link preadvNoWait}. */
  pwritevNoWait?(fd: number, iov: HostIovec, position: number): number | null;
  /** `preadv(2)` on a worker thread (`iov` must stay untouched until it settles). */
  preadvAsync?(fd: number, iov: HostIovec, position: number): Promise<number>;
  /** `pwritev(2)` on a worker thread (`iov` must stay untouched until it settles). */
  pwritevAsync?(fd: number, iov: HostIovec, position: number): Promise<number>;
}

/** `open(2)` flags, from Node (which takes them from the host's headers). */
export const OpenFlags = {
  RDONLY: fs.constants.O_RDONLY,
  RDWR: fs.constants.O_RDWR,
  /** 0 where the host has no `O_DIRECT`. */
  DIRECT: fs.constants.O_DIRECT ?? 0,
  CLOEXEC: 0o2000000,
} as const;

/** `fallocate(2)` modes, from Linux `<linux/falloc.h>`. */
export const Fallocate = {
  KEEP_SIZE: 0x01,
  PUNCH_HOLE: 0x02,
  ZERO_RANGE: 0x10,
} as const;

/** `fallocate` error codes that mean "this file system cannot", not "this I/O failed". */
export function isUnsupported(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS' || code === 'ENOTTY';
}

function callback<T>(
  resolve: (value: T) => void,
  reject: (error: unknown) => void,
): (error: NodeJS.ErrnoException | null, value: T) => void {
  return (error, value) => (error ? reject(error) : resolve(value));
}

type Linux = typeof import('@virtkit/linux');

/** Loads `@virtkit/linux`, or `undefined` where it cannot work (not Linux x86_64, no koffi). */
export async function loadLinux(): Promise<Linux | undefined> {
  if (process.platform !== 'linux' || process.arch !== 'x64') return undefined;
  try {
    const linux = await import('@virtkit/linux');
    return linux.isSupportedPlatform() ? linux : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The default system calls: Node's `fs` for I/O and syncing, `@virtkit/linux` (when it loads) for
 * the rest.
 */
export async function nodeFileIo(): Promise<FileIo> {
  const linux = await loadLinux();
  const io: FileIo = {
    open: (path, flags) =>
      new Promise((resolve, reject) => fs.open(path, flags, callback(resolve, reject))),
    close: (fd) =>
      new Promise((resolve, reject) =>
        fs.close(fd, (error) => (error ? reject(error) : resolve())),
      ),
    stat: (fd) =>
      new Promise((resolve, reject) =>
        fs.fstat(fd, { bigint: true }, (error, stats) => {
          if (error) return reject(error);
          const isBlockDevice = stats.isBlockDevice();
          let size = Number(stats.size);
          if (isBlockDevice) {
            if (!linux) {
              return reject(
                Object.assign(new Error('the size of a block device needs @virtkit/linux'), {
                  code: 'ENOSYS',
                }),
              );
            }
            try {
              size = linux.blockDeviceSize(fd);
            } catch (sizeError) {
              return reject(sizeError);
            }
          }
          resolve({
            size,
            blocks: Number(stats.blocks),
            isFile: stats.isFile(),
            isBlockDevice,
            dev: stats.dev.toString(),
            rdev: stats.rdev.toString(),
            ino: stats.ino.toString(),
          });
        }),
      ),
    preadv: (fd, buffers, position) =>
      new Promise((resolve, reject) =>
        fs.readv(fd, buffers as Uint8Array[], position, callback(resolve, reject)),
      ),
    pwritev: (fd, buffers, position) =>
      new Promise((resolve, reject) =>
        fs.writev(fd, buffers as Uint8Array[], position, callback(resolve, reject)),
      ),
    fdatasync: (fd) =>
      new Promise((resolve, reject) =>
        fs.fdatasync(fd, (error) => (error ? reject(error) : resolve())),
      ),
  };
  if (linux) {
    io.fallocate = (fd, mode, offset, length) => linux.fallocateAsync(fd, mode, offset, length);
    io.addressOf = (view) => linux.addressOf(view);
    io.alignedBuffer = (length, alignment) => linux.alignedBuffer(length, alignment);
    io.logicalBlockSize = (fd) => linux.logicalBlockSize(fd);
    io.inMemory = (fd) => {
      const type = linux.fileSystemType(fd);
      return type === linux.TMPFS_MAGIC || type === linux.RAMFS_MAGIC;
    };
    io.hostIo = {
      addressOf: (view) => linux.addressOf(view),
      iovec: (capacity) => new linux.IovecList(capacity),
      preadv: (fd, iov, position) =>
        linux.preadv(fd, iov as InstanceType<Linux['IovecList']>, position),
      pwritev: (fd, iov, position) =>
        linux.pwritev(fd, iov as InstanceType<Linux['IovecList']>, position),
      preadvNoWait: (fd, iov, position) =>
        linux.preadvNoWait(fd, iov as InstanceType<Linux['IovecList']>, position),
      pwritevNoWait: (fd, iov, position) =>
        linux.pwritevNoWait(fd, iov as InstanceType<Linux['IovecList']>, position),
      preadvAsync: (fd, iov, position) =>
        linux.preadvAsync(fd, iov as InstanceType<Linux['IovecList']>, position),
      pwritevAsync: (fd, iov, position) =>
        linux.pwritevAsync(fd, iov as InstanceType<Linux['IovecList']>, position),
    };
  }
  return io;
}

/**
 * Like {@link nodeFileIo}, but `preadv`, `pwritev` and `fdatasync` go through `@virtkit/linux`
 * (koffi calls on worker threads) instead of Node's `fs`. Resolves to `undefined` where the
 * bindings cannot load. See the package README for how the two compare.
 */
export async function linuxFileIo(): Promise<FileIo | undefined> {
  const linux = await loadLinux();
  if (!linux) return undefined;
  const io = await nodeFileIo();
  io.preadv = (fd, buffers, position) => linux.preadvAsync(fd, buffers, position);
  io.pwritev = (fd, buffers, position) => linux.pwritevAsync(fd, buffers, position);
  io.fdatasync = (fd) => linux.fdatasyncAsync(fd);
  return io;
}
