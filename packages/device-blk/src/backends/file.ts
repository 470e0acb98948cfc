/**
 * A raw disk image (or a block device) as a block backend. Reads and writes are positioned,
 * vectored and zero-copy: the guest's buffers go to `preadv`/`pwritev` as they are. FLUSH is
 * `fdatasync`. DISCARD punches holes (`fallocate(PUNCH_HOLE | KEEP_SIZE)`); where the file system
 * cannot, a discard does nothing (Linux allows that: a discard is a hint) and WRITE_ZEROES writes
 * zeroes. With `direct`, the image is opened `O_DIRECT` (no host page cache); guest buffers that
 * are not aligned for it go through aligned bounce buffers.
 */

import type { GuestMemory, GuestRegion, Segment } from '@virtkit/core';
import { SECTOR_SIZE } from '../constants.js';
import { BlockError } from '../errors.js';
import {
  Fallocate,
  type FileInfo,
  type FileIo,
  type HostIovec,
  type HostVectorIo,
  isUnsupported,
  nodeFileIo,
  OpenFlags,
} from './file-io.js';
import { assertInImage, totalLength, totalRangeLength, viewsOf } from './range.js';
import type { BlockBackend } from './types.js';

/** Options of {@link openFileBackend}. */
export interface FileBackendOptions {
  /** Path of a raw image file or a block device. */
  readonly path: string;
  /** Open read-only and refuse writes (default false). */
  readonly readOnly?: boolean;
  /** Open with `O_DIRECT`, bypassing the host page cache (default false). */
  readonly direct?: boolean;
  /**
   * The image size must be a multiple of this (default 512). The device's logical block size
   * goes here, so the last block is never partial.
   */
  readonly sizeAlignment?: number;
  /**
   * How reads and writes run (default `threads`). `threads`: what may wait for a disk runs on
   * Node's thread pool, many at once (the right choice for a real disk); what cannot wait runs
   * on the calling thread, because a hand-off between threads costs more than copying a
   * megabyte: every request when the image is on tmpfs or ramfs (memory), and a read whose data
   * the page cache holds (`RWF_NOWAIT`, where the file system supports it). `sync`: everything on
   * the calling thread, like Firecracker's default `Sync` engine: the event loop waits for each
   * call, but a request costs the fewest CPU cycles, which is fastest when the image is in memory
   * or the page cache. `sync` and the shortcuts of `threads` need `@virtkit/linux`; without it,
   * `threads` uses Node's `fs`.
   */
  readonly aio?: BlockAio;
  /** System calls to use (default {@link nodeFileIo}); tests pass spies. */
  readonly io?: FileIo;
}

/** How a {@link FileBackend} runs reads and writes (see {@link FileBackendOptions.aio}). */
export type BlockAio = 'threads' | 'sync';

/** Largest zero-filled buffer WRITE_ZEROES writes from when it cannot deallocate. */
const ZERO_CHUNK = 1 << 20;
/** Linux `UIO_MAXIOV`: the most buffers one `preadv`/`pwritev` takes. */
const IOV_MAX = 1024;
/** Alignment of bounce buffers' memory: a page satisfies every device's DMA alignment. */
const PAGE_SIZE = 4096;

/**
 * Opens a raw image. The image size must be a positive multiple of `sizeAlignment` (512 by
 * default): a partial last sector cannot be addressed by the protocol, so such an image is
 * refused rather than silently shortened.
 *
 * @example
 * ```ts
 * const backend = await openFileBackend({ path: 'disk.img' });
 * const device = new BlockDevice({ backend });
 * ```
 */
