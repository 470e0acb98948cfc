/**
 * A PCI root bus (bus 0) with its host bridge: configuration access through mechanism #1
 * (ports 0xCF8/0xCFC) and ECAM, BAR assignment from the windows a VMM gives it, routing of
 * guest accesses to whichever BAR decodes them, and descriptions of MSI-X routes, notify
 * addresses and INTx wiring that a VMM turns into KVM routes, ioeventfds and a device tree.
 */

import { type BusDevice, ViolationCounter } from '@virtkit/core';
import { EventEmitter } from 'eventemitter3';
import { type PciWindow, PciWindowAllocator } from './allocator.js';
import type { PciBarKind, PciBarState, PciFunction } from './configuration.js';
import {
  CONF1_ADDRESS_MASK,
  CONF1_ENABLE,
  ECAM_BUS_SIZE,
  PCI_CONFIG_SPACE_SIZE,
  PCI_DEVICES_PER_BUS,
  PCI_FUNCTIONS_PER_DEVICE,
  PCI_HEADER_TYPE_MULTIFUNCTION,
  PciCommand,
  PciConfig,
} from './constants.js';
import { PciTransportError } from './errors.js';
import type { PciNotifyAddress } from './function.js';
import { PciHostBridge } from './host-bridge.js';
import { type InterruptLine, type MsiSink, SharedInterruptLine } from './interrupts.js';
import type { MsixRoute } from './msix.js';

/** Where a function sits on the root bus. */
export interface PciAddress {
  readonly device: number;
  readonly function: number;
}

/** A BAR of a function on the bus. */
export interface PciBarAssignment extends PciAddress, PciBarState {}

/** A change of a BAR's address or decoding, for a VMM that maps BARs itself. */
export interface PciBarChange extends PciAddress {
  readonly bar: PciBarState;
  readonly previous: PciBarState;
}

/** An MSI-X route of a function on the bus. */
export interface PciMsixRoute extends PciAddress, MsixRoute {
  /** MSI-X enabled and the function not masked (the route can fire). */
  readonly enabled: boolean;
}

/** A queue's notify address of a function on the bus. */
export interface PciQueueNotify extends PciAddress, PciNotifyAddress {}

/** One INTx input of the host bridge. */
export interface PciIntxInput {
  /** The platform line (a PLIC source, an IOAPIC pin via irqfd...). */
  readonly line: InterruptLine;
  /** Its platform interrupt number: written to functions' interrupt line register, reported in routes. */
  readonly irq?: number;
}

/** Which host INTx input a function's pin drives. */
export interface PciIntxRoute extends PciAddress {
  /** 1-4 for INTA#-INTD#. */
  readonly pin: number;
  /** Index into {@link PciRootOptions.intx}. */
  readonly input: number;
  readonly irq: number | undefined;
}

/**
 * The device tree `interrupt-map` of the host bridge node (IEEE 1275 PCI bus binding): each
 * entry maps a child unit address (phys.hi with the device number in bits 15:11, phys.mid,
 * phys.lo) and pin to a host input. A VMM appends its interrupt controller phandle and the
 * parent specifier for `irq`.
 */
export interface PciInterruptMap {
  /** `interrupt-map-mask`: which bits of child address and pin the map matches on. */
  readonly mask: readonly [number, number, number, number];
  readonly entries: readonly {
    readonly childAddress: readonly [number, number, number];
    readonly pin: number;
    readonly input: number;
    readonly irq: number | undefined;
  }[];
}

/** Options of a {@link PciRoot}. */
export interface PciRootOptions {
  /** Window for 32-bit memory BARs (and 64-bit ones when {@link mem64} is absent or full). */
  readonly mem32?: PciWindow;
  /** Window for 64-bit memory BARs. */
  readonly mem64?: PciWindow;
  /** Window for I/O BARs. */
  readonly io?: PciWindow;
  /**
   * The host bridge's INTx inputs (usually 4). Device d's pin p (1-4) drives input
   * `(d + p - 1) % intx.length`, the standard swizzle; functions sharing an input are wire-ORed.
   */
  readonly intx?: readonly PciIntxInput[];
  /** Where MSI-X messages of every function go (connected to each function added). */
  readonly msi?: MsiSink;
  /** The function at 00:00.0 (default a {@link PciHostBridge}; `false` for none). */
  readonly hostBridge?: PciFunction | false;
  /** Buses the ECAM window covers (default 1: 1 MiB). Only bus 0 has functions. */
  readonly ecamBuses?: number;
  /** Turn on memory/I/O decoding after assigning BARs, as firmware that boots from a device would (default false). */
  readonly enableDecode?: boolean;
  /** Diagnostic messages (default: dropped). */
  readonly log?: (message: string) => void;
}

