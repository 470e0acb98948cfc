/**
 * Descriptor chains as the device sees them: validated lists of device-readable and
 * device-writable segments of guest memory, with readers and writers that copy
 * scatter-gather without intermediate buffers.
 */

import { GuestMemoryError } from '../errors.js';
import type { GuestMemory } from '../memory.js';

/** One buffer segment of a chain: `len` bytes of guest memory at guest-physical `addr`. */
export interface Segment {
  /** Guest-physical address of the first byte. */
  readonly addr: number;
  /** Length in bytes. */
  readonly len: number;
}

/**
 * A descriptor chain popped from a queue. Every segment was checked against guest memory when
 * the chain was popped, so reading and writing it cannot leave guest RAM. Segments that are
 * device-readable always precede device-writable ones (§2.7.4.2, §2.8.4).
 */
export class DescriptorChain {
  /** Split ring: index of the head descriptor. Packed ring: the buffer ID. */
  readonly id: number;
  /** Segments the device reads (driver → device). */
  readonly readable: readonly Segment[];
  /** Segments the device writes (device → driver). */
  readonly writable: readonly Segment[];
  /** Sum of the readable segments' lengths. */
  readonly readableLength: number;
  /** Sum of the writable segments' lengths. */
  readonly writableLength: number;
  /** Ring slots the chain occupied (packed ring bookkeeping; an indirect table counts as one). */
  readonly ringSlots: number;
  /** The memory the segments point into. */
  readonly memory: GuestMemory;

  constructor(
    memory: GuestMemory,
    id: number,
    readable: readonly Segment[],
    writable: readonly Segment[],
    readableLength: number,
    writableLength: number,
    ringSlots: number,
  ) {
    this.memory = memory;
    this.id = id;
    this.readable = readable;
    this.writable = writable;
    this.readableLength = readableLength;
    this.writableLength = writableLength;
    this.ringSlots = ringSlots;
  }

  /** A reader over the device-readable segments. */
  reader(): ChainReader {
    return new ChainReader(this.memory, this.readable);
  }

  /** A writer over the device-writable segments. */
  writer(): ChainWriter {
    return new ChainWriter(this.memory, this.writable);
  }
}

/** Walks a list of segments, tracking a position. Shared by {@link ChainReader} and {@link ChainWriter}. */
abstract class SegmentCursor {
  protected readonly memory: GuestMemory;
  protected readonly segments: readonly Segment[];
  protected index = 0;
  protected offset = 0;
  #consumed = 0;
  readonly length: number;

  constructor(memory: GuestMemory, segments: readonly Segment[]) {
    this.memory = memory;
    this.segments = segments;
    let total = 0;
    for (const s of segments) total += s.len;
    this.length = total;
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.#consumed;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.length - this.#consumed;
  }

  /** Advances by `count` bytes (at most what remains); returns how many were skipped. */
  skip(count: number): number {
    let left = Math.min(count, this.remaining);
    const skipped = left;
    while (left > 0) {
      const segment = this.segments[this.index]!;
      const step = Math.min(left, segment.len - this.offset);
      this.#advance(step, segment);
      left -= step;
    }
    return skipped;
  }

  /**
   * Zero-copy views of the next `count` bytes (at most what remains), advancing past them.
   * Use these to hand guest buffers straight to I/O (e.g. `readv`/`writev`).
   */
  views(count = this.remaining): Uint8Array[] {
    const out: Uint8Array[] = [];
    let left = Math.min(count, this.remaining);
    while (left > 0) {
      const segment = this.segments[this.index]!;
      const step = Math.min(left, segment.len - this.offset);
      if (step > 0) {
        for (const view of this.memory.views(segment.addr + this.offset, step)) out.push(view);
      }
      this.#advance(step, segment);
      left -= step;
    }
    return out;
  }

  /**
   * The next `count` bytes (at most what remains) as guest-physical segments, advancing past
   * them. Whole segments are the chain's own objects; only a partly consumed one is cut. Like
   * {@link views} without creating a view per segment: a backend that does vectored I/O on host
   * addresses (region base plus offset) turns these into an iovec directly. Every segment was
   * checked against guest memory when the chain was popped.
   */
  ranges(count = this.remaining): Segment[] {
    const out: Segment[] = [];
    let left = Math.min(count, this.remaining);
    while (left > 0) {
      const segment = this.segments[this.index]!;
      const step = Math.min(left, segment.len - this.offset);
      if (step > 0) {
        out.push(step === segment.len ? segment : { addr: segment.addr + this.offset, len: step });
      }
      this.#advance(step, segment);
      left -= step;
    }
    return out;
  }

