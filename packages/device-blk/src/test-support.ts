/**
 * Helpers for this package's tests: request headers, discard segments, and descriptor chains
 * built straight in guest memory (no queue). Not exported from the package.
 */

import { DescriptorChain, GuestMemory, type Segment } from '@virtkit/core';
import type { TestDriver } from '@virtkit/core/testing';
import { type FileIo, nodeFileIo } from './backends/file-io.js';
import { MemoryBackend } from './backends/memory.js';
import { totalLength } from './backends/range.js';
import type { BlockBackend } from './backends/types.js';
import { DISCARD_SEGMENT_SIZE, REQUEST_HEADER_SIZE } from './constants.js';

/**
 * The default system calls without the shortcuts `aio=threads` takes when an I/O cannot wait
 * (a read the page cache holds, an image on tmpfs): every transfer then goes to a worker thread,
 * whatever file system the test's images are on.
 */
export async function workerOnlyIo(): Promise<FileIo> {
  const io = await nodeFileIo();
  const { preadvNoWait: _read, pwritevNoWait: _write, ...hostIo } = io.hostIo!;
  const { inMemory: _memory, ...rest } = io;
  return { ...rest, hostIo };
}

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

/** One backend call a {@link ControlledBackend} holds until the test releases it. */
export interface HeldCall {
  readonly kind: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';
  readonly offset: number;
  readonly length: number;
  /** Performs the call on the inner backend and completes it. */
  release(): void;
  /** Completes the call with an error. */
  fail(error?: Error): void;
}

/**
 * A backend whose every call waits until the test releases it, so tests decide the order in which
 * requests complete. Calls are performed on an in-memory disk when released.
 */
export class ControlledBackend implements BlockBackend {
  readonly inner: MemoryBackend;
  readonly held: HeldCall[] = [];
  readonly calls: HeldCall['kind'][] = [];
  /** Release every call at once (no holding). */
  auto = false;
  #waiters: (() => void)[] = [];

  constructor(size = 1 << 20, readOnly = false) {
    this.inner = new MemoryBackend({ size, readOnly });
  }

  get capacity(): number {
    return this.inner.capacity;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get canUnmap(): boolean {
    return true;
  }

  read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    return this.#hold('read', offset, totalLength(buffers), () => this.inner.read(offset, buffers));
  }
  write(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    return this.#hold('write', offset, totalLength(buffers), () =>
      this.inner.write(offset, buffers),
    );
  }
  flush(): Promise<void> {
    return this.#hold('flush', 0, 0, () => this.inner.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#hold('discard', offset, length, () => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    return this.#hold('writeZeroes', offset, length, () =>
      this.inner.writeZeroes(offset, length, unmap),
    );
  }
  async close(): Promise<void> {
    await this.inner.close();
  }

  /** Resolves once at least `count` calls are held. */
  async waitForHeld(count: number): Promise<void> {
    while (this.held.length < count) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Releases the held call at `index` (in arrival order among those still held). */
  release(index = 0): HeldCall {
    const call = this.held[index];
    if (!call) throw new Error(`no held call at ${index}`);
    call.release();
    return call;
  }

  #hold(
    kind: HeldCall['kind'],
    offset: number,
    length: number,
    perform: () => void,
  ): Promise<void> {
    this.calls.push(kind);
    return new Promise<void>((resolve, reject) => {
      const call: HeldCall = {
        kind,
        offset,
        length,
        release: () => {
          this.#drop(call);
          try {
            perform();
            resolve();
          } catch (error) {
            reject(error);
          }
        },
        fail: (error = new Error('injected I/O failure')) => {
          this.#drop(call);
          reject(error);
        },
      };
      if (this.auto) {
        call.release();
        return;
      }
      this.held.push(call);
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  #drop(call: HeldCall): void {
    const at = this.held.indexOf(call);
    if (at >= 0) this.held.splice(at, 1);
  }
}

/** What came back for a request sent with {@link blkRequest}. */
export interface BlkReply {
  /** Used length the device reported. */
  readonly len: number;
  /** The status byte (last writable byte). */
  readonly status: number;
  /** The writable bytes before the status byte. */
  readonly data: Uint8Array;
}

/** Posts a request (without kicking); `done()` waits for it and reads the status from memory. */
export function postBlk(
  driver: TestDriver,
  queue: number,
  readable: readonly Uint8Array[],
  writable: readonly number[],
): { token: number; done: () => Promise<BlkReply> } {
  const { token, writable: segments } = driver.post(queue, { readable, writable });
  return {
    token,
    done: async () => {
      const { len } = await driver.wait(queue, token);
      return readReply(driver, segments, len);
    },
  };
}

/** Sends a request, kicks, waits for its completion. */
export async function blkRequest(
  driver: TestDriver,
  queue: number,
  readable: readonly Uint8Array[],
  writable: readonly number[],
): Promise<BlkReply> {
  const posted = postBlk(driver, queue, readable, writable);
  driver.kick(queue);
  return posted.done();
}

function readReply(driver: TestDriver, segments: readonly Segment[], len: number): BlkReply {
  const total = segments.reduce((sum, s) => sum + s.len, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const segment of segments) {
    driver.memory.read(segment.addr, bytes.subarray(at, at + segment.len));
    at += segment.len;
  }
  return { len, status: total > 0 ? bytes[total - 1]! : -1, data: bytes.subarray(0, total - 1) };
}
