/**
 * MSI-X (PCI 3.0 §6.8.2): a table of vectors (message address, message data, vector control)
 * and a pending bit array in a BAR, switched by the enable and function-mask bits of the
 * capability's message control. A vector raised while masked sets its pending bit; unmasking
 * delivers it and clears the bit.
 */

import { accessValue, setAccessValue } from '@virtkit/core';
import { EventEmitter } from 'eventemitter3';
import { MsixCap } from './constants.js';
import { PciTransportError } from './errors.js';
import type { MsiSink } from './interrupts.js';

/** One vector's route as a VMM programs it into its interrupt controller (e.g. a KVM GSI route). */
export interface MsixRoute {
  readonly vector: number;
  /** Message address (64 bits). */
  readonly address: bigint;
  /** Message data (32 bits). */
  readonly data: number;
  /** True if the vector itself is masked (vector control bit 0). */
  readonly masked: boolean;
}

/** Typed events of an {@link MsixTable}. */
export interface MsixEvents {
  /**
   * A vector's address, data or mask changed (`vector` set), or the enable / function-mask bits
   * changed (`vector` undefined): a VMM that mirrors routes into KVM updates them now.
   */
  change: [vector: number | undefined];
}

const DWORDS_PER_ENTRY = MsixCap.ENTRY_SIZE / 4;

/**
 * The MSI-X state of one function. The table and PBA are accessed through the function's BAR
 * (offsets relative to the start of each structure); the enable and function-mask bits come from
 * the capability's message control.
 *
 * Accesses must be aligned 32- or 64-bit ones inside the table or PBA (§6.8.2: other accesses
 * are undefined). We read 0 and ignore writes for anything else, and report it.
 */
export class MsixTable {
  readonly events = new EventEmitter<MsixEvents>();
  /** Number of vectors (table entries). */
  readonly size: number;
  readonly #entries: Uint32Array;
  readonly #pending: Uint8Array;
  readonly #report: (message: string) => void;
  #sink: MsiSink | undefined;
  #enabled = false;
  #functionMasked = false;

