import type { GuestMemory, Segment } from '@virtkit/core';
import { BlockError } from '../errors.js';

/**
 * Throws unless `[offset, offset + length)` lies inside `[0, capacity)`. Backends call it on every
 * access: the device has checked already, and this second check keeps the image safe from a
 * device bug.
 */
export function assertInImage(offset: number, length: number, capacity: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset > capacity ||
    length > capacity - offset
  ) {
    throw new BlockError(
      'BLK_BACKEND_RANGE',
      `access of ${length} bytes at offset ${offset} is outside the ${capacity}-byte image`,
    );
  }
}

/** Sum of the buffers' lengths. */
export function totalLength(buffers: readonly Uint8Array[]): number {
  let total = 0;
  for (const buffer of buffers) total += buffer.length;
  return total;
}

/** Sum of the guest ranges' lengths. */
export function totalRangeLength(ranges: readonly Segment[]): number {
  let total = 0;
  for (let i = 0; i < ranges.length; i++) total += ranges[i]!.len;
  return total;
}

/** Zero-copy views of guest `ranges` (a range spanning two regions gives two views). */
export function viewsOf(memory: GuestMemory, ranges: readonly Segment[]): Uint8Array[] {
  const views: Uint8Array[] = [];
  for (let i = 0; i < ranges.length; i++) {
    const range = ranges[i]!;
    const region = memory.findRegion(range.addr, range.len);
    if (region) {
      const at = range.addr - region.guestAddress;
      views.push(region.bytes.subarray(at, at + range.len));
    } else {
      for (const view of memory.views(range.addr, range.len)) views.push(view);
    }
  }
  return views;
}