/** Options of {@link PciRoot.addFunction}. */
export interface AddFunctionOptions {
  /** Function number 0-7 (default 0). */
  readonly function?: number;
  /** Assign BAR addresses from the windows now (default true). */
  readonly assign?: boolean;
}

/** Typed events of a {@link PciRoot}. */
export interface PciRootEvents {
  /** A BAR moved or its decoding changed: remap it, re-register notify ioeventfds. */
  'bar-change': [change: PciBarChange];
  /** MSI-X table entry `vector` or (when undefined) the enable/mask state changed. */
  'msix-change': [address: PciAddress, vector: number | undefined];
  /** Two decoding BARs overlap; accesses go to the first in (device, function, BAR) order. */
  'bar-overlap': [first: PciBarAssignment, second: PciBarAssignment];
}

interface Slot {
  readonly device: number;
  readonly function: number;
  readonly fn: PciFunction;
  readonly assigned: Map<number, number>;
}

interface Decoder {
  readonly start: number;
  readonly end: number;
  readonly slot: Slot;
  readonly bar: PciBarState;
}

type Space = 'memory' | 'io';

const spaceOf = (kind: PciBarKind): Space => (kind === 'io' ? 'io' : 'memory');

/**
 * Bus 0 of a PCI hierarchy and its host bridge.
 *
 * Guest accesses to BARs reach it through {@link mmioRead}/{@link mmioWrite} (absolute
 * addresses), {@link ioRead}/{@link ioWrite}, or the per-window bus devices of
 * {@link windowDevice}. Each goes to the BAR that decodes the address (memory/I/O enable set in
 * its command register). When the guest programs BARs on top of each other, PCI lets it; we
 * count it (`BAR_OVERLAP` in {@link violations}, a `bar-overlap` event) and route to the first
 * BAR in (device, function, BAR number) order, so the outcome is deterministic. Accesses nothing
 * decodes read all ones and are counted (`UNCLAIMED_ACCESS`).
 *
 * @example
 * ```ts
 * const root = new PciRoot({
 *   mem32: { base: 0x4000_0000, size: 0x1000_0000 },
 *   mem64: { base: 0x1_0000_0000, size: 0x1_0000_0000 },
 *   intx: [0, 1, 2, 3].map((i) => ({ line: plic.source(32 + i), irq: 32 + i })),
 *   msi: { signal: (address, data) => vm.signalMsi(address, data) },
 * });
 * root.addFunction(1, new VirtioPciFunction(device, { memory }));
 * io.map(0xcf8, 8, root.conf1);
 * mmio.map(0x3000_0000, root.ecamSize, root.ecam);
 * mmio.map(0x4000_0000, 0x1000_0000, root.windowDevice('mem32'));
 * ```
 */
export class PciRoot {
  readonly events = new EventEmitter<PciRootEvents>();
  /** Guest misuse of configuration access and BAR space, by code. */
  readonly violations = new ViolationCounter();
  /** Config mechanism #1: a bus device for ports 0xCF8-0xCFF (see {@link PciConfigIo}). */
  readonly conf1: PciConfigIo;
  /** ECAM: a bus device for the memory-mapped configuration window (offsets from its base). */
  readonly ecam: BusDevice;
  /** Bytes of the ECAM window. */
  readonly ecamSize: number;