  constructor(size: number, report: (message: string) => void = () => {}) {
    if (!Number.isInteger(size) || size < 1 || size > MsixCap.MAX_VECTORS) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `MSI-X table size ${size} is not from 1 to ${MsixCap.MAX_VECTORS}`,
      );
    }
    this.size = size;
    this.#entries = new Uint32Array(size * DWORDS_PER_ENTRY);
    this.#pending = new Uint8Array(MsixTable.pbaBytes(size));
    this.#report = report;
    this.reset();
  }

  /** Bytes of table for `vectors` vectors. */
  static tableBytes(vectors: number): number {
    return vectors * MsixCap.ENTRY_SIZE;
  }

  /** Bytes of pending bit array for `vectors` vectors (whole qwords). */
  static pbaBytes(vectors: number): number {
    return Math.ceil(vectors / 64) * 8;
  }

  /** MSI-X enable bit of message control. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Function mask bit of message control. */
  get functionMasked(): boolean {
    return this.#functionMasked;
  }

  /** Where delivered messages go. */
  connect(sink: MsiSink | undefined): void {
    this.#sink = sink;
  }

  /** Back to the power-on state: disabled, every vector masked, nothing pending. */
  reset(): void {
    this.#entries.fill(0);
    for (let vector = 0; vector < this.size; vector++) {
      this.#entries[vector * DWORDS_PER_ENTRY + 3] = MsixCap.ENTRY_MASKED;
    }
    this.#pending.fill(0);
    this.#enabled = false;
    this.#functionMasked = false;
    this.events.emit('change', undefined);
  }

  /** Applies message control's enable and function-mask bits; delivers what became unmasked. */
  setControl(enabled: boolean, functionMasked: boolean): void {
    if (enabled === this.#enabled && functionMasked === this.#functionMasked) return;
    this.#enabled = enabled;
    this.#functionMasked = functionMasked;
    this.events.emit('change', undefined);
    this.#deliverPending();
  }

  /**
   * Raises `vector`. Delivered at once if MSI-X is enabled and neither the vector nor the
   * function is masked; recorded as pending if masked. Returns false if it was dropped (MSI-X
   * disabled or no such vector).
   */
  signal(vector: number): boolean {
    if (!this.#enabled || !Number.isInteger(vector) || vector < 0 || vector >= this.size) {
      return false;
    }
    if (this.#functionMasked || this.#vectorMasked(vector)) {
      this.#pending[vector >> 3] = this.#pending[vector >> 3]! | (1 << (vector & 7));
      return true;
    }
    this.#deliver(vector);
    return true;
  }

  /** True if `vector`'s pending bit is set. */
  isPending(vector: number): boolean {
    return ((this.#pending[vector >> 3] ?? 0) & (1 << (vector & 7))) !== 0;
  }

  /** The route of `vector`, or `undefined` if there is no such vector. */
  route(vector: number): MsixRoute | undefined {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.size) return undefined;
    const base = vector * DWORDS_PER_ENTRY;
    return {
      vector,
      address: (BigInt(this.#entries[base + 1]!) << 32n) | BigInt(this.#entries[base]!),
      data: this.#entries[base + 2]!,
      masked: this.#vectorMasked(vector),
    };
  }

  /** Every vector's route. */
  routes(): MsixRoute[] {
    return Array.from({ length: this.size }, (_, vector) => this.route(vector)!);
  }

  /** Guest read in the table (`offset` from its start). */
  readTable(offset: number, data: Uint8Array): void {
    const index = this.#tableIndex(offset, data, 'read');
    if (index === undefined) {
      data.fill(0);
      return;
    }
    setAccessValue(data.subarray(0, 4), this.#entries[index]!);
    if (data.length === 8) setAccessValue(data.subarray(4), this.#entries[index + 1]!);
  }

  /** Guest write in the table. Only bit 0 of vector control is writable there. */
  writeTable(offset: number, data: Uint8Array): void {
    const index = this.#tableIndex(offset, data, 'write');
    if (index === undefined) return;
    const vector = Math.floor(index / DWORDS_PER_ENTRY);
    const wasMasked = this.#vectorMasked(vector);
    const values =
      data.length === 8
        ? [accessValue(data.subarray(0, 4)), accessValue(data.subarray(4))]
        : [accessValue(data)];
    let changed = false;
    for (let i = 0; i < values.length; i++) {
      const dword = index + i;
      const value = dword % DWORDS_PER_ENTRY === 3 ? values[i]! & MsixCap.ENTRY_MASKED : values[i]!;
      if (this.#entries[dword] !== value) changed = true;
      this.#entries[dword] = value;
    }
    if (changed) this.events.emit('change', vector);
    if (wasMasked && !this.#vectorMasked(vector)) this.#deliverPending();
  }

  /** Guest read in the pending bit array (`offset` from its start). */
  readPba(offset: number, data: Uint8Array): void {
    if (!this.#aligned(offset, data) || offset + data.length > this.#pending.length) {
      data.fill(0);
      this.#report(
        `guest read ${data.length} bytes at MSI-X PBA offset 0x${offset.toString(16)}, outside the ${this.#pending.length}-byte array or not an aligned 32/64-bit access`,
      );
      return;
    }
    data.set(this.#pending.subarray(offset, offset + data.length));
  }

  /** Guest write in the pending bit array: read-only, ignored and reported. */
  writePba(offset: number, data: Uint8Array): void {
    this.#report(
      `guest wrote ${data.length} bytes at MSI-X PBA offset 0x${offset.toString(16)}, which is read-only`,
    );
  }

  #tableIndex(offset: number, data: Uint8Array, kind: 'read' | 'write'): number | undefined {
    if (this.#aligned(offset, data) && offset + data.length <= this.size * MsixCap.ENTRY_SIZE) {
      return offset / 4;
    }
    this.#report(
      `guest ${kind === 'read' ? 'read' : 'wrote'} ${data.length} bytes at MSI-X table offset 0x${offset.toString(16)}, outside the ${this.size}-vector table or not an aligned 32/64-bit access`,
    );
    return undefined;
  }

  #aligned(offset: number, data: Uint8Array): boolean {
    const width = data.length;
    return (
      Number.isInteger(offset) &&
      offset >= 0 &&
      (width === 4 || width === 8) &&
      offset % width === 0
    );
  }

  #vectorMasked(vector: number): boolean {
    return (this.#entries[vector * DWORDS_PER_ENTRY + 3]! & MsixCap.ENTRY_MASKED) !== 0;
  }

  #deliverPending(): void {
    if (!this.#enabled || this.#functionMasked) return;
    for (let byte = 0; byte < this.#pending.length; byte++) {
      if (this.#pending[byte] === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        const vector = byte * 8 + bit;
        if (!(this.#pending[byte]! & (1 << bit)) || this.#vectorMasked(vector)) continue;
        this.#pending[byte] = this.#pending[byte]! & ~(1 << bit);
        this.#deliver(vector);
      }
    }
  }

  #deliver(vector: number): void {
    const route = this.route(vector)!;
    this.#sink?.signal(route.address, route.data, vector);
  }
}