export async function openFileBackend(options: FileBackendOptions): Promise<FileBackend> {
  const io = options.io ?? (await nodeFileIo());
  const readOnly = options.readOnly ?? false;
  const direct = options.direct ?? false;
  if (direct && (!OpenFlags.DIRECT || !io.alignedBuffer || !io.addressOf)) {
    throw new BlockError(
      'BLK_OPTIONS',
      'direct I/O needs O_DIRECT and @virtkit/linux (Linux on x86_64)',
    );
  }
  const flags =
    (readOnly ? OpenFlags.RDONLY : OpenFlags.RDWR) |
    (direct ? OpenFlags.DIRECT : 0) |
    OpenFlags.CLOEXEC;
  let fd: number;
  try {
    fd = await io.open(options.path, flags);
  } catch (error) {
    throw new BlockError(
      'BLK_IMAGE_OPEN',
      `cannot open disk image '${options.path}'${direct ? ' for direct I/O' : ''}: ${describe(error)}`,
      { cause: error },
    );
  }
  try {
    const info = await io.stat(fd);
    const alignment = options.sizeAlignment ?? SECTOR_SIZE;
    if (!info.isFile && !info.isBlockDevice) {
      throw new BlockError(
        'BLK_IMAGE_OPEN',
        `disk image '${options.path}' is neither a regular file nor a block device`,
      );
    }
    if (info.size <= 0 || info.size % alignment !== 0) {
      throw new BlockError(
        'BLK_IMAGE_SIZE',
        `disk image '${options.path}' is ${info.size} bytes, not a positive multiple of ${alignment}`,
      );
    }
    let directAlignment = SECTOR_SIZE;
    if (direct && info.isBlockDevice && io.logicalBlockSize) {
      directAlignment = Math.max(directAlignment, io.logicalBlockSize(fd));
    }
    if (direct && alignment % directAlignment !== 0) {
      throw new BlockError(
        'BLK_OPTIONS',
        `direct I/O on '${options.path}' needs ${directAlignment}-byte blocks; set logical_block_size=${directAlignment}`,
      );
    }
    return new FileBackend(fd, io, info, {
      path: options.path,
      readOnly,
      directAlignment: direct ? directAlignment : 0,
      aio: options.aio ?? 'threads',
      // A block device's node sits on devtmpfs, which is tmpfs too: only a regular file's
      // file system says where its data lives.
      memoryBacked: info.isFile && inMemory(io, fd),
    });
  } catch (error) {
    await io.close(fd).catch(() => {});
    if (error instanceof BlockError) throw error;
    throw new BlockError(
      'BLK_IMAGE_OPEN',
      `cannot inspect disk image '${options.path}': ${describe(error)}`,
      { cause: error },
    );
  }
}

/** Counters of a {@link FileBackend} (plain data). */
export interface FileBackendStats {
  /** `fdatasync` calls made. */
  syncs: number;
  /** Holes punched. */
  punches: number;
  /** Discards skipped because the file system cannot punch holes. */
  discardsIgnored: number;
  /** Direct I/O requests that went through a bounce buffer. */
  bounced: number;
  /**
   * `aio=threads` requests served (in full or in part) on the calling thread by a read or write
   * that does not wait (`RWF_NOWAIT`): the page cache held the data.
   */
  noWait: number;
}

/** A raw image opened by {@link openFileBackend}. */
export class FileBackend implements BlockBackend {
  readonly capacity: number;
  readonly readOnly: boolean;
  readonly path: string;
  /** `O_DIRECT` alignment in bytes, or 0 when the image uses the page cache. */
  readonly directAlignment: number;
  /** How reads and writes run. */
  readonly aio: BlockAio;
  readonly defaultSerial: string;
  /**
   * The image is on tmpfs or ramfs: its reads and writes copy memory and never wait for a disk,
   * so `aio=threads` runs them on the calling thread as `aio=sync` does.
   */
  readonly memoryBacked: boolean;
  readonly stats: FileBackendStats = {
    syncs: 0,
    punches: 0,
    discardsIgnored: 0,
    bounced: 0,
    noWait: 0,
  };
  readonly #fd: number;
  readonly #io: FileIo;
  #canPunch: boolean;
  #canZeroRange: boolean;
  #zeroes: Uint8Array | undefined;
  #closed = false;
  /** Transfers run on the calling thread: `aio=sync`, or an image in memory. */
  readonly #here: boolean;
  /** `aio=threads` tries reads (writes) with `RWF_NOWAIT` first; off once the file system refuses. */
  #readNoWait: boolean;
  #writeNoWait: boolean;
  /** aio=sync: the reused iovec, and the host base of the guest region used last. */
  #iov: HostIovec | null = null;
  #lastRegion: GuestRegion | null = null;
  #lastBase = 0;

