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
