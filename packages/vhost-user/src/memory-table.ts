/**
 * The front-end's memory table (SET_MEM_TABLE): each region is a file descriptor (a memfd, a
 * hugetlbfs or plain file) mapped shared into this process, placed in a core `GuestMemory` at its
 * guest-physical address. Ring addresses arrive as the front-end's own virtual addresses and are
 * translated through the same table.
 */

import { GuestMemory, type GuestRegionInit, MAX_GUEST_ADDRESS } from '@virtkit/core';
import {
  fstat,
  LinuxError,
  MAP_NORESERVE,
  MAP_SHARED,
  type MemoryMapping,
  mmap,
} from '@virtkit/linux';
import { closeQuietly } from './channel.js';
import { VhostUserError } from './errors.js';
import type { MemoryRegionDescription } from './message.js';

const MAX_SAFE = BigInt(MAX_GUEST_ADDRESS);
const U64_END = 1n << 64n;

/** One mapped region. Addresses are numbers: every one was checked to be a safe integer. */
export interface MappedRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddress: number;
  readonly size: number;
  /** The front-end's virtual address of the first byte (ring addresses are given in these). */
  readonly userAddress: bigint;
  /** Offset of the region in its file. */
  readonly mmapOffset: number;
  /** Our mapping of the file from offset 0 to the end of the region. */
  readonly mapping: MemoryMapping;
}

function fail(message: string, cause?: unknown): never {
  throw new VhostUserError(
    'VHOST_USER_MEMORY',
    message,
    cause === undefined ? undefined : { cause },
  );
}

function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/**
 * Checks a memory table and maps its regions. The descriptors are always closed (a mapping keeps
 * the memory alive on its own). Throws a {@link VhostUserError} (`VHOST_USER_MEMORY`) naming the
 * first problem: descriptor count, sizes or addresses out of range, misalignment, overlaps, a
 * descriptor that is not a file at least as long as the region, or a failed mmap.
 */
export function mapMemoryTable(
  descriptions: readonly MemoryRegionDescription[],
  fds: readonly number[],
): MemoryTable {
  const mapped: MappedRegion[] = [];
  try {
    if (fds.length !== descriptions.length) {
      fail(`memory table has ${descriptions.length} regions but ${fds.length} descriptors`);
    }
    descriptions.forEach((region, i) => {
      const { guestAddress, size, userAddress, mmapOffset } = region;
      const where = `memory region ${i} (guest ${hex(guestAddress)}, ${hex(size)} bytes)`;
      if (size === 0n) fail(`${where} is empty`);
      if (guestAddress + size > MAX_SAFE) fail(`${where} ends beyond guest address 2^53`);
      if (mmapOffset + size > MAX_SAFE)
        fail(`${where} has mmap offset ${hex(mmapOffset)} too large`);
      if (userAddress + size > U64_END) fail(`${where} wraps the front-end's address space`);
      if (guestAddress % 8n !== 0n || mmapOffset % 8n !== 0n) {
        fail(`${where} has a guest address or mmap offset that is not 8-byte aligned`);
      }
      for (let j = 0; j < i; j++) {
        const other = descriptions[j]!;
        if (
          guestAddress < other.guestAddress + other.size &&
          other.guestAddress < guestAddress + size
        ) {
          fail(`${where} overlaps region ${j} in guest-physical addresses`);
        }
        if (
          userAddress < other.userAddress + other.size &&
          other.userAddress < userAddress + size
        ) {
          fail(`${where} overlaps region ${j} in front-end addresses`);
        }
      }
    });
    descriptions.forEach((region, i) => {
      const fd = fds[i]!;
      const length = Number(region.mmapOffset + region.size);
      let stat: ReturnType<typeof fstat>;
      try {
        stat = fstat(fd);
      } catch (error) {
        fail(`memory region ${i}: cannot stat its descriptor: ${(error as Error).message}`, error);
      }
      // Touching a shared mapping beyond the end of its file raises SIGBUS, which would kill the
      // process: insist on a file long enough for the whole region.
      if (!stat.isFile) fail(`memory region ${i} is not backed by a file or memfd`);
      if (stat.size < length) {
        fail(`memory region ${i} needs ${length} bytes of its file, which has ${stat.size}`);
      }
      let mapping: MemoryMapping;
      try {
        mapping = mmap({ fd, length, flags: MAP_SHARED | MAP_NORESERVE });
      } catch (error) {
        if (!(error instanceof LinuxError)) throw error;
        fail(`memory region ${i}: ${error.message}`, error);
      }
      mapped.push({
        guestAddress: Number(region.guestAddress),
        size: Number(region.size),
        userAddress: region.userAddress,
        mmapOffset: Number(region.mmapOffset),
        mapping,
      });
    });
    return new MemoryTable(mapped);
  } catch (error) {
    for (const region of mapped) region.mapping.unmap();
    throw error;
  } finally {
    for (const fd of fds) closeQuietly(fd);
  }
}

/**
 * Mapped guest memory of one front-end, and the translation of its virtual addresses.
 *
 * @example
 * ```ts
 * const table = mapMemoryTable(decodeMemoryTable(message), message.fds);
 * const gpa = table.translate(ringUserAddress, 4096); // guest-physical, or undefined
 * table.memory.readU16(gpa!);
 * table.unmap();
 * ```
 */
export class MemoryTable {
  readonly regions: readonly MappedRegion[];
  /** The regions at their guest-physical addresses. */
  readonly memory: GuestMemory;
  readonly #inits: readonly GuestRegionInit[];

  constructor(regions: readonly MappedRegion[]) {
    this.regions = regions;
    this.#inits = regions.map((region) => ({
      guestAddress: region.guestAddress,
      buffer: region.mapping.buffer,
      byteOffset: region.mmapOffset,
      size: region.size,
    }));
    this.memory = new GuestMemory(this.#inits);
  }

  /** The region initializers (to build a GuestMemory with extra regions). */
  get regionInits(): readonly GuestRegionInit[] {
    return this.#inits;
  }

  /** Exclusive end of the highest guest-physical region. */
  get guestEnd(): number {
    return Math.max(...this.regions.map((region) => region.guestAddress + region.size));
  }

  /**
   * Translates the front-end's virtual address `userAddress` to a guest-physical address, if
   * `[userAddress, userAddress + length)` lies inside one region.
   */
  translate(userAddress: bigint, length: number): number | undefined {
    for (const region of this.regions) {
      const offset = userAddress - region.userAddress;
      if (offset >= 0n && offset + BigInt(length) <= BigInt(region.size)) {
        return region.guestAddress + Number(offset);
      }
    }
    return undefined;
  }

  /** True if `descriptions` describe exactly these regions (same addresses, sizes and offsets). */
  describes(descriptions: readonly MemoryRegionDescription[]): boolean {
    if (descriptions.length !== this.regions.length) return false;
    return descriptions.every((d) =>
      this.regions.some(
        (r) =>
          BigInt(r.guestAddress) === d.guestAddress &&
          BigInt(r.size) === d.size &&
          r.userAddress === d.userAddress &&
          BigInt(r.mmapOffset) === d.mmapOffset,
      ),
    );
  }

  /** Unmaps every region. Nothing may touch {@link memory} afterwards (it would crash). */
  unmap(): void {
    for (const region of this.regions) region.mapping.unmap();
  }
}
