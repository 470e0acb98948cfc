/**
 * Small helpers shared by the ring implementations (split §2.7, packed §2.8).
 */

import { DESCRIPTOR_SIZE, MAX_QUEUE_SIZE } from '../constants.js';
import { formatAddress, VirtkitError } from '../errors.js';
import type { GuestRegion } from '../memory.js';
import type { Segment } from './chain.js';

/** True if `n` is an integer power of two (1, 2, 4, …). */
export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 0x4000_0000;
}

/** True if `size` is a valid split queue size: a power of two from 1 to 32768 (§2.7). */
export function isValidSplitQueueSize(size: number): boolean {
  return isPowerOfTwo(size) && size <= MAX_QUEUE_SIZE;
}

/**
 * The event-index rule of §2.7.7.2 / §2.7.10 (Linux `vring_need_event`): true if `eventIdx` lies
 * in the free-running u16 interval `[oldIdx, newIdx)`, i.e. the other side asked to be told once
 * the index moves past `eventIdx` and this update moved it past.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Byte sizes of the three parts of a split ring of `size` entries (§2.7, event fields included). */
export interface SplitRingBytes {
  /** Descriptor table: 16 bytes per descriptor. */
  readonly desc: number;
  /** Available ring: flags, idx, `size` u16 entries, used_event. */
  readonly avail: number;
  /** Used ring: flags, idx, `size` 8-byte elements, avail_event. */
  readonly used: number;
}

/** Byte sizes of a split ring's descriptor table, available ring and used ring (§2.7). */
export function splitRingBytes(size: number): SplitRingBytes {
  return { desc: DESCRIPTOR_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

/**
 * A `Uint16Array` over `[address, address + byteLength)` of `region` (which must contain it), or
 * `undefined` when that range does not start on a 2-byte boundary of the backing buffer.
 * Rings use typed arrays rather than the DataView so that index fields can go through `Atomics`.
 */
export function regionUint16Array(
  region: GuestRegion,
  address: number,
  byteLength: number,
): Uint16Array | undefined {
  const offset = region.bytes.byteOffset + (address - region.guestAddress);
  if (offset % 2 !== 0) return undefined;
  return new Uint16Array(region.bytes.buffer, offset, byteLength >>> 1);
}

/** Like {@link regionUint16Array} with 4-byte elements (`byteLength` is rounded down). */
export function regionUint32Array(
  region: GuestRegion,
  address: number,
  byteLength: number,
): Uint32Array | undefined {
  const offset = region.bytes.byteOffset + (address - region.guestAddress);
  if (offset % 4 !== 0) return undefined;
  return new Uint32Array(region.bytes.buffer, offset, byteLength >>> 2);
}

/**
 * Formats a 64-bit guest address given as two u32 halves, for messages (exact even when it is
 * beyond 2^53, which is exactly when it gets reported).
 */
export function formatAddressParts(low: number, high: number): string {
  return formatAddress((BigInt(high >>> 0) << 32n) | BigInt(low >>> 0));
}

/**
 * Checks a segment a driver-side caller passed can be put in a descriptor (a guest address that
 * is a safe integer, a 32-bit length); returns its length. Used by both driver queues.
 */
export function checkDriverSegment(segment: Segment): number {
  const { addr, len } = segment;
  if (
    !Number.isSafeInteger(addr) ||
    addr < 0 ||
    !Number.isInteger(len) ||
    len < 0 ||
    len > 0xffff_ffff
  ) {
    throw new VirtkitError(
      'DRIVER',
      `segment of ${len} bytes at ${Number.isSafeInteger(addr) && addr >= 0 ? formatAddress(addr) : String(addr)} is not a valid guest buffer: it needs a 64-bit guest address and a 32-bit length`,
    );
  }
  return len;
}
