/**
 * What a virtio-blk device needs from its storage. The device checks every guest request against
 * {@link BlockBackend.capacity} before calling a backend; backends check again and refuse (throw)
 * anything outside `[0, capacity)`, so a device bug cannot write outside the image either.
 */

import type { GuestMemory, Segment } from '@virtkit/core';

/**
 * Storage behind a block device: a byte array of {@link capacity} bytes.
 *
 * Methods may complete synchronously (return nothing) or asynchronously (return a promise); the
 * device handles both, and keeps many calls in flight at once. A failure (throw or rejection)
 * becomes VIRTIO_BLK_S_IOERR for the request that caused it.
 *
 * @example
 * ```ts
 * const disk: BlockBackend = new MemoryBackend({ size: 1 << 20 });
 * disk.write(0, [new Uint8Array(512).fill(7)]);
 * ```
 */
export interface BlockBackend {
  /** Size in bytes; a multiple of 512. */
  readonly capacity: number;
  /** True if writes are refused (the device then offers VIRTIO_BLK_F_RO). */
  readonly readOnly: boolean;
  /**
   * True while a discard, or a write-zeroes allowed to unmap, can deallocate storage. A backend
   * may turn it off when it learns that its storage cannot (e.g. the file system refuses hole
   * punching); the device then updates `write_zeroes_may_unmap`.
   */
  readonly canUnmap: boolean;
  /** A stable identifier for GET_ID when the user gives no serial (at most 20 ASCII bytes). */
  readonly defaultSerial?: string;

  /** Fills `buffers`, in order, with the bytes at `offset` (their total length of them). */
  read(offset: number, buffers: readonly Uint8Array[]): void | Promise<void>;
  /** Stores the bytes of `buffers`, in order, at `offset`. */
  write(offset: number, buffers: readonly Uint8Array[]): void | Promise<void>;
  /**
   * Optional form of {@link read} for backends that do vectored I/O on host addresses: the guest
   * ranges to fill (checked against `memory` when the chain was popped) instead of one view per
   * range. The device calls it in place of `read` when present.
   */
  readGuest?(offset: number, memory: GuestMemory, ranges: readonly Segment[]): void | Promise<void>;
  /** Optional form of {@link write} over guest ranges (see {@link readGuest}). */
  writeGuest?(
    offset: number,
    memory: GuestMemory,
    ranges: readonly Segment[],
  ): void | Promise<void>;
  /** Makes every completed write stable (survives a host crash). */
  flush(): void | Promise<void>;
  /**
   * The guest no longer needs `[offset, offset + length)`. Reads of it afterwards may return old
   * data or zeroes. Deallocates where the storage can; otherwise does nothing.
   */
  discard(offset: number, length: number): void | Promise<void>;
  /**
   * Makes `[offset, offset + length)` read as zeroes. With `unmap`, the backend may deallocate
   * the range instead of writing zeroes (reads must still return zeroes).
   */
  writeZeroes(offset: number, length: number, unmap: boolean): void | Promise<void>;
  /** Releases the storage (closes the file). Calls afterwards fail. */
  close(): Promise<void>;
}
