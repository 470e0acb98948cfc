/**
 * memfd and mmap: guest RAM that other processes (vhost-user backends) and KVM can share. A
 * memfd is an anonymous file; mapping it `MAP_SHARED` gives memory that is also reachable
 * through the descriptor, which can be passed over a Unix socket and mapped again elsewhere.
 * A mapping is seen from JavaScript as an `ArrayBuffer` over the mapped bytes (no copy) and from
 * native code by its address.
 */

import koffi from 'koffi';
import {
  MAP_ANONYMOUS,
  MAP_SHARED,
  MFD_CLOEXEC,
  MS_SYNC,
  PROT_READ,
  PROT_WRITE,
} from './constants.js';
import { LinuxError } from './errors.js';
import { lastErrno, libc } from './libc.js';

const EINVAL = 22;

/**
 * Creates an anonymous memory-backed file and returns its descriptor. Size it with `ftruncate`.
 *
 * @param name - shown in `/proc/<pid>/fd` as `memfd:<name>`; for debugging only
 * @param flags - `MFD_*` (default `MFD_CLOEXEC`)
 */
export function memfdCreate(name: string, flags: number = MFD_CLOEXEC): number {
  const fd = libc().memfd_create(name, flags);
  if (fd < 0) throw new LinuxError(lastErrno(), 'memfd_create', { path: name });
  return fd;
}

/** What to map. */
export interface MapOptions {
  /** Bytes to map (rounded up to pages by the kernel; the buffer has exactly this length). */
  readonly length: number;
  /** File to map; omit for anonymous memory (`MAP_ANONYMOUS`). */
  readonly fd?: number;
  /** Offset in the file, a multiple of the page size (default 0). */
  readonly offset?: number;
  /** `PROT_*` (default `PROT_READ | PROT_WRITE`). */
  readonly protection?: number;
  /** `MAP_*` (default `MAP_SHARED`; `MAP_ANONYMOUS` is added when `fd` is omitted). */
  readonly flags?: number;
  /** Address hint, or the exact address with `MAP_FIXED` (default: the kernel chooses). */
  readonly address?: number;
}

/**
 * Maps memory and returns it as a {@link MemoryMapping}.
 *
 * @example
 * ```ts
 * const fd = memfdCreate('guest-ram');
 * ftruncate(fd, 256 << 20);
 * const ram = mmap({ fd, length: 256 << 20 });
 * new Uint8Array(ram.buffer)[0] = 1; // visible through fd and every other mapping of it
 * ram.address; // for KVM_SET_USER_MEMORY_REGION, or to translate vhost-user addresses
 * ```
 */
export function mmap(options: MapOptions): MemoryMapping {
  const { length } = options;
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new LinuxError(EINVAL, 'mmap', { detail: `length ${length} is not a positive integer` });
  }
  const anonymous = options.fd === undefined;
  const flags = (options.flags ?? MAP_SHARED) | (anonymous ? MAP_ANONYMOUS : 0);
  const address = libc().mmap(
    options.address ?? 0,
    length,
    options.protection ?? PROT_READ | PROT_WRITE,
    flags,
    options.fd ?? -1,
    options.offset ?? 0,
  );
  if (address === -1) throw new LinuxError(lastErrno(), 'mmap');
  return new MemoryMapping(address, length);
}

/**
 * A mapped range. Its {@link buffer} views the mapped bytes directly.
 *
 * After {@link unmap}, the `ArrayBuffer` (and every typed array over it) points at unmapped
 * memory and touching it crashes the process: JavaScript cannot detach an external buffer, so
 * drop every view before unmapping. Guest RAM is normally mapped once for the VM's lifetime.
 */
export class MemoryMapping {
  /** Address of the first byte (a number; exact, as x86_64 user addresses are below 2^47). */
  readonly address: number;
  /** Length in bytes. */
  readonly length: number;
  /** The mapped bytes, without copy. */
  readonly buffer: ArrayBuffer;
  #mapped = true;

  /** Wraps an existing mapping; {@link mmap} is the usual way to get one. */
  constructor(address: number, length: number) {
    this.address = address;
    this.length = length;
    this.buffer = koffi.view(address, length);
  }

  /** True until {@link unmap}. */
  get mapped(): boolean {
    return this.#mapped;
  }

  /**
   * Writes dirty pages of a file mapping back to the file (`msync`), all of it by default.
   *
   * @param flags - `MS_SYNC` (default) waits; `MS_ASYNC` schedules
   */
  sync(options: { offset?: number; length?: number; flags?: number } = {}): void {
    const offset = options.offset ?? 0;
    const length = options.length ?? this.length - offset;
    if (libc().msync(this.address + offset, length, options.flags ?? MS_SYNC) < 0) {
      throw new LinuxError(lastErrno(), 'msync');
    }
  }

  /** Unmaps the range. Idempotent. See the class notes on views. */
  unmap(): void {
    if (!this.#mapped) return;
    if (libc().munmap(this.address, this.length) < 0) throw new LinuxError(lastErrno(), 'munmap');
    this.#mapped = false;
  }
}
