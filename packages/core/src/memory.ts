/**
 * Guest memory: regions of guest-physical address space backed by ArrayBuffer or
 * SharedArrayBuffer. Every access is bounds-checked with overflow-safe arithmetic; guest
 * addresses are JavaScript numbers that must be safe integers (< 2^53). 64-bit values from the
 * guest that do not fit are rejected by {@link guestAddressFromParts}, never rounded.
 */

import { formatAddress, GuestMemoryError, VirtkitError } from './errors.js';

// Rings and headers are little-endian (virtio 1.x §2.4 "le" types). Typed arrays use host order,
// and the ring code uses Uint16Array/Uint32Array for its atomic index accesses, so refuse to run
// on a big-endian host rather than corrupt rings there.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new VirtkitError('GUEST_MEMORY_LAYOUT', '@virtkit/core requires a little-endian host');
}

/** Buffers that can back guest memory. */
export type GuestBuffer = ArrayBuffer | SharedArrayBuffer;

/** Describes one region: guest-physical `[guestAddress, guestAddress + size)` backed by `buffer`. */
export interface GuestRegionInit {
  /** Guest-physical address of the first byte. */
  readonly guestAddress: number;
  /** Backing store. */
  readonly buffer: GuestBuffer;
  /** Offset of the region inside `buffer` (default 0). Must be a multiple of 8. */
  readonly byteOffset?: number;
  /** Size in bytes (default: the rest of `buffer`). */
  readonly size?: number;
}

/** Largest guest address (exclusive end) Virtkit accepts: 2^53, the safe-integer limit. */
export const MAX_GUEST_ADDRESS = Number.MAX_SAFE_INTEGER;

/** True if `[address, address + length)` is a valid range of non-negative safe integers. */
export function isSafeRange(address: number, length: number): boolean {
  return (
    Number.isSafeInteger(address) &&
    Number.isSafeInteger(length) &&
    address >= 0 &&
    length >= 0 &&
    length <= MAX_GUEST_ADDRESS - address
  );
}

/**
 * Joins the low and high 32-bit halves of a 64-bit guest address (as transports and rings
 * store them). Returns `undefined` when the address does not fit in a safe integer.
 */
export function guestAddressFromParts(low: number, high: number): number | undefined {
  // 2^53 = 2^21 * 2^32: any high half at or above 2^21 cannot be represented exactly.
  if (high >>> 0 >= 0x200000) return undefined;
  return (high >>> 0) * 0x1_0000_0000 + (low >>> 0);
}

/** Converts a 64-bit guest address to a number, or `undefined` when it is not a safe integer. */
export function guestAddressFromBigInt(value: bigint): number | undefined {
  if (value < 0n || value > BigInt(MAX_GUEST_ADDRESS)) return undefined;
  return Number(value);
}

/** One region of guest memory with its typed views. Offsets into the views are region-relative. */
export class GuestRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddress: number;
  /** Size in bytes. */
  readonly size: number;
  /** Exclusive guest-physical end address. */
  readonly end: number;
  /** The region's bytes. `bytes[0]` is guest address `guestAddress`. */
  readonly bytes: Uint8Array;
  /** A DataView over the same bytes (little-endian accessors). */
  readonly data: DataView;

  constructor(init: GuestRegionInit) {
    const byteOffset = init.byteOffset ?? 0;
    const size = init.size ?? init.buffer.byteLength - byteOffset;
    if (!isSafeRange(init.guestAddress, size) || size === 0) {
      throw new VirtkitError(
        'GUEST_MEMORY_LAYOUT',
        `guest region at ${formatAddress(init.guestAddress)} of ${size} bytes is not a valid range`,
      );
    }
    // Rings are read through typed arrays over the region, so guest addresses that are aligned
    // must map to aligned buffer offsets: both the region's start and its offset are 8-aligned.
    if (init.guestAddress % 8 !== 0) {
      throw new VirtkitError(
        'GUEST_MEMORY_LAYOUT',
        `guest region address ${formatAddress(init.guestAddress)} must be a multiple of 8`,
      );
    }
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset % 8 !== 0) {
      throw new VirtkitError(
        'GUEST_MEMORY_LAYOUT',
        `region byteOffset ${byteOffset} must be a multiple of 8`,
      );
    }
    // A resizable ArrayBuffer could shrink under the cached views, turning guest accesses into
    // exceptions or silent `undefined` reads. (A growable SharedArrayBuffer only grows: fine.)
    if ((init.buffer as { readonly resizable?: boolean }).resizable === true) {
      throw new VirtkitError(
        'GUEST_MEMORY_LAYOUT',
        `guest region at ${formatAddress(init.guestAddress)} is backed by a resizable ArrayBuffer; guest RAM must not shrink`,
      );
    }
    if (byteOffset + size > init.buffer.byteLength) {
      throw new VirtkitError(
        'GUEST_MEMORY_LAYOUT',
        `guest region of ${size} bytes at offset ${byteOffset} does not fit its ${init.buffer.byteLength}-byte buffer`,
      );
    }
    this.guestAddress = init.guestAddress;
    this.size = size;
    this.end = init.guestAddress + size;
    this.bytes = new Uint8Array(init.buffer, byteOffset, size);
    this.data = new DataView(init.buffer, byteOffset, size);
  }

  /** True if `[address, address + length)` lies inside this region. */
  contains(address: number, length: number): boolean {
    return address >= this.guestAddress && length <= this.end - address && address <= this.end;
  }
}

