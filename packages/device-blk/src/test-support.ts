/**
 * Helpers for this package's tests: request headers, discard segments, and descriptor chains
 * built straight in guest memory (no queue). Not exported from the package.
 */

import { DescriptorChain, GuestMemory, type Segment } from '@virtkit/core';
import { DISCARD_SEGMENT_SIZE, REQUEST_HEADER_SIZE } from './constants.js';

/** A 16-byte request header. */
export function header(type: number, sector: bigint | number = 0n, reserved = 0): Uint8Array {
  const bytes = new Uint8Array(REQUEST_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type >>> 0, true);
  view.setUint32(4, reserved >>> 0, true);
  view.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
  return bytes;
}

/** DISCARD / WRITE_ZEROES segments `{ le64 sector; le32 num_sectors; le32 flags; }`. */
export function segments(
  ...list: readonly { sector: bigint | number; sectors: number; flags?: number }[]
): Uint8Array {
  const bytes = new Uint8Array(list.length * DISCARD_SEGMENT_SIZE);
  const view = new DataView(bytes.buffer);
  list.forEach((segment, i) => {
    const at = i * DISCARD_SEGMENT_SIZE;
    view.setBigUint64(at, BigInt.asUintN(64, BigInt(segment.sector)), true);
    view.setUint32(at + 8, segment.sectors >>> 0, true);
    view.setUint32(at + 12, (segment.flags ?? 0) >>> 0, true);
  });
  return bytes;
}

/** Concatenates byte arrays. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Guest memory with a bump allocator, for building chains by hand. */
export class ChainBuilder {
  readonly memory: GuestMemory;
  #next = 0x1000;
  #id = 0;

  constructor(size = 1 << 20) {
    this.memory = GuestMemory.fromBuffer(new ArrayBuffer(size));
  }

  /** A chain whose readable segments hold `readable` and whose writable ones have `writable` sizes. */
  chain(readable: readonly Uint8Array[], writable: readonly number[]): DescriptorChain {
    const r: Segment[] = readable.map((bytes) => {
      const addr = this.#allocate(bytes.length);
      this.memory.write(addr, bytes);
      return { addr, len: bytes.length };
    });
    const w: Segment[] = writable.map((len) => {
      const addr = this.#allocate(len);
      this.memory.fill(addr, len, 0xee);
      return { addr, len };
    });
    const sum = (list: Segment[]) => list.reduce((total, s) => total + s.len, 0);
    return new DescriptorChain(this.memory, this.#id++, r, w, sum(r), sum(w), r.length + w.length);
  }

  #allocate(len: number): number {
    const addr = this.#next;
    this.#next += Math.ceil(Math.max(len, 1) / 8) * 8 + 8;
    return addr;
  }
}
