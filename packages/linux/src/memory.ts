/**
 * Raw addresses of JavaScript memory, views of native memory, aligned buffers and iovec lists:
 * what makes guest-memory I/O zero-copy. A typed array's bytes live outside the garbage-collected
 * heap once its `.buffer` has been touched (V8 moves small on-heap arrays out at that point and
 * never moves them again), so their address stays valid while the buffer is alive.
 */

import koffi from 'koffi';
import { LinuxError } from './errors.js';

/** Most buffers one `readv`/`writev`/`preadv`/`pwritev`/`sendmsg` takes (Linux `UIO_MAXIOV`). */
export const IOV_MAX = 1024;

const EINVAL = 22;
const TWO_32 = 0x1_0000_0000;

/** Key of an {@link IovecList}'s raw `struct iovec[]`; internal to the package. */
export const rawIovecs: unique symbol = Symbol('rawIovecs');

const baseAddresses = new WeakMap<ArrayBufferLike, number>();

/**
 * Returns the address of the first byte of `view` as a number (exact: x86_64 user addresses are
 * below 2^47). The address of each distinct `ArrayBuffer`/`SharedArrayBuffer` is looked up once
 * and cached, so this is a `WeakMap` lookup afterwards. A `SharedArrayBuffer` has one address for
 * every worker that shares it.
 *
 * The address is valid while the buffer is alive (keep a reference) and not detached. Returns 0
 * for a view of an empty or detached buffer.
 *
 * @example
 * ```ts
 * const ram = new SharedArrayBuffer(1 << 20);
 * const base = addressOf(new Uint8Array(ram)); // host address of guest-physical 0
 * ```
 */
export function addressOf(view: ArrayBufferView): number {
  const buffer = view.buffer;
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    if (buffer.byteLength === 0) return 0;
    base = Number(koffi.address(new Uint8Array(buffer, 0, 1)));
    baseAddresses.set(buffer, base);
  }
  return base + view.byteOffset;
}

/**
 * Returns an `ArrayBuffer` whose bytes are the native memory `[address, address + length)`, without
 * copying. Use it in a worker to view memory another thread mapped (pass the number from
 * {@link MemoryMapping.address}). Nothing keeps that memory mapped: touching the buffer after the
 * memory is unmapped crashes the process.
 */
export function viewMemory(address: number, length: number): ArrayBuffer {
  if (
    !Number.isSafeInteger(address) ||
    address <= 0 ||
    !Number.isSafeInteger(length) ||
    length < 0
  ) {
    throw new LinuxError(EINVAL, 'viewMemory', {
      detail: `cannot view ${length} bytes at address ${address}`,
    });
  }
  return koffi.view(address, length);
}

/**
 * Allocates `length` bytes whose address is a multiple of `alignment` (a power of two, default
 * 4096), as `O_DIRECT` I/O needs. The memory is garbage-collected like any typed array.
 *
 * @example
 * ```ts
 * const fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
 * const sector = alignedBuffer(4096);
 * pread(fd, sector, 0);
 * ```
 */
export function alignedBuffer(length: number, alignment = 4096): Uint8Array {
  if (!Number.isSafeInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    throw new LinuxError(EINVAL, 'alignedBuffer', {
      detail: `alignment ${alignment} is not a power of two`,
    });
  }
  const raw = new ArrayBuffer(length + alignment);
  const base = addressOf(new Uint8Array(raw));
  const offset = (alignment - (base % alignment)) % alignment;
  return new Uint8Array(raw, offset, length);
}

/**
 * A reusable array of `struct iovec` (address, length) for vectored I/O. Fill it with views or
 * with raw addresses (e.g. `addressOf(region.bytes) + offset` for a guest buffer, which avoids
 * creating a subarray per descriptor), then pass it to `preadv`, `pwritev`, `readv`, `writev`,
 * `sendmsg` or `recvmsg`. Functions that take an iovec list also take a plain array of views.
 *
 * The list stores addresses only: keep the views it describes alive until the call returns.
 *
 * @example
 * ```ts
 * const iov = new IovecList();
 * iov.push(header).push(payload);
 * writev(tapFd, iov);
 * iov.clear();
 * ```
 */
export class IovecList {
  /** How many entries fit. */
  readonly capacity: number;
  // Two 32-bit words for iov_base, two for iov_len (little-endian size_t halves).
  readonly #words: Uint32Array;
  #count = 0;
  #totalLength = 0;

  /** @param capacity - most entries (1 to {@link IOV_MAX}, default {@link IOV_MAX}) */
  constructor(capacity: number = IOV_MAX) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > IOV_MAX) {
      throw new LinuxError(EINVAL, 'iovec', {
        detail: `capacity ${capacity} is outside 1..${IOV_MAX}`,
      });
    }
    this.capacity = capacity;
    this.#words = new Uint32Array(new ArrayBuffer(capacity * 16));
  }

  /** Builds a list from views. */
  static from(views: readonly ArrayBufferView[]): IovecList {
    const list = new IovecList(Math.min(Math.max(views.length, 1), IOV_MAX));
    for (const view of views) list.push(view);
    return list;
  }

  /** Number of entries. */
  get count(): number {
    return this.#count;
  }

  /** Sum of the entries' lengths. */
  get totalLength(): number {
    return this.#totalLength;
  }

  /** Removes every entry. */
  clear(): this {
    this.#count = 0;
    this.#totalLength = 0;
    return this;
  }

  /** Appends the bytes of `view`. */
  push(view: ArrayBufferView): this {
    return this.pushAddress(addressOf(view), view.byteLength);
  }

  /**
   * Appends raw memory `[address, address + length)`. The caller guarantees it is mapped (and
   * writable, for reads into it) until the call that uses the list returns: the kernel writes
   * there without further checks from JavaScript.
   */
  pushAddress(address: number, length: number): this {
    const index = this.#count;
    if (index === this.capacity) {
      throw new LinuxError(EINVAL, 'iovec', {
        detail: `more than ${this.capacity} buffers in one vectored call`,
      });
    }
    const words = this.#words;
    const at = index * 4;
    words[at] = address >>> 0;
    words[at + 1] = Math.floor(address / TWO_32);
    words[at + 2] = length >>> 0;
    words[at + 3] = Math.floor(length / TWO_32);
    this.#count = index + 1;
    this.#totalLength += length;
    return this;
  }

  /** The raw `struct iovec[]`, for the bindings (the symbol is not exported by the package). */
  get [rawIovecs](): Uint32Array {
    return this.#words;
  }
}

/** What vectored calls accept: a list, or views. */
export type IovecInput = IovecList | readonly ArrayBufferView[];

// Synchronous calls on one thread never overlap, so they share one scratch list per module
// instance (each worker loads its own).
const scratch = new IovecList(IOV_MAX);

/** Returns `input` as a list; arrays of views go into the shared scratch list (sync calls only). */
export function iovecs(input: IovecInput): IovecList {
  if (input instanceof IovecList) return input;
  scratch.clear();
  for (let i = 0; i < input.length; i++) scratch.push(input[i]!);
  return scratch;
}