/**
 * Guest-physical memory made of one or more non-overlapping regions.
 *
 * @example
 * ```ts
 * const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 20));
 * memory.writeU32(0x1000, 0xdeadbeef);
 * memory.readU32(0x1000); // 0xdeadbeef
 * ```
 */
export class GuestMemory {
  /** The regions, sorted by guest address. */
  readonly regions: readonly GuestRegion[];
  /** Total bytes of guest memory. */
  readonly totalSize: number;
  // The region of the last successful lookup: rings and buffers cluster, so this hits mostly.
  #last: GuestRegion;

  constructor(regions: readonly GuestRegionInit[]) {
    if (regions.length === 0) {
      throw new VirtkitError('GUEST_MEMORY_LAYOUT', 'guest memory needs at least one region');
    }
    const sorted = regions
      .map((r) => new GuestRegion(r))
      .sort((a, b) => a.guestAddress - b.guestAddress);
    for (let i = 1; i < sorted.length; i++) {
      const previous = sorted[i - 1]!;
      const current = sorted[i]!;
      if (current.guestAddress < previous.end) {
        throw new VirtkitError(
          'GUEST_MEMORY_LAYOUT',
          `guest regions at ${formatAddress(previous.guestAddress)} and ${formatAddress(current.guestAddress)} overlap`,
        );
      }
    }
    this.regions = sorted;
    this.totalSize = sorted.reduce((sum, r) => sum + r.size, 0);
    this.#last = sorted[0]!;
  }

  /** Guest memory of one region starting at `guestAddress` (default 0). */
  static fromBuffer(buffer: GuestBuffer, guestAddress = 0): GuestMemory {
    return new GuestMemory([{ guestAddress, buffer }]);
  }

  /**
   * The region holding all of `[address, address + length)`, or `undefined` if the range is not
   * a safe range or is not inside a single region.
   */
  findRegion(address: number, length: number): GuestRegion | undefined {
    const last = this.#last;
    if (
      address >= last.guestAddress &&
      address <= last.end &&
      length >= 0 &&
      length <= last.end - address
    ) {
      // The comparisons above fail for NaN and for non-integers only by accident; check here.
      return Number.isInteger(address) && Number.isInteger(length) ? last : undefined;
    }
    if (!isSafeRange(address, length)) return undefined;
    for (const region of this.regions) {
      if (address >= region.guestAddress && address < region.end) {
        if (length > region.end - address) return undefined;
        this.#last = region;
        return region;
      }
      if (address === region.end && length === 0) return region;
    }
    return undefined;
  }

  /** True if `[address, address + length)` is guest RAM (possibly spanning adjacent regions). */
  checkRange(address: number, length: number): boolean {
    if (this.findRegion(address, length)) return true;
    if (!isSafeRange(address, length)) return false;
    let cursor = address;
    let remaining = length;
    while (remaining > 0) {
      const region = this.findRegion(cursor, 1);
      if (!region) return false;
      const chunk = Math.min(remaining, region.end - cursor);
      cursor += chunk;
      remaining -= chunk;
    }
    return true;
  }