  readonly #slots = new Map<number, Slot>();
  readonly #windows: {
    mem32?: PciWindowAllocator;
    mem64?: PciWindowAllocator;
    io?: PciWindowAllocator;
  };
  readonly #intx: readonly PciIntxInput[];
  readonly #sharedIntx: SharedInterruptLine[];
  readonly #msi: MsiSink | undefined;
  readonly #enableDecode: boolean;
  readonly #log: (message: string) => void;
  #decoders: { memory: Decoder[]; io: Decoder[] } | undefined;
  #overlaps = new Set<string>();

  constructor(options: PciRootOptions = {}) {
    this.#log = options.log ?? (() => {});
    this.#windows = {
      ...(options.mem32 ? { mem32: new PciWindowAllocator(options.mem32) } : {}),
      ...(options.mem64 ? { mem64: new PciWindowAllocator(options.mem64) } : {}),
      ...(options.io ? { io: new PciWindowAllocator(options.io) } : {}),
    };
    if (options.mem32 && options.mem32.base + options.mem32.size > 0x1_0000_0000) {
      throw new PciTransportError('PCI_INVALID_OPTION', 'the mem32 window must end below 4 GiB');
    }
    this.#intx = options.intx ?? [];
    this.#sharedIntx = this.#intx.map((input) => new SharedInterruptLine(input.line));
    this.#msi = options.msi;
    this.#enableDecode = options.enableDecode ?? false;
    const buses = options.ecamBuses ?? 1;
    if (!Number.isInteger(buses) || buses < 1 || buses > 256) {
      throw new PciTransportError('PCI_INVALID_OPTION', `ecamBuses ${buses} is not from 1 to 256`);
    }
    this.ecamSize = buses * ECAM_BUS_SIZE;
    this.conf1 = new PciConfigIo(this);
    this.ecam = {
      read: (offset, data) => this.#ecamAccess(offset, data, 'read'),
      write: (offset, data) => this.#ecamAccess(offset, data, 'write'),
    };
    const bridge = options.hostBridge === undefined ? new PciHostBridge() : options.hostBridge;
    if (bridge) this.addFunction(0, bridge);
  }

  // ---- topology ----------------------------------------------------------------------------

  /**
   * Puts `fn` at device number `device` (1-31; 0 holds the host bridge) and, unless told not
   * to, assigns its BARs from the windows, connects its INTx pin through the swizzle and its
   * MSI-X output to the root's sink. Throws if the slot is taken or a BAR does not fit.
   */
  addFunction(device: number, fn: PciFunction, options: AddFunctionOptions = {}): void {
    const functionNumber = options.function ?? 0;
    if (!Number.isInteger(device) || device < 0 || device >= PCI_DEVICES_PER_BUS) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `device number ${device} is not from 0 to 31`,
      );
    }
    if (
      !Number.isInteger(functionNumber) ||
      functionNumber < 0 ||
      functionNumber >= PCI_FUNCTIONS_PER_DEVICE
    ) {
      throw new PciTransportError(
        'PCI_INVALID_OPTION',
        `function number ${functionNumber} is not from 0 to 7`,
      );
    }
    const key = devfn(device, functionNumber);
    if (this.#slots.has(key)) {
      throw new PciTransportError(
        'PCI_SLOT_IN_USE',
        `00:${hex2(device)}.${functionNumber} is already taken`,
      );
    }
    const slot: Slot = { device, function: functionNumber, fn, assigned: new Map() };
    if (options.assign ?? true) this.#assign(slot);
    this.#slots.set(key, slot);

    fn.config.events.on('bar-change', (bar, previous) => {
      this.#decoders = undefined;
      this.#refreshOverlaps();
      this.events.emit('bar-change', { device, function: functionNumber, bar, previous });
    });
    fn.msix?.events.on('change', (vector) =>
      this.events.emit('msix-change', { device, function: functionNumber }, vector),
    );
    const pin = fn.config.interruptPin;
    if (pin !== 0 && this.#sharedIntx.length > 0 && fn.connectInterrupt) {
      const input = this.#intxInput(device, pin);
      fn.connectInterrupt(this.#sharedIntx[input]!.source());
      const irq = this.#intx[input]!.irq;
      if (irq !== undefined) fn.config.setInterruptLine(irq & 0xff);
    }
    if (this.#msi) fn.connectMsi?.(this.#msi);
    this.#decoders = undefined;
    this.#refreshOverlaps();
  }

  /** The function at `device`.`function`, or `undefined`. */
  getFunction(device: number, functionNumber = 0): PciFunction | undefined {
    return this.#slots.get(devfn(device, functionNumber))?.fn;
  }

  /**
   * Resets every function that can be reset and programs the BARs assigned at setup again, as
   * firmware does on a system reset.
   */
  async reset(): Promise<void> {
    for (const slot of this.#sorted()) {
      const fn = slot.fn;
      await fn.reset?.();
      for (const [index, address] of slot.assigned) fn.config.setBarAddress(index, address);
      if (this.#enableDecode && slot.assigned.size > 0) this.#enable(slot);
    }
  }

  // ---- configuration access ----------------------------------------------------------------

  /**
   * Configuration read of `data.length` bytes at `offset` of bus/device/function. Absent
   * functions (and every bus but 0) read all ones, as a master abort does.
   */
  readConfig(
    bus: number,
    device: number,
    functionNumber: number,
    offset: number,
    data: Uint8Array,
  ): void {
    const slot = bus === 0 ? this.#slots.get(devfn(device, functionNumber)) : undefined;
    if (!slot) {
      data.fill(0xff);
      return;
    }
    slot.fn.config.read(offset, data);
    // Function 0 says whether the device has more functions (Linux scans 1-7 only then).
    const header = PciConfig.HEADER_TYPE - offset;
    if (
      functionNumber === 0 &&
      header >= 0 &&
      header < data.length &&
      this.#multifunction(device)
    ) {
      data[header] = data[header]! | PCI_HEADER_TYPE_MULTIFUNCTION;
    }
  }

  /** Configuration write; writes to absent functions are dropped. */
  writeConfig(
    bus: number,
    device: number,
    functionNumber: number,
    offset: number,
    data: Uint8Array,
  ): void {
    const slot = bus === 0 ? this.#slots.get(devfn(device, functionNumber)) : undefined;
    slot?.fn.config.write(offset, data);
  }

  // ---- BAR space ---------------------------------------------------------------------------

  /** Guest read at a memory address; false (and `data` all ones) if no BAR decodes it. */
  mmioRead(address: number, data: Uint8Array): boolean {
    return this.#dispatch('memory', address, data, 'read');
  }

  /** Guest write at a memory address; false if no BAR decodes it. */
  mmioWrite(address: number, data: Uint8Array): boolean {
    return this.#dispatch('memory', address, data, 'write');
  }

  /** Guest read at an I/O port; false (and `data` all ones) if no BAR decodes it. */
  ioRead(port: number, data: Uint8Array): boolean {
    return this.#dispatch('io', port, data, 'read');
  }

  /** Guest write at an I/O port; false if no BAR decodes it. */
  ioWrite(port: number, data: Uint8Array): boolean {
    return this.#dispatch('io', port, data, 'write');
  }

  /**
   * A bus device covering one window (offsets from the window's base), for VMMs that map the
   * whole window once and let the root route accesses to BARs as the guest moves them.
   */
  windowDevice(window: 'mem32' | 'mem64' | 'io'): BusDevice {
    const allocator = this.#windows[window];
    if (!allocator) {
      throw new PciTransportError('PCI_INVALID_OPTION', `the root has no ${window} window`);
    }
    const base = allocator.window.base;
    const space: Space = window === 'io' ? 'io' : 'memory';
    return {
      read: (offset, data) => void this.#dispatch(space, base + offset, data, 'read'),
      write: (offset, data) => void this.#dispatch(space, base + offset, data, 'write'),
    };
  }

  // ---- what a VMM asks ---------------------------------------------------------------------

  /** Every implemented BAR with its current address and decoding, in (device, function, BAR) order. */
  barAssignments(): PciBarAssignment[] {
    return this.#sorted().flatMap((slot) =>
      slot.fn.config
        .bars()
        .map((bar) => ({ device: slot.device, function: slot.function, ...bar })),
    );
  }

  /** Pairs of decoding BARs that overlap now. */
  overlaps(): [PciBarAssignment, PciBarAssignment][] {
    const result: [PciBarAssignment, PciBarAssignment][] = [];
    for (const space of ['memory', 'io'] as const) {
      const decoders = this.#decoderTable()[space];
      for (let i = 0; i < decoders.length; i++) {
        for (let j = i + 1; j < decoders.length; j++) {
          const a = decoders[i]!;
          const b = decoders[j]!;
          if (a.start < b.end && b.start < a.end) result.push([assignment(a), assignment(b)]);
        }
      }
    }
    return result;
  }

  /** MSI-X routes of every function that has MSI-X. */
  msixRoutes(): PciMsixRoute[] {
    return this.#sorted().flatMap((slot) => {
      const msix = slot.fn.msix;
      if (!msix) return [];
      const enabled = msix.enabled && !msix.functionMasked;
      return msix
        .routes()
        .map((route) => ({ device: slot.device, function: slot.function, enabled, ...route }));
    });
  }

  /** Notify addresses of every virtio function's queues (for KVM_IOEVENTFD). */
  notifyAddresses(): PciQueueNotify[] {
    return this.#sorted().flatMap((slot) => {
      return (slot.fn.notifyAddresses?.() ?? []).map((notify) => ({
        device: slot.device,
        function: slot.function,
        ...notify,
      }));
    });
  }

  /** Which host INTx input each function's pin drives. */
  intxRoutes(): PciIntxRoute[] {
    if (this.#intx.length === 0) return [];
    return this.#sorted().flatMap((slot) => {
      const pin = slot.fn.config.interruptPin;
      if (pin === 0) return [];
      const input = this.#intxInput(slot.device, pin);
      return [
        { device: slot.device, function: slot.function, pin, input, irq: this.#intx[input]!.irq },
      ];
    });
  }

  /**
   * The host bridge node's `interrupt-map` for the swizzle this root applies. With 1, 2 or 4
   * inputs the map repeats every 4 devices, so it matches on the low two device bits (mask
   * 0x1800, 16 entries, as QEMU's virt machines write it); otherwise it lists all 32 devices.
   */
  interruptMap(): PciInterruptMap {
    const inputs = this.#intx.length;
    if (inputs === 0) return { mask: [0, 0, 0, 0], entries: [] };
    const compact = 4 % inputs === 0;
    const devices = compact ? 4 : PCI_DEVICES_PER_BUS;
    const entries: PciInterruptMap['entries'][number][] = [];
    for (let device = 0; device < devices; device++) {
      for (let pin = 1; pin <= 4; pin++) {
        const input = this.#intxInput(device, pin);
        entries.push({
          childAddress: [device << 11, 0, 0],
          pin,
          input,
          irq: this.#intx[input]!.irq,
        });
      }
    }
    return { mask: [compact ? 0x1800 : 0xf800, 0, 0, 7], entries };
  }

  // ---- internals ---------------------------------------------------------------------------

  #intxInput(device: number, pin: number): number {
    return (device + pin - 1) % this.#intx.length;
  }

  #multifunction(device: number): boolean {
    for (let fn = 1; fn < PCI_FUNCTIONS_PER_DEVICE; fn++) {
      if (this.#slots.has(devfn(device, fn))) return true;
    }
    return false;
  }

  #sorted(): Slot[] {
    return [...this.#slots.entries()].sort((a, b) => a[0] - b[0]).map(([, slot]) => slot);
  }

  #assign(slot: Slot): void {
    const config = slot.fn.config;
    for (const bar of config.bars()) {
      const address = this.#allocate(bar);
      if (address === undefined) {
        throw new PciTransportError(
          'PCI_RESOURCES_EXHAUSTED',
          `no room for ${bar.kind} BAR ${bar.index} (0x${bar.size.toString(16)} bytes) of 00:${hex2(slot.device)}.${slot.function}`,
        );
      }
      config.setBarAddress(bar.index, address);
      slot.assigned.set(bar.index, address);
    }
    if (this.#enableDecode && slot.assigned.size > 0) this.#enable(slot);
  }

  #allocate(bar: PciBarState): number | undefined {
    const { mem32, mem64, io } = this.#windows;
    switch (bar.kind) {
      case 'io':
        return io?.allocate(bar.size);
      case 'mem32':
        return mem32?.allocate(bar.size);
      case 'mem64':
        return mem64?.allocate(bar.size) ?? mem32?.allocate(bar.size);
    }
  }

  #enable(slot: Slot): void {
    const config = slot.fn.config;
    const io = config.bars().some((bar) => bar.kind === 'io');
    const memory = config.bars().some((bar) => bar.kind !== 'io');
    config.setCommand(
      config.command | (memory ? PciCommand.MEMORY_SPACE : 0) | (io ? PciCommand.IO_SPACE : 0),
    );
  }

  #decoderTable(): { memory: Decoder[]; io: Decoder[] } {
    if (this.#decoders) return this.#decoders;
    const table: { memory: Decoder[]; io: Decoder[] } = { memory: [], io: [] };
    for (const slot of this.#sorted()) {
      for (const bar of slot.fn.config.bars()) {
        if (!bar.decoding || bar.address === undefined) continue;
        table[spaceOf(bar.kind)].push({
          start: bar.address,
          end: bar.address + bar.size,
          slot,
          bar,
        });
      }
    }
    this.#decoders = table;
    this.#refreshOverlaps();
    return table;
  }

  /** Counts each pair of BARs that newly overlaps. */
  #refreshOverlaps(): void {
    if (!this.#decoders) {
      this.#decoderTable();
      return;
    }
    const now = new Set<string>();
    for (const [a, b] of this.overlaps()) {
      const key = `${a.device}.${a.function}.${a.index}/${b.device}.${b.function}.${b.index}`;
      now.add(key);
      if (!this.#overlaps.has(key)) {
        const message = `guest programmed BAR ${b.index} of 00:${hex2(b.device)}.${b.function} over BAR ${a.index} of 00:${hex2(a.device)}.${a.function}; accesses go to the latter`;
        this.violations.record({ code: 'BAR_OVERLAP', message, needsReset: false });
        this.#log(message);
        this.events.emit('bar-overlap', a, b);
      }
    }
    this.#overlaps = now;
  }

  #dispatch(space: Space, address: number, data: Uint8Array, kind: 'read' | 'write'): boolean {
    if (this.#decoders === undefined) {
      // A BAR changed since the last access: rebuild, and count overlaps it created.
      this.#decoderTable();
    }
    for (const decoder of this.#decoders![space]) {
      if (address >= decoder.start && address < decoder.end) {
        const offset = address - decoder.start;
        if (kind === 'read') decoder.slot.fn.readBar(decoder.bar.index, offset, data);
        else decoder.slot.fn.writeBar(decoder.bar.index, offset, data);
        return true;
      }
    }
    if (kind === 'read') data.fill(0xff);
    this.violations.record({
      code: 'UNCLAIMED_ACCESS',
      message: `guest ${kind === 'read' ? 'read' : 'wrote'} ${data.length} bytes at ${space} address 0x${address.toString(16)}, which no BAR decodes`,
      needsReset: false,
    });
    return false;
  }

  #ecamAccess(offset: number, data: Uint8Array, kind: 'read' | 'write'): void {
    const width = data.length;
    const register = offset & 0xfff;
    if (
      !Number.isInteger(offset) ||
      offset < 0 ||
      offset + width > this.ecamSize ||
      (width !== 1 && width !== 2 && width !== 4) ||
      (register & 3) + width > 4
    ) {
      if (kind === 'read') data.fill(0xff);
      this.#configViolation(
        `guest ${kind === 'read' ? 'read' : 'wrote'} ${width} bytes at ECAM offset 0x${offset.toString(16)}; configuration accesses are 1, 2 or 4 bytes inside one dword`,
      );
      return;
    }
    const bus = Math.floor(offset / ECAM_BUS_SIZE);
    const device = (offset >> 15) & 0x1f;
    const functionNumber = (offset >> 12) & 0x7;
    if (kind === 'read') this.readConfig(bus, device, functionNumber, register, data);
    else this.writeConfig(bus, device, functionNumber, register, data);
  }

  /** @internal Used by {@link PciConfigIo}. */
  configViolation(message: string): void {
    this.#configViolation(message);
  }

  #configViolation(message: string): void {
    this.violations.record({ code: 'CONFIG_ACCESS_INVALID', message, needsReset: false });
    this.#log(message);
  }
}