  /** Use {@link openFileBackend}. */
  constructor(
    fd: number,
    io: FileIo,
    info: FileInfo,
    options: {
      path: string;
      readOnly: boolean;
      directAlignment: number;
      aio?: BlockAio;
      memoryBacked?: boolean;
    },
  ) {
    this.#fd = fd;
    this.#io = io;
    this.capacity = info.size;
    this.readOnly = options.readOnly;
    this.path = options.path;
    this.directAlignment = options.directAlignment;
    this.aio = options.aio ?? 'threads';
    if (this.aio === 'sync' && !io.hostIo) {
      throw new BlockError('BLK_OPTIONS', 'aio=sync needs @virtkit/linux (Linux on x86_64)');
    }
    this.memoryBacked = (options.memoryBacked ?? false) && io.hostIo !== undefined;
    this.#here = this.aio === 'sync' || this.memoryBacked;
    // Under O_DIRECT a read that does not wait for locks still waits for the disk.
    const noWait = !this.#here && !this.directAlignment;
    this.#readNoWait = noWait && io.hostIo?.preadvNoWait !== undefined;
    this.#writeNoWait = noWait && io.hostIo?.pwritevNoWait !== undefined;
    this.#canPunch = io.fallocate !== undefined;
    this.#canZeroRange = io.fallocate !== undefined;
    // As Firecracker: device, rdev and inode make an ID that is stable across runs.
    this.defaultSerial = `${info.dev}${info.rdev}${info.ino}`.slice(0, 20);
  }

  /** The open descriptor (for the VMM's diagnostics). */
  get fd(): number {
    return this.#fd;
  }

  get canUnmap(): boolean {
    return this.#canPunch && !this.readOnly;
  }

