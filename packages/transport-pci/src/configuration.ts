/**
 * A PCI function's configuration space (PCI 3.0 §6.1): the type 0 header, base address registers
 * with the sizing protocol (§6.2.5.1), and the capability list (§6.7). Every byte has a writable
 * mask, as in real hardware and QEMU's pci.c, so accesses of any width and alignment behave the
 * same way: writable bits take the written value, read-only bits keep theirs.
 */

import { guestAddressFromParts } from '@virtkit/core';
import { EventEmitter } from 'eventemitter3';
import {
  PCI_BAR_COUNT,
  PCI_CAPABILITY_START,
  PCI_COMMAND_WRITABLE,
  PCI_CONFIG_SPACE_SIZE,
  PCI_HEADER_TYPE_NORMAL,
  PCIE_CONFIG_SPACE_SIZE,
  PciBarFlags,
  PciCommand,
  PciConfig,
  PciStatus,
} from './constants.js';
import { PciTransportError } from './errors.js';
import type { PciNotifyAddress } from './function.js';
import type { InterruptLine, MsiSink } from './interrupts.js';
import type { MsixTable } from './msix.js';

/** The space a BAR maps: 32-bit memory, 64-bit memory (two registers) or I/O ports. */
export type PciBarKind = 'mem32' | 'mem64' | 'io';

/** A BAR a function implements. */
export interface PciBarDefinition {
  readonly kind: PciBarKind;
  /** Size in bytes: a power of two, at least 16 for memory and 4 for I/O. */
  readonly size: number;
  /** Reads have no side effects and may be merged (memory BARs only; default false). */
  readonly prefetchable?: boolean;
}

/** A BAR as the guest has programmed it. */
export interface PciBarState {
  /** BAR number (the lower one of a 64-bit pair). */
  readonly index: number;
  readonly kind: PciBarKind;
  readonly size: number;
  readonly prefetchable: boolean;
  /**
   * Base address held in the register(s), or `undefined` when it does not fit in a safe integer
   * (a 64-bit BAR the guest moved above 2^53 decodes nothing).
   */
  readonly address: number | undefined;
  /** True if the command register enables the BAR's space and the address is usable. */
  readonly decoding: boolean;
}

/** Identity and resources of a function's type 0 header. */
export interface PciHeaderOptions {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revisionId?: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  readonly classCode: number;
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
  /** 0 (no INTx) or 1-4 for INTA#-INTD# (default 0). */
  readonly interruptPin?: number;
  /** Up to six BARs by number; a 64-bit BAR also takes the next number, which must be empty. */
  readonly bars?: readonly (PciBarDefinition | undefined)[];
}

/** Typed events of a {@link PciConfiguration}. */
export interface PciConfigurationEvents {
  /** A BAR's address or decoding changed (guest programming, command register, VMM assignment). */
  'bar-change': [bar: PciBarState, previous: PciBarState];
  /** The command register changed. */
  command: [value: number, previous: number];
}

/** Called after a write touched `[offset, offset + length)` of a watched range. */
export type ConfigWriteHook = (offset: number, length: number) => void;
/** Called before a read of `[offset, offset + length)` of a watched range returns its bytes. */
export type ConfigReadHook = (offset: number, length: number) => void;

interface Watch<H> {
  readonly start: number;
  readonly end: number;
  readonly hook: H;
}

/**
 * A function as a {@link PciRoot} sees it: configuration space, BAR accesses, and where its
 * interrupts go.
 */
export interface PciFunction {
  readonly config: PciConfiguration;
  /** Guest read at `offset` of BAR `index` (relative to the BAR's base). Never throws. */
  readBar(index: number, offset: number, data: Uint8Array): void;
  /** Guest write at `offset` of BAR `index`. Never throws. */
  writeBar(index: number, offset: number, data: Uint8Array): void;
  /** Connects the function's INTx output (the root calls this with its swizzled line). */
  connectInterrupt?(line: InterruptLine | undefined): void;
  /** Connects the function's MSI/MSI-X output. */
  connectMsi?(sink: MsiSink | undefined): void;
  /** MSI-X state, for functions that have the capability. */
  readonly msix?: MsixTable | undefined;
  /** Queue notify addresses, for virtio functions. */
  notifyAddresses?(): readonly PciNotifyAddress[];
  /** Function-level reset (system reset). */
  reset?(): void | Promise<void>;
}

const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

function checkByte(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new PciTransportError(
      'PCI_INVALID_OPTION',
      `${name} ${value} is not an integer from 0 to 0x${max.toString(16)}`,
    );
  }
  return value;
}