/**
 * Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) as one bus device over ports 0xCF8-0xCFF:
 * offsets 0-3 are the CONFIG_ADDRESS register, 4-7 CONFIG_DATA. {@link address} and
 * {@link data} are the same registers as two 4-port devices, for buses that map them apart.
 *
 * CONFIG_ADDRESS takes dword writes only; byte and word writes are ignored, as on Intel
 * chipsets and in QEMU. That is what Linux's probe relies on (arch/x86/pci/direct.c
 * pci_check_type1): `outb(0x01, 0xCFB)` must not disturb it, and after `outl(0x80000000, 0xCF8)`
 * an `inl(0xCF8)` must return 0x80000000. Reserved bits 30:24 and 1:0 read 0.
 */
export class PciConfigIo implements BusDevice {
  /** CONFIG_ADDRESS alone (ports 0xCF8-0xCFB). */
  readonly address: BusDevice;
  /** CONFIG_DATA alone (ports 0xCFC-0xCFF). */
  readonly data: BusDevice;
  readonly #root: PciRoot;
  #address = 0;

  constructor(root: PciRoot) {
    this.#root = root;
    this.address = {
      read: (offset, data) => this.read(offset, data),
      write: (offset, data) => this.write(offset, data),
    };
    this.data = {
      read: (offset, data) => this.read(offset + 4, data),
      write: (offset, data) => this.write(offset + 4, data),
    };
  }