  async read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.#check(offset, totalLength(buffers), false);
    if (this.directAlignment && !this.#aligned(buffers)) {
      this.stats.bounced++;
      const bounce = this.#io.alignedBuffer!(totalLength(buffers), PAGE_SIZE);
      await this.#transfer('read', offset, [bounce]);
      scatter(bounce, buffers);
      return;
    }
    await this.#transfer('read', offset, buffers);
  }

  async write(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.#check(offset, totalLength(buffers), true);
    if (this.directAlignment && !this.#aligned(buffers)) {
      this.stats.bounced++;
      const bounce = this.#io.alignedBuffer!(totalLength(buffers), PAGE_SIZE);
      gather(buffers, bounce);
      await this.#transfer('write', offset, [bounce]);
      return;
    }
    await this.#transfer('write', offset, buffers);
  }

  /**
   * A read into guest memory: one `preadv` on host addresses, no views (on this thread with
   * `aio=sync`, on a worker thread with `aio=threads`).
   */
  readGuest(offset: number, memory: GuestMemory, ranges: readonly Segment[]): void | Promise<void> {
    return this.#guestTransfer('read', offset, memory, ranges);
  }

  /** A write from guest memory: one `pwritev` on host addresses, no views (see `readGuest`). */
  writeGuest(
    offset: number,
    memory: GuestMemory,
    ranges: readonly Segment[],
  ): void | Promise<void> {
    return this.#guestTransfer('write', offset, memory, ranges);
  }

  async flush(): Promise<void> {
    this.#open();
    this.stats.syncs++;
    await this.#io.fdatasync(this.#fd);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    if (!(await this.#punch(offset, length))) this.stats.discardsIgnored++;
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.#check(offset, length, true);
    if (length === 0) return;
    if (unmap && (await this.#punch(offset, length))) return;
    if (this.#canZeroRange) {
      try {
        await this.#io.fallocate!(
          this.#fd,
          Fallocate.ZERO_RANGE | Fallocate.KEEP_SIZE,
          offset,
          length,
        );
        return;
      } catch (error) {
        if (!isUnsupported(error)) throw error;
        this.#canZeroRange = false;
      }
    }
    await this.#writeZeroBytes(offset, length);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#io.close(this.#fd);
  }

  /** Punches a hole; false if the file system cannot (remembered: later calls skip the try). */
  async #punch(offset: number, length: number): Promise<boolean> {
    if (!this.#canPunch) return false;
    try {
      await this.#io.fallocate!(
        this.#fd,
        Fallocate.PUNCH_HOLE | Fallocate.KEEP_SIZE,
        offset,
        length,
      );
      this.stats.punches++;
      return true;
    } catch (error) {
      if (!isUnsupported(error)) throw error;
      this.#canPunch = false;
      return false;
    }
  }

  async #writeZeroBytes(offset: number, length: number): Promise<void> {
    const chunk = Math.min(ZERO_CHUNK, length);
    let zeroes = this.#zeroes;
    if (!zeroes || zeroes.length < chunk) {
      zeroes = this.directAlignment
        ? this.#io.alignedBuffer!(ZERO_CHUNK, PAGE_SIZE)
        : new Uint8Array(ZERO_CHUNK);
      this.#zeroes = zeroes;
    }
    // One buffer repeated in the iovec: up to 1 GiB of zeroes per call from 1 MiB of memory.
    const views: Uint8Array[] = [];
    for (let left = length; left > 0; left -= ZERO_CHUNK) {
      views.push(zeroes.subarray(0, Math.min(ZERO_CHUNK, left)));
    }
    await this.#transfer('write', offset, views);
  }

  /**
   * Moves all of `buffers` to or from the file at `offset`, repeating the call after short
   * transfers (and in batches of 1024 buffers). A read that meets the end of the file (the image
   * shrank under us) fills the rest with zeroes, as a hole would.
   */
  async #transfer(
    direction: 'read' | 'write',
    offset: number,
    buffers: readonly Uint8Array[],
  ): Promise<void> {
    let pending = buffers.filter((buffer) => buffer.length > 0);
    let position = offset;
    while (pending.length > 0) {
      const batch = pending.length > IOV_MAX ? pending.slice(0, IOV_MAX) : pending;
      const done =
        direction === 'read'
          ? await this.#io.preadv(this.#fd, batch, position)
          : await this.#io.pwritev(this.#fd, batch, position);
      if (done === 0) {
        if (direction === 'write') {
          throw new BlockError(
            'BLK_IMAGE_OPEN',
            `write to '${this.path}' at ${position} made no progress`,
          );
        }
        for (const buffer of pending) buffer.fill(0);
        return;
      }
      position += done;
      pending = advance(pending, done);
    }
  }

  /**
   * Moves the guest ranges to or from the file at `offset` with `preadv`/`pwritev` on host
   * addresses (region base + offset): on this thread with `aio=sync`, on a worker thread with
   * `aio=threads`. The usual request (each range inside one region, at most 1024 of them, moved
   * by one call) goes from ranges to iovec in one pass; the rest (a range spanning regions, more
   * than 1024 buffers, a short transfer) goes through {@link #pieces} and a cursor. Without host
   * I/O, or with unaligned buffers under `O_DIRECT`, it goes through views (and a bounce buffer).
   */
  #guestTransfer(
    direction: 'read' | 'write',
    offset: number,
    memory: GuestMemory,
    ranges: readonly Segment[],
  ): void | Promise<void> {
    const host = this.#io.hostIo;
    const here = this.#here;
    if (!host || !(here || host.preadvAsync)) {
      return this.#viewTransfer(direction, offset, memory, ranges, here);
    }
    // This thread's iovec, reused, for a transfer tried here; a worker's call needs its own.
    const tryHere = here || (direction === 'read' ? this.#readNoWait : this.#writeNoWait);
    let iov = tryHere ? this.#iovec(host) : this.#workerIovec(host, ranges.length);
    const filled = this.#fill(host, memory, ranges, iov);
    const length = filled >= 0 ? filled : totalRangeLength(ranges);
    this.#check(offset, length, direction === 'write');
    if (filled < 0) return this.#pieceTransfer(host, direction, offset, length, memory, ranges);
    if (here) {
      const done =
        direction === 'read'
          ? host.preadv(this.#fd, iov, offset)
          : host.pwritev(this.#fd, iov, offset);
      if (done === length) return;
      return this.#pieceTransfer(host, direction, offset, length, memory, ranges, done);
    }
    if (tryHere) {
      const cached = length > 0 ? this.#noWait(host, direction, iov, offset) : 0;
      if (cached > 0) {
        this.stats.noWait++;
        if (cached === length) return;
        return this.#pieceTransfer(host, direction, offset, length, memory, ranges, cached);
      }
      iov = this.#workerIovec(host, ranges.length);
      this.#fill(host, memory, ranges, iov);
    }
    const started =
      direction === 'read'
        ? host.preadvAsync!(this.#fd, iov, offset)
        : host.pwritevAsync!(this.#fd, iov, offset);
    return started.then((done) => {
      if (done === length) return;
      return this.#pieceTransfer(host, direction, offset, length, memory, ranges, done);
    });
  }

  /** A new iovec for a worker thread's call on `count` pieces (untouched until it settles). */
  #workerIovec(host: HostVectorIo, count: number): HostIovec {
    return host.iovec(Math.min(Math.max(count, 1), IOV_MAX));
  }

  /**
   * `aio=threads`: moves what can be moved without waiting (`RWF_NOWAIT`) on this thread; the
   * byte count, 0 when nothing could (or the file system cannot: then it is not tried again).
   */
  #noWait(host: HostVectorIo, direction: 'read' | 'write', iov: HostIovec, offset: number): number {
    const read = direction === 'read';
    if (read ? !this.#readNoWait : !this.#writeNoWait) return 0;
    try {
      return (
        (read
          ? host.preadvNoWait!(this.#fd, iov, offset)
          : host.pwritevNoWait!(this.#fd, iov, offset)) ?? 0
      );
    } catch (error) {
      // EOPNOTSUPP: the file system cannot (tmpfs; ext4 for buffered writes). EINVAL: a kernel
      // without RWF_NOWAIT. Anything else the worker thread's call reports again.
      if (!isUnsupported(error) && (error as { code?: unknown }).code !== 'EINVAL') throw error;
      if (read) this.#readNoWait = false;
      else this.#writeNoWait = false;
      return 0;
    }
  }

  /**
   * Fills `iov` with the host address and length of each range, in one pass; the total length,
   * or -1 when that cannot be done (a range spans regions, more ranges than `iov` holds, or a
   * buffer unaligned under `O_DIRECT`), leaving `iov` to be refilled.
   */
  #fill(
    host: HostVectorIo,
    memory: GuestMemory,
    ranges: readonly Segment[],
    iov: HostIovec,
  ): number {
    iov.clear();
    const alignment = this.directAlignment;
    // The region of the previous range (none carried over between requests: the memory may
    // have been remapped since).
    let region: GuestRegion | null = null;
    let base = 0;
    let total = 0;
    for (let i = 0; i < ranges.length; i++) {
      const range = ranges[i]!;
      const addr = range.addr;
      const len = range.len;
      if (len === 0) continue;
      if (region === null || addr < region.guestAddress || len > region.end - addr) {
        const found = memory.findRegion(addr, len);
        if (!found) return -1;
        region = found;
        base = this.#baseOf(found, host);
      }
      const address = base + addr - region.guestAddress;
      if (alignment && (address % alignment !== 0 || len % alignment !== 0)) return -1;
      if (iov.count === iov.capacity) return -1;
      iov.pushAddress(address, len);
      total += len;
    }
    return total;
  }

  /** {@link #guestTransfer} through views, when there is no host I/O to use. */
  #viewTransfer(
    direction: 'read' | 'write',
    offset: number,
    memory: GuestMemory,
    ranges: readonly Segment[],
    sync: boolean,
  ): void | Promise<void> {
    this.#check(offset, totalRangeLength(ranges), direction === 'write');
    const views = viewsOf(memory, ranges);
    if (sync) return this.#syncBounce(direction, offset, views);
    return direction === 'read' ? this.read(offset, views) : this.write(offset, views);
  }

  /**
   * The general case of {@link #guestTransfer}: the ranges as host pieces (views and a bounce
   * buffer when unaligned under `O_DIRECT`), moved from byte `done` on, in batches of 1024 and
   * repeating after short transfers.
   */
  #pieceTransfer(
    host: HostVectorIo,
    direction: 'read' | 'write',
    offset: number,
    length: number,
    memory: GuestMemory,
    ranges: readonly Segment[],
    done = 0,
  ): void | Promise<void> {
    const pieces = this.#pieces(host, memory, ranges);
    if (!pieces) {
      const views = viewsOf(memory, ranges);
      if (this.#here) return this.#syncBounce(direction, offset, views);
      return direction === 'read' ? this.read(offset, views) : this.write(offset, views);
    }
    // A read that met the end of the file (the image shrank under us): the rest reads as a hole.
    const finish = (moved: number) => {
      if (moved < length) zeroFrom(viewsOf(memory, ranges), moved);
    };
    const cursor = new PieceCursor(pieces, offset);
    if (done > 0) cursor.advance(done);
    if (this.#here) return finish(this.#hostTransfer(direction, cursor));
    return this.#hostTransferAsync(direction, cursor, pieces.addresses.length).then(finish);
  }

  /**
   * Host address and length of each piece of `ranges` (a range spanning two regions is two
   * pieces); `null` when one is unaligned under `O_DIRECT` or there is no host I/O.
   */
  #pieces(host: HostVectorIo, memory: GuestMemory, ranges: readonly Segment[]): Pieces | null {
    const addresses: number[] = [];
    const lengths: number[] = [];
    for (let i = 0; i < ranges.length; i++) {
      const range = ranges[i]!;
      if (range.len === 0) continue;
      const region = memory.findRegion(range.addr, range.len);
      if (region) {
        addresses.push(this.#baseOf(region, host) + range.addr - region.guestAddress);
        lengths.push(range.len);
      } else {
        for (const view of memory.views(range.addr, range.len)) {
          addresses.push(host.addressOf(view));
          lengths.push(view.length);
        }
      }
    }
    const alignment = this.directAlignment;
    if (alignment) {
      for (let i = 0; i < addresses.length; i++) {
        if (addresses[i]! % alignment !== 0 || lengths[i]! % alignment !== 0) return null;
      }
    }
    return { addresses, lengths };
  }

  /**
   * Moves the pieces from `cursor` on to or from the file on this thread. Returns the bytes
   * moved in all: fewer only when a read met the end of the file. A write that makes no progress
   * throws.
   */
  #hostTransfer(direction: 'read' | 'write', cursor: PieceCursor): number {
    const host = this.#io.hostIo!;
    const iov = this.#iovec(host);
    while (!cursor.done) {
      cursor.fill(iov);
      const at = cursor.position;
      const done =
        direction === 'read' ? host.preadv(this.#fd, iov, at) : host.pwritev(this.#fd, iov, at);
      if (!this.#advance(cursor, direction, done)) break;
    }
    return cursor.moved;
  }

  /** {@link #hostTransfer} on a worker thread, with an iovec of its own (requests overlap). */
  async #hostTransferAsync(
    direction: 'read' | 'write',
    cursor: PieceCursor,
    count: number,
  ): Promise<number> {
    const host = this.#io.hostIo!;
    const iov = this.#workerIovec(host, count);
    while (!cursor.done) {
      cursor.fill(iov);
      const at = cursor.position;
      const done =
        direction === 'read'
          ? await host.preadvAsync!(this.#fd, iov, at)
          : await host.pwritevAsync!(this.#fd, iov, at);
      if (!this.#advance(cursor, direction, done)) break;
    }
    return cursor.moved;
  }

  /**
   * Moves `cursor` past `done` bytes; false when a read met the end of the file. A write that
   * made no progress throws.
   */
  #advance(cursor: PieceCursor, direction: 'read' | 'write', done: number): boolean {
    if (done === 0) {
      if (direction === 'read') return false;
      throw new BlockError(
        'BLK_IMAGE_OPEN',
        `write to '${this.path}' at ${cursor.position} made no progress`,
      );
    }
    cursor.advance(done);
    return true;
  }

  /** `aio=sync` under `O_DIRECT` with unaligned guest buffers: through an aligned bounce buffer. */
  #syncBounce(direction: 'read' | 'write', offset: number, views: readonly Uint8Array[]): void {
    this.stats.bounced++;
    const length = totalLength(views);
    const bounce = this.#io.alignedBuffer!(length, PAGE_SIZE);
    if (direction === 'write') gather(views, bounce);
    const base = this.#io.hostIo!.addressOf(bounce);
    const moved = this.#hostTransfer(
      direction,
      new PieceCursor({ addresses: [base], lengths: [length] }, offset),
    );
    if (direction === 'read') {
      bounce.fill(0, moved);
      scatter(bounce, views);
    }
  }

  #iovec(host: HostVectorIo): HostIovec {
    if (!this.#iov) this.#iov = host.iovec();
    return this.#iov;
  }

  /** Host address of a guest region's first byte (the last one asked for is remembered). */
  #baseOf(region: GuestRegion, host: HostVectorIo): number {
    if (region !== this.#lastRegion) {
      this.#lastBase = host.addressOf(region.bytes);
      this.#lastRegion = region;
    }
    return this.#lastBase;
  }

  #aligned(buffers: readonly Uint8Array[]): boolean {
    const alignment = this.directAlignment;
    const addressOf = this.#io.addressOf!;
    for (const buffer of buffers) {
      if (buffer.length % alignment !== 0 || addressOf(buffer) % alignment !== 0) return false;
    }
    return true;
  }

  #check(offset: number, length: number, write: boolean): void {
    this.#open();
    if (write && this.readOnly) {
      throw new BlockError('BLK_BACKEND_READ_ONLY', `disk image '${this.path}' is read-only`);
    }
    assertInImage(offset, length, this.capacity);
  }

  #open(): void {
    if (this.#closed) {
      throw new BlockError('BLK_BACKEND_CLOSED', `disk image '${this.path}' is closed`);
    }
  }
}

/** Copies `views`, in order, into `target`. */
function gather(views: readonly Uint8Array[], target: Uint8Array): void {
  let at = 0;
  for (const view of views) {
    target.set(view, at);
    at += view.length;
  }
}

/** Copies `source`, in order, across `views`. */
function scatter(source: Uint8Array, views: readonly Uint8Array[]): void {
  let at = 0;
  for (const view of views) {
    view.set(source.subarray(at, at + view.length));
    at += view.length;
  }
}

/** Zeroes `views` from byte `start` of their concatenation on. */
function zeroFrom(views: readonly Uint8Array[], start: number): void {
  let at = start;
  for (const view of views) {
    if (at < view.length) view.fill(0, Math.max(at, 0));
    at -= view.length;
  }
}

/** Drops the first `count` bytes from a list of buffers. */
function advance(buffers: readonly Uint8Array[], count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = count;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    out.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return out;
}

/** True if the file `fd` is on tmpfs or ramfs (false when that cannot be told). */
function inMemory(io: FileIo, fd: number): boolean {
  try {
    return io.inMemory?.(fd) ?? false;
  } catch {
    return false;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Host pieces of a transfer: `addresses[i]` and `lengths[i]`. */
interface Pieces {
  readonly addresses: readonly number[];
  readonly lengths: readonly number[];
}

/** Where a transfer is in its pieces, across short transfers and batches of `IOV_MAX`. */
class PieceCursor {
  readonly #addresses: readonly number[];
  readonly #lengths: readonly number[];
  readonly #start: number;
  #index = 0;
  /** Bytes of piece `#index` already moved. */
  #skip = 0;
  /** The file position of the next byte. */
  position: number;

  constructor(pieces: Pieces, position: number) {
    this.#addresses = pieces.addresses;
    this.#lengths = pieces.lengths;
    this.#start = position;
    this.position = position;
  }

  get done(): boolean {
    return this.#index >= this.#addresses.length;
  }

  /** Bytes moved so far. */
  get moved(): number {
    return this.position - this.#start;
  }

  /** Fills `iov` with the pieces from here on, as many as fit. */
  fill(iov: HostIovec): void {
    iov.clear();
    for (let i = this.#index; i < this.#addresses.length && iov.count < iov.capacity; i++) {
      const first = i === this.#index ? this.#skip : 0;
      iov.pushAddress(this.#addresses[i]! + first, this.#lengths[i]! - first);
    }
  }

  /** Moves past `moved` bytes. */
  advance(moved: number): void {
    this.position += moved;
    let left = moved;
    while (left > 0) {
      const rest = this.#lengths[this.#index]! - this.#skip;
      if (left >= rest) {
        left -= rest;
        this.#index++;
        this.#skip = 0;
      } else {
        this.#skip += left;
        left = 0;
      }
    }
  }
}
