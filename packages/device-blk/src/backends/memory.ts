/**
 * An in-memory disk: a byte array that lives as long as the device. For tests, scratch disks and
 * browsers. Every call completes synchronously.
 */

import { SECTOR_SIZE } from '../constants.js';
import { BlockError } from '../errors.js';
import { assertInImage } from './range.js';
import type { BlockBackend } from './types.js';

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /** Size in bytes (a positive multiple of 512). Required unless `data` is given. */
  readonly size?: number;
  /** Initial contents, used as the disk itself (not copied); its length must be a multiple of 512. */
  readonly data?: Uint8Array;
  /** Refuse writes (default false). */
  readonly readOnly?: boolean;
}

/**
 * A disk held in memory.
 *
 * @example
 * ```ts
 * const disk = new MemoryBackend({ size: 64 << 20 });
 * const device = new BlockDevice({ backend: disk });
 * ```
 */
export class MemoryBackend implements BlockBackend {
  readonly capacity: number;
  readonly readOnly: boolean;
  /** Zeroing a range of an array always "deallocates" it as far as the guest can tell. */
  readonly canUnmap = true;
  /** The disk's bytes (live: tests may inspect or change them). */
  readonly data: Uint8Array;
  #closed = false;

  constructor(options: MemoryBackendOptions) {
    const size = options.data?.length ?? options.size;
    if (size === undefined || !Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE) {
      throw new BlockError(
        'BLK_IMAGE_SIZE',
        `in-memory disk size ${size} is not a positive multiple of ${SECTOR_SIZE} bytes`,
      );
    }
    if (options.size !== undefined && options.data && options.size !== options.data.length) {
      throw new BlockError(
        'BLK_IMAGE_SIZE',
        `in-memory disk size ${options.size} differs from its ${options.data.length}-byte data`,
      );
    }
    try {
      this.data = options.data ?? new Uint8Array(size);
    } catch (error) {
      throw new BlockError('BLK_IMAGE_SIZE', `cannot allocate a ${size}-byte in-memory disk`, {
        cause: error,
      });
    }
    this.capacity = size;
    this.readOnly = options.readOnly ?? false;
  }

  read(offset: number, buffers: readonly Uint8Array[]): void {
    this.#check(offset, buffers, false);
    let at = offset;
    for (const buffer of buffers) {
      buffer.set(this.data.subarray(at, at + buffer.length));
      at += buffer.length;
    }
  }

  write(offset: number, buffers: readonly Uint8Array[]): void {
    this.#check(offset, buffers, true);
    let at = offset;
    for (const buffer of buffers) {
      this.data.set(buffer, at);
      at += buffer.length;
    }
  }

  flush(): void {
    this.#open();
  }

  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, _unmap: boolean): void {
    this.#open();
    this.#writable();
    assertInImage(offset, length, this.capacity);
    this.data.fill(0, offset, offset + length);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #check(offset: number, buffers: readonly Uint8Array[], write: boolean): void {
    this.#open();
    if (write) this.#writable();
    let length = 0;
    for (const buffer of buffers) length += buffer.length;
    assertInImage(offset, length, this.capacity);
  }

  #open(): void {
    if (this.#closed) throw new BlockError('BLK_BACKEND_CLOSED', 'in-memory disk is closed');
  }

  #writable(): void {
    if (this.readOnly) {
      throw new BlockError('BLK_BACKEND_READ_ONLY', 'in-memory disk is read-only');
    }
  }
}