  protected forEachChunk(
    count: number,
    each: (address: number, length: number, done: number) => void,
  ): void {
    if (count > this.remaining) {
      throw new GuestMemoryError(
        0,
        count,
        `descriptor chain has ${this.remaining} bytes left, ${count} needed`,
      );
    }
    let done = 0;
    while (done < count) {
      const segment = this.segments[this.index]!;
      const step = Math.min(count - done, segment.len - this.offset);
      if (step > 0) each(segment.addr + this.offset, step, done);
      this.#advance(step, segment);
      done += step;
    }
  }

  #advance(step: number, segment: Segment): void {
    this.offset += step;
    this.#consumed += step;
    if (this.offset === segment.len) {
      this.index++;
      this.offset = 0;
    }
  }
}

/** Reads the device-readable part of a chain in order. */
export class ChainReader extends SegmentCursor {
  /** Fills `destination` from the chain; throws if fewer bytes remain. */
  read(destination: Uint8Array): void {
    this.forEachChunk(destination.length, (address, length, done) =>
      this.memory.read(address, destination.subarray(done, done + length)),
    );
  }

  /** Reads up to `destination.length` bytes; returns how many were read. */
  readSome(destination: Uint8Array): number {
    const count = Math.min(destination.length, this.remaining);
    this.read(destination.subarray(0, count));
    return count;
  }

  /** Reads `count` bytes into a new array. */
  readBytes(count: number): Uint8Array {
    const out = new Uint8Array(count);
    this.read(out);
    return out;
  }

  /** Reads the next u8; throws {@link GuestMemoryError} if the chain has fewer bytes left. */
  readU8(): number {
    return this.#small(1).getUint8(0);
  }
  /** Reads the next little-endian u16 (it may span segments). */
  readU16(): number {
    return this.#small(2).getUint16(0, true);
  }
  /** Reads the next little-endian u32 (it may span segments). */
  readU32(): number {
    return this.#small(4).getUint32(0, true);
  }
  /** Reads the next little-endian u64 (it may span segments). */
  readU64(): bigint {
    return this.#small(8).getBigUint64(0, true);
  }

  // Small fields: a view when they sit in one segment (the common case), a copy otherwise.
  #small(size: number): DataView {
    const segment = this.segments[this.index];
    if (segment && segment.len - this.offset >= size) {
      const region = this.memory.findRegion(segment.addr + this.offset, size);
      if (region) {
        const view = new DataView(
          region.data.buffer,
          region.data.byteOffset + segment.addr + this.offset - region.guestAddress,
          size,
        );
        this.skip(size);
        return view;
      }
    }
    const copy = new Uint8Array(size);
    this.read(copy);
    return new DataView(copy.buffer);
  }
}

/** Writes the device-writable part of a chain in order, counting bytes written. */
export class ChainWriter extends SegmentCursor {
  /** Writes all of `source`; throws if the chain has fewer bytes left. */
  write(source: Uint8Array): void {
    this.forEachChunk(source.length, (address, length, done) =>
      this.memory.write(address, source.subarray(done, done + length)),
    );
  }

  /** Writes as much of `source` as fits; returns how many bytes were written. */
  writeSome(source: Uint8Array): number {
    const count = Math.min(source.length, this.remaining);
    this.write(source.subarray(0, count));
    return count;
  }

  /** Writes `count` zero bytes. */
  zero(count: number): void {
    this.forEachChunk(count, (address, length) => this.memory.fill(address, length, 0));
  }

  /** Writes a u8; throws {@link GuestMemoryError} if the chain has no room left. */
  writeU8(value: number): void {
    this.write(Uint8Array.of(value & 0xff));
  }
  /** Writes a little-endian u16 (it may span segments). */
  writeU16(value: number): void {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, value, true);
    this.write(b);
  }
  /** Writes a little-endian u32 (it may span segments). */
  writeU32(value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    this.write(b);
  }
  /** Writes a little-endian u64 (it may span segments). */
  writeU64(value: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
    this.write(b);
  }
}
