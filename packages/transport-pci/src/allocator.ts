/**
 * Hands out naturally aligned ranges of a window, as firmware does when it assigns BARs at boot.
 */

import { PciTransportError } from './errors.js';

/** A range of guest-physical memory or I/O port space. */
export interface PciWindow {
  readonly base: number;
  readonly size: number;
}

/**
 * First-fit allocator over one window. Ranges are aligned to their size (BARs must be), so
 * allocating big BARs first wastes the least space.
 *
 * @example
 * ```ts
 * const mem = new PciWindowAllocator({ base: 0x4000_0000, size: 0x1000_0000 });
 * mem.allocate(0x8_0000); // 0x4000_0000
 * ```
 */
export class PciWindowAllocator {
  readonly window: PciWindow;
  /** Allocated ranges, sorted by start. */
  readonly #used: { start: number; end: number }[] = [];

  constructor(window: PciWindow) {
    if (
      !Number.isSafeInteger(window.base) ||
      !Number.isSafeInteger(window.size) ||
      window.base < 0 ||
      window.size <= 0 ||
      window.base + window.size > Number.MAX_SAFE_INTEGER
    ) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `window at ${window.base} of ${window.size} bytes is not a range of safe integers`,
      );
    }
    this.window = window;
  }

  /** Allocates `size` bytes aligned to `align` (default `size`); `undefined` if nothing fits. */
  allocate(size: number, align = size): number | undefined {
    const end = this.window.base + this.window.size;
    let candidate = alignUp(this.window.base, align);
    for (const used of this.#used) {
      if (candidate + size <= used.start) break;
      candidate = Math.max(candidate, alignUp(used.end, align));
    }
    if (candidate + size > end) return undefined;
    this.#used.push({ start: candidate, end: candidate + size });
    this.#used.sort((a, b) => a.start - b.start);
    return candidate;
  }

  /** True if `[address, address + size)` lies inside the window. */
  contains(address: number, size: number): boolean {
    return address >= this.window.base && address + size <= this.window.base + this.window.size;
  }
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}
