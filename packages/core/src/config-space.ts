/**
 * Device configuration space (virtio 1.2 §2.5): a little-endian byte structure the driver reads
 * through the transport. The device updates fields with the setters; every update that changes a
 * byte is reported so core can bump the configuration generation and raise a config-change
 * interrupt (§2.5.1, §4.1.4.3, §4.2.2).
 */

/** Receives each driver write to a writable range, after the bytes were stored. */
export type ConfigWriteHandler = (offset: number, data: Uint8Array) => void;

/** A writable byte range `[offset, offset + length)` of a configuration space. */
export interface WritableRange {
  /** First byte of the range. */
  readonly offset: number;
  /** Bytes in the range. */
  readonly length: number;
}

/** Options for {@link ConfigSpace}. */
export interface ConfigSpaceOptions {
  /** Ranges the driver may write (everything else is read-only, §2.5). */
  readonly writable?: readonly WritableRange[];
  /** Called after a driver write to a writable range. */
  readonly onWrite?: ConfigWriteHandler;
}

/**
 * A device's configuration space.
 *
 * @example
 * ```ts
 * const config = new ConfigSpace(8);
 * config.setU64(0, 2048n); // virtio-blk capacity in sectors
 * ```
 */
export class ConfigSpace {
  /** Size in bytes. */
  readonly size: number;
  readonly #bytes: Uint8Array;
  readonly #data: DataView;
  readonly #writable: readonly WritableRange[];
  readonly #onWrite: ConfigWriteHandler | undefined;
  readonly #listeners = new Set<() => void>();

  constructor(size: number, options: ConfigSpaceOptions = {}) {
    if (!Number.isInteger(size) || size < 0 || size > 0x1000) {
      throw new RangeError(`config space size ${size} is not between 0 and 4096`);
    }
    this.size = size;
    this.#bytes = new Uint8Array(size);
    this.#data = new DataView(this.#bytes.buffer);
    this.#writable = options.writable ?? [];
    this.#onWrite = options.onWrite;
  }

  /** Subscribes to changes the device makes; returns an unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The current bytes (a copy). */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
  }

  /**
   * Driver read of `destination.length` bytes at `offset`. Returns false (and leaves
   * `destination` zeroed) if the range is outside the space.
   */
  read(offset: number, destination: Uint8Array): boolean {
    if (!this.#inRange(offset, destination.length)) {
      destination.fill(0);
      return false;
    }
    destination.set(this.#bytes.subarray(offset, offset + destination.length));
    return true;
  }

  /**
   * Driver write. Returns `'ok'`, `'out-of-range'` or `'read-only'`; only a write entirely inside
   * one writable range is applied.
   */
  write(offset: number, data: Uint8Array): 'ok' | 'out-of-range' | 'read-only' {
    if (!this.#inRange(offset, data.length)) return 'out-of-range';
    const allowed = this.#writable.some(
      (range) => offset >= range.offset && offset + data.length <= range.offset + range.length,
    );
    if (!allowed) return 'read-only';
    this.#bytes.set(data, offset);
    this.#onWrite?.(offset, data);
    return 'ok';
  }

  /** The u8 at `offset` (device side; throws RangeError outside the space). */
  getU8(offset: number): number {
    return this.#data.getUint8(offset);
  }
  /** The little-endian u16 at `offset`. */
  getU16(offset: number): number {
    return this.#data.getUint16(offset, true);
  }
  /** The little-endian u32 at `offset`. */
  getU32(offset: number): number {
    return this.#data.getUint32(offset, true);
  }
  /** The little-endian u64 at `offset`. */
  getU64(offset: number): bigint {
    return this.#data.getBigUint64(offset, true);
  }

  /** Device update of a field. Listeners hear of it only if a byte changed. */
  setU8(offset: number, value: number): void {
    this.#update(offset, 1, () => this.#data.setUint8(offset, value));
  }
  /** Device update of a little-endian u16 field (see {@link setU8}). */
  setU16(offset: number, value: number): void {
    this.#update(offset, 2, () => this.#data.setUint16(offset, value, true));
  }
  /** Device update of a little-endian u32 field (see {@link setU8}). */
  setU32(offset: number, value: number): void {
    this.#update(offset, 4, () => this.#data.setUint32(offset, value, true));
  }
  /** Device update of a little-endian u64 field (see {@link setU8}). */
  setU64(offset: number, value: bigint): void {
    this.#update(offset, 8, () => this.#data.setBigUint64(offset, BigInt.asUintN(64, value), true));
  }
  /** Device update of a byte range (see {@link setU8}). */
  setBytes(offset: number, value: Uint8Array): void {
    this.#update(offset, value.length, () => this.#bytes.set(value, offset));
  }

  #inRange(offset: number, length: number): boolean {
    return Number.isInteger(offset) && offset >= 0 && length <= this.size - offset;
  }

  #update(offset: number, length: number, store: () => void): void {
    if (!this.#inRange(offset, length)) {
      throw new RangeError(
        `config field at ${offset} of ${length} bytes is outside the ${this.size}-byte space`,
      );
    }
    const before = this.#bytes.slice(offset, offset + length);
    store();
    for (let i = 0; i < length; i++) {
      if (before[i] !== this.#bytes[offset + i]) {
        for (const listener of this.#listeners) listener();
        return;
      }
    }
  }
}