  /** The CONFIG_ADDRESS register. */
  get addressRegister(): number {
    return this.#address;
  }

  read(offset: number, data: Uint8Array): void {
    const width = data.length;
    if (Number.isInteger(offset) && offset >= 0 && offset + width <= 4) {
      for (let i = 0; i < width; i++) data[i] = (this.#address >>> (8 * (offset + i))) & 0xff;
      return;
    }
    const target = this.#target(offset, width, 'read');
    if (!target) {
      data.fill(0xff);
      return;
    }
    this.#root.readConfig(target.bus, target.device, target.function, target.register, data);
  }

  write(offset: number, data: Uint8Array): void {
    const width = data.length;
    if (Number.isInteger(offset) && offset >= 0 && offset + width <= 4) {
      // Only a dword write sets CONFIG_ADDRESS; narrower ones go elsewhere on real chipsets.
      if (offset === 0 && width === 4) {
        this.#address =
          ((data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) &
            CONF1_ADDRESS_MASK) >>>
          0;
      }
      return;
    }
    const target = this.#target(offset, width, 'write');
    if (target) {
      this.#root.writeConfig(target.bus, target.device, target.function, target.register, data);
    }
  }

  #target(
    offset: number,
    width: number,
    kind: 'read' | 'write',
  ): { bus: number; device: number; function: number; register: number } | undefined {
    const lane = offset - 4;
    if (
      !Number.isInteger(offset) ||
      lane < 0 ||
      (width !== 1 && width !== 2 && width !== 4) ||
      lane + width > 4
    ) {
      this.#root.configViolation(
        `guest ${kind === 'read' ? 'read' : 'wrote'} ${width} bytes at port 0xcf8 + ${offset}; CONFIG_DATA takes 1, 2 or 4 bytes inside 0xcfc-0xcff`,
      );
      return undefined;
    }
    const address = this.#address;
    // With the enable bit clear, CONFIG_DATA is an ordinary (absent) port.
    if (!(address & CONF1_ENABLE)) return undefined;
    const register = (address & 0xfc) + lane;
    if (register + width > PCI_CONFIG_SPACE_SIZE) return undefined;
    return {
      bus: (address >>> 16) & 0xff,
      device: (address >>> 11) & 0x1f,
      function: (address >>> 8) & 0x7,
      register,
    };
  }
}

function devfn(device: number, functionNumber: number): number {
  return (device << 3) | functionNumber;
}

function hex2(value: number): string {
  return value.toString(16).padStart(2, '0');
}

function assignment(decoder: Decoder): PciBarAssignment {
  return { device: decoder.slot.device, function: decoder.slot.function, ...decoder.bar };
}