  #region(address: number, length: number): GuestRegion {
    const region = this.findRegion(address, length);
    if (!region) throw new GuestMemoryError(address, length);
    return region;
  }

  /** Reads a u8; throws {@link GuestMemoryError} outside guest RAM (so do all accessors). */
  readU8(address: number): number {
    const r = this.#region(address, 1);
    return r.bytes[address - r.guestAddress]!;
  }
  /** Reads a little-endian u16 (any alignment). */
  readU16(address: number): number {
    const r = this.#region(address, 2);
    return r.data.getUint16(address - r.guestAddress, true);
  }
  /** Reads a little-endian u32 (any alignment). */
  readU32(address: number): number {
    const r = this.#region(address, 4);
    return r.data.getUint32(address - r.guestAddress, true);
  }
  /** Reads a little-endian u64 as a bigint; use {@link guestAddressFromBigInt} for addresses. */
  readU64(address: number): bigint {
    const r = this.#region(address, 8);
    return r.data.getBigUint64(address - r.guestAddress, true);
  }
  /** Writes a u8 (the value modulo 2^8). */
  writeU8(address: number, value: number): void {
    const r = this.#region(address, 1);
    r.bytes[address - r.guestAddress] = value;
  }
  /** Writes a little-endian u16 (the value modulo 2^16). */
  writeU16(address: number, value: number): void {
    const r = this.#region(address, 2);
    r.data.setUint16(address - r.guestAddress, value, true);
  }
  /** Writes a little-endian u32 (the value modulo 2^32). */
  writeU32(address: number, value: number): void {
    const r = this.#region(address, 4);
    r.data.setUint32(address - r.guestAddress, value, true);
  }
  /** Writes a little-endian u64 (the value modulo 2^64). */
  writeU64(address: number, value: bigint): void {
    const r = this.#region(address, 8);
    r.data.setBigUint64(address - r.guestAddress, BigInt.asUintN(64, value), true);
  }

  /** Copies guest bytes at `address` into `destination` (its whole length). May span regions. */
  read(address: number, destination: Uint8Array): void {
    const length = destination.length;
    const r = this.findRegion(address, length);
    if (r) {
      const offset = address - r.guestAddress;
      destination.set(r.bytes.subarray(offset, offset + length));
      return;
    }
    this.#spanning(address, length, (view, done) => destination.set(view, done));
  }

  /** Copies `source` into guest memory at `address`. May span regions. */
  write(address: number, source: Uint8Array): void {
    const length = source.length;
    const r = this.findRegion(address, length);
    if (r) {
      r.bytes.set(source, address - r.guestAddress);
      return;
    }
    this.#spanning(address, length, (view, done) =>
      view.set(source.subarray(done, done + view.length)),
    );
  }

  /** Fills `[address, address + length)` with `value`. */
  fill(address: number, length: number, value = 0): void {
    this.#spanning(address, length, (view) => view.fill(value));
  }

  /**
   * A zero-copy view of `[address, address + length)`. The range must lie inside one region;
   * use {@link views} for ranges that may span regions.
   */
  view(address: number, length: number): Uint8Array {
    const r = this.#region(address, length);
    const offset = address - r.guestAddress;
    return r.bytes.subarray(offset, offset + length);
  }

  /** Zero-copy views covering `[address, address + length)`, one per region it spans. */
  views(address: number, length: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.#spanning(address, length, (view) => out.push(view));
    return out;
  }

  #spanning(address: number, length: number, each: (view: Uint8Array, done: number) => void): void {
    if (!this.checkRange(address, length)) throw new GuestMemoryError(address, length);
    let done = 0;
    while (done < length) {
      const cursor = address + done;
      const r = this.findRegion(cursor, 1)!;
      const offset = cursor - r.guestAddress;
      const chunk = Math.min(length - done, r.size - offset);
      each(r.bytes.subarray(offset, offset + chunk), done);
      done += chunk;
    }
  }
}