/**
 * Configuration space of one function: 4 KiB (the first 256 bytes reachable through config
 * mechanism #1, all of it through ECAM; we implement no extended capabilities, so 0x100 and up
 * read 0).
 *
 * BAR sizing (§6.2.5.1): the address bits below the BAR's size are read-only 0, so writing all
 * ones and reading back gives `~(size - 1) | flags`, from which the driver computes the size.
 *
 * @example
 * ```ts
 * const config = new PciConfiguration({
 *   vendorId: 0x1af4, deviceId: 0x1041, classCode: 0x020000, interruptPin: 1,
 *   bars: [{ kind: 'mem64', size: 0x4000 }],
 * });
 * config.write(0x10, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
 * config.read(0x10, out); // 0xffffc004
 * ```
 */
export class PciConfiguration {
  readonly events = new EventEmitter<PciConfigurationEvents>();
  readonly #bytes = new Uint8Array(PCIE_CONFIG_SPACE_SIZE);
  readonly #writable = new Uint8Array(PCIE_CONFIG_SPACE_SIZE);
  /** Bytes whose read-only bits a guest should never try to change (identity, pointers). */
  readonly #strict = new Uint8Array(PCIE_CONFIG_SPACE_SIZE);
  readonly #bars: (PciBarDefinition | undefined)[];
  readonly #writeHooks: Watch<ConfigWriteHook>[] = [];
  readonly #readHooks: Watch<ConfigReadHook>[] = [];
  readonly #capabilities: { id: number; offset: number; length: number }[] = [];
  #initial: { bytes: Uint8Array; writable: Uint8Array } | undefined;
  #barStates: PciBarState[];
  #nextCapability = PCI_CAPABILITY_START;
  #onReadOnlyWrite: (message: string) => void = () => {};

  constructor(options: PciHeaderOptions) {
    const b = this.#bytes;
    this.#setU16(PciConfig.VENDOR_ID, checkByte('vendor ID', options.vendorId, 0xffff));
    this.#setU16(PciConfig.DEVICE_ID, checkByte('device ID', options.deviceId, 0xffff));
    b[PciConfig.REVISION_ID] = checkByte('revision ID', options.revisionId ?? 0, 0xff);
    const classCode = checkByte('class code', options.classCode, 0xff_ffff);
    b[PciConfig.CLASS_PROG] = classCode & 0xff;
    b[PciConfig.CLASS_PROG + 1] = (classCode >> 8) & 0xff;
    b[PciConfig.CLASS_PROG + 2] = classCode >> 16;
    b[PciConfig.HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
    this.#setU16(
      PciConfig.SUBSYSTEM_VENDOR_ID,
      checkByte('subsystem vendor ID', options.subsystemVendorId ?? 0, 0xffff),
    );
    this.#setU16(
      PciConfig.SUBSYSTEM_ID,
      checkByte('subsystem ID', options.subsystemId ?? 0, 0xffff),
    );
    b[PciConfig.INTERRUPT_PIN] = checkByte('interrupt pin', options.interruptPin ?? 0, 4);
    this.#strictRange(0, 4); // vendor, device
    this.#strictRange(PciConfig.REVISION_ID, 4); // revision, class
    this.#strictRange(PciConfig.HEADER_TYPE, 1);
    this.#strictRange(PciConfig.SUBSYSTEM_VENDOR_ID, 4);
    this.#strictRange(PciConfig.CAPABILITY_LIST, 1);
    this.#strictRange(PciConfig.INTERRUPT_PIN, 1);

    this.#setWritableU16(PciConfig.COMMAND, PCI_COMMAND_WRITABLE);
    this.#writable[PciConfig.CACHE_LINE_SIZE] = 0xff;
    this.#writable[PciConfig.LATENCY_TIMER] = 0xff;
    this.#writable[PciConfig.INTERRUPT_LINE] = 0xff;

    this.#bars = this.#defineBars(options.bars ?? []);
    this.#barStates = this.#computeBars();
  }

  /**
   * Receives a sentence for each guest write that tried to change a read-only identity byte
   * (IDs, class, header type, pointers, capability fields). The owner counts them.
   */
  onReadOnlyWrite(report: (message: string) => void): void {
    this.#onReadOnlyWrite = report;
  }

  // ---- guest accesses --------------------------------------------------------------------

  /** Guest read of `data.length` bytes at `offset` (0-4095; bytes past the end read all ones). */
  read(offset: number, data: Uint8Array): void {
    const end = offset + data.length;
    for (const watch of this.#readHooks) {
      if (offset < watch.end && end > watch.start) watch.hook(offset, data.length);
    }
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      data[i] = o >= 0 && o < PCIE_CONFIG_SPACE_SIZE ? this.#bytes[o]! : 0xff;
    }
  }

  /** Guest write of `data` at `offset`: writable bits change, read-only bits stay. */
  write(offset: number, data: Uint8Array): void {
    const end = Math.min(offset + data.length, PCIE_CONFIG_SPACE_SIZE);
    if (offset < 0 || offset >= end) return;
    const previousCommand = this.command;
    let strictTouched = false;
    for (let o = offset; o < end; o++) {
      const value = data[o - offset]!;
      const mask = this.#writable[o]!;
      const old = this.#bytes[o]!;
      if (this.#strict[o] && (value & ~mask) !== (old & ~mask)) strictTouched = true;
      this.#bytes[o] = (old & ~mask) | (value & mask);
    }
    if (strictTouched) {
      this.#onReadOnlyWrite(
        `guest wrote read-only configuration bytes at 0x${offset.toString(16)} (${data.length} bytes)`,
      );
    }
    for (const watch of this.#writeHooks) {
      if (offset < watch.end && end > watch.start) watch.hook(offset, end - offset);
    }
    const command = this.command;
    if (command !== previousCommand) this.events.emit('command', command, previousCommand);
    const touchesBars = offset < PciConfig.BAR0 + 4 * PCI_BAR_COUNT && end > PciConfig.BAR0;
    if (touchesBars || command !== previousCommand) this.#refreshBars();
  }

  // ---- device and VMM side ---------------------------------------------------------------

  /** The command register. */
  get command(): number {
    return this.#getU16(PciConfig.COMMAND);
  }

  /** The interrupt pin register (0 none, 1-4 INTA#-INTD#). */
  get interruptPin(): number {
    return this.#bytes[PciConfig.INTERRUPT_PIN]!;
  }

  /** True while the command register's INTx disable bit is set. */
  get intxDisabled(): boolean {
    return (this.command & PciCommand.INTX_DISABLE) !== 0;
  }

  /** Sets the interrupt line register (what firmware writes; a hint for the OS). */
  setInterruptLine(line: number): void {
    this.#bytes[PciConfig.INTERRUPT_LINE] = checkByte('interrupt line', line, 0xff);
  }

  /** Sets or clears the status register's Interrupt Status bit (the function's INTx is pending). */
  setInterruptStatus(pending: boolean): void {
    const status = PciConfig.STATUS;
    if (pending) this.#bytes[status] = this.#bytes[status]! | PciStatus.INTERRUPT;
    else this.#bytes[status] = this.#bytes[status]! & ~PciStatus.INTERRUPT;
  }

  /** Reads a byte, 16-bit or 32-bit value as the device sees it (no hooks run). */
  getU8(offset: number): number {
    return this.#bytes[offset]!;
  }
  getU16(offset: number): number {
    return this.#getU16(offset);
  }
  getU32(offset: number): number {
    return (this.#getU16(offset) | (this.#getU16(offset + 2) << 16)) >>> 0;
  }
  /** Device-side stores: ignore the writable masks. */
  setU8(offset: number, value: number): void {
    this.#bytes[offset] = value & 0xff;
  }
  setU16(offset: number, value: number): void {
    this.#setU16(offset, value);
  }
  setU32(offset: number, value: number): void {
    this.#setU16(offset, value & 0xffff);
    this.#setU16(offset + 2, value >>> 16);
  }

  /** Makes the bits of `mask` writable by the guest in the `length` bytes at `offset` (little-endian). */
  setWritable(offset: number, length: number, mask: number): void {
    let rest = mask >>> 0;
    for (let i = 0; i < length; i++) {
      this.#writable[offset + i] = rest & 0xff;
      this.#strict[offset + i] = 0;
      rest >>>= 8;
    }
  }

  /** Marks bytes whose read-only bits a guest should never change (counted when it tries). */
  setStrictReadOnly(offset: number, length: number): void {
    this.#strictRange(offset, length);
  }

  /** Runs `hook` after every guest write that touches `[offset, offset + length)`. */
  watchWrites(offset: number, length: number, hook: ConfigWriteHook): void {
    this.#writeHooks.push({ start: offset, end: offset + length, hook });
  }

  /** Runs `hook` before every guest read that touches `[offset, offset + length)`. */
  watchReads(offset: number, length: number, hook: ConfigReadHook): void {
    this.#readHooks.push({ start: offset, end: offset + length, hook });
  }

  /**
   * Appends a capability of `length` bytes (ID and next pointer included) to the list, dword
   * aligned, in the first 256 bytes (§6.7). Returns its offset; the caller fills the body.
   */
  addCapability(id: number, length: number): number {
    if (this.#initial) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        'capabilities must be added before the configuration is sealed',
      );
    }
    const offset = this.#nextCapability;
    if (length < 2 || offset + length > PCI_CONFIG_SPACE_SIZE) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `no room for a ${length}-byte capability at 0x${offset.toString(16)}`,
      );
    }
    this.#bytes[offset] = checkByte('capability ID', id, 0xff);
    this.#bytes[offset + 1] = 0;
    const previous = this.#capabilities.at(-1);
    this.#bytes[previous ? previous.offset + 1 : PciConfig.CAPABILITY_LIST] = offset;
    this.#bytes[PciConfig.STATUS] = this.#bytes[PciConfig.STATUS]! | PciStatus.CAP_LIST;
    this.#strictRange(offset, 2);
    this.#capabilities.push({ id, offset, length });
    this.#nextCapability = (offset + length + 3) & ~3;
    return offset;
  }

  /** The capabilities in list order. */
  capabilities(): readonly {
    readonly id: number;
    readonly offset: number;
    readonly length: number;
  }[] {
    return this.#capabilities;
  }

  /**
   * Records the current contents as the state {@link reset} returns to. Owners call it once
   * their capabilities are in place.
   */
  seal(): void {
    this.#initial = { bytes: this.#bytes.slice(), writable: this.#writable.slice() };
  }

  /**
   * Function-level reset: every register returns to its sealed value (command 0, BARs 0,
   * interrupt line, capabilities' writable fields). Emits the usual events for what changed.
   */
  reset(): void {
    if (!this.#initial) this.seal();
    const previousCommand = this.command;
    this.#bytes.set(this.#initial!.bytes);
    this.#writable.set(this.#initial!.writable);
    const command = this.command;
    if (command !== previousCommand) this.events.emit('command', command, previousCommand);
    this.#refreshBars();
  }

  /** The BAR with number `index` (either number of a 64-bit pair), or `undefined`. */
  bar(index: number): PciBarState | undefined {
    return this.#barStates.find(
      (bar) => bar.index === index || (bar.kind === 'mem64' && bar.index + 1 === index),
    );
  }

  /** Every implemented BAR, by number. */
  bars(): readonly PciBarState[] {
    return this.#barStates;
  }

  /**
   * Programs BAR `index` with `address` as firmware would (the VMM's resource assignment).
   * Throws if the address is not aligned to the BAR's size or does not fit its kind.
   */
  setBarAddress(index: number, address: number): void {
    const definition = this.#bars[index];
    if (!definition) {
      throw new PciTransportError('PCI_INVALID_OPTION', `BAR ${index} is not implemented`);
    }
    const limit = definition.kind === 'mem64' ? Number.MAX_SAFE_INTEGER : 0xffff_ffff;
    if (
      !Number.isSafeInteger(address) ||
      address < 0 ||
      address % definition.size !== 0 ||
      address + definition.size - 1 > limit
    ) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `address 0x${address.toString(16)} does not fit ${definition.kind} BAR ${index} of 0x${definition.size.toString(16)} bytes`,
      );
    }
    const register = PciConfig.BAR0 + 4 * index;
    const flags = this.getU32(register) & (definition.kind === 'io' ? 0x3 : 0xf);
    this.setU32(register, ((address % 0x1_0000_0000) | flags) >>> 0);
    if (definition.kind === 'mem64') this.setU32(register + 4, Math.floor(address / 0x1_0000_0000));
    this.#refreshBars();
  }

  /** Sets the command register as firmware would (e.g. enable memory decoding). */
  setCommand(value: number): void {
    const previous = this.command;
    this.#setU16(PciConfig.COMMAND, value & PCI_COMMAND_WRITABLE);
    const command = this.command;
    if (command !== previous) this.events.emit('command', command, previous);
    this.#refreshBars();
  }

  // ---- internals -------------------------------------------------------------------------

  #defineBars(
    definitions: readonly (PciBarDefinition | undefined)[],
  ): (PciBarDefinition | undefined)[] {
    if (definitions.length > PCI_BAR_COUNT) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `a type 0 header has ${PCI_BAR_COUNT} BARs`,
      );
    }
    const bars: (PciBarDefinition | undefined)[] = Array.from(
      { length: PCI_BAR_COUNT },
      () => undefined,
    );
    for (let index = 0; index < definitions.length; index++) {
      const bar = definitions[index];
      if (!bar) continue;
      const minimum = bar.kind === 'io' ? 4 : 16;
      const maximum = bar.kind === 'mem64' ? 2 ** 52 : bar.kind === 'io' ? 2 ** 31 : 2 ** 31;
      if (
        !Number.isSafeInteger(bar.size) ||
        bar.size < minimum ||
        bar.size > maximum ||
        !isPowerOfTwo(bar.size)
      ) {
        throw new PciTransportError(
          'PCI_INVALID_OPTION',
          `BAR ${index} size ${bar.size} is not a power of two from ${minimum} to ${maximum}`,
        );
      }
      if (bar.kind === 'mem64' && (index === PCI_BAR_COUNT - 1 || definitions[index + 1])) {
        throw new PciTransportError(
          'PCI_INVALID_OPTION',
          `64-bit BAR ${index} needs BAR ${index + 1} free for its upper half`,
        );
      }
      if (bar.kind !== 'mem64' && bars[index - 1]?.kind === 'mem64') {
        throw new PciTransportError(
          'PCI_INVALID_OPTION',
          `BAR ${index} is the upper half of BAR ${index - 1}`,
        );
      }
      if (bar.kind === 'io' && bar.prefetchable) {
        throw new PciTransportError(
          'PCI_INVALID_OPTION',
          `I/O BAR ${index} cannot be prefetchable`,
        );
      }
      bars[index] = bar;
      const register = PciConfig.BAR0 + 4 * index;
      if (bar.kind === 'io') {
        this.setU32(register, PciBarFlags.IO_SPACE);
        this.setWritable(register, 4, ~(bar.size - 1) & 0xffff_fffc);
        continue;
      }
      const flags =
        (bar.kind === 'mem64' ? PciBarFlags.MEM_TYPE_64 : PciBarFlags.MEM_TYPE_32) |
        (bar.prefetchable ? PciBarFlags.MEM_PREFETCH : 0);
      this.setU32(register, flags);
      // Address bits below the size are hard-wired 0: that is what makes sizing work.
      const mask = ~(BigInt(bar.size) - 1n) & 0xffff_ffff_ffff_fff0n;
      this.setWritable(register, 4, Number(mask & 0xffff_ffffn));
      if (bar.kind === 'mem64') this.setWritable(register + 4, 4, Number(mask >> 32n));
    }
    return bars;
  }

  #computeBars(): PciBarState[] {
    const command = this.command;
    const states: PciBarState[] = [];
    for (let index = 0; index < PCI_BAR_COUNT; index++) {
      const bar = this.#bars[index];
      if (!bar) continue;
      const register = PciConfig.BAR0 + 4 * index;
      const low = this.getU32(register);
      let address: number | undefined;
      let enabled: boolean;
      if (bar.kind === 'io') {
        address = (low & 0xffff_fffc) >>> 0;
        enabled = (command & PciCommand.IO_SPACE) !== 0;
      } else {
        const high = bar.kind === 'mem64' ? this.getU32(register + 4) : 0;
        address = guestAddressFromParts((low & 0xffff_fff0) >>> 0, high);
        if (address !== undefined && BigInt(address) + BigInt(bar.size) - 1n > MAX_SAFE_BIG) {
          address = undefined;
        }
        enabled = (command & PciCommand.MEMORY_SPACE) !== 0;
      }
      states.push({
        index,
        kind: bar.kind,
        size: bar.size,
        prefetchable: bar.prefetchable ?? false,
        address,
        decoding: enabled && address !== undefined,
      });
    }
    return states;
  }

  #refreshBars(): void {
    const previous = this.#barStates;
    const next = this.#computeBars();
    this.#barStates = next;
    for (let i = 0; i < next.length; i++) {
      const now = next[i]!;
      const before = previous[i]!;
      if (now.address !== before.address || now.decoding !== before.decoding) {
        this.events.emit('bar-change', now, before);
      }
    }
  }

  #strictRange(offset: number, length: number): void {
    this.#strict.fill(1, offset, offset + length);
  }

  #setWritableU16(offset: number, mask: number): void {
    this.setWritable(offset, 2, mask);
  }

  #getU16(offset: number): number {
    return this.#bytes[offset]! | (this.#bytes[offset + 1]! << 8);
  }

  #setU16(offset: number, value: number): void {
    this.#bytes[offset] = value & 0xff;
    this.#bytes[offset + 1] = (value >> 8) & 0xff;
  }
}

function isPowerOfTwo(value: number): boolean {
  // Sizes go beyond 2^31, so no bit tricks on 32-bit integers.
  return Number.isInteger(Math.log2(value));
}
