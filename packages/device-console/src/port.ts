/**
 * Console ports: the public {@link ConsolePort} a VMM holds (state, counters, events), and the
 * internal {@link PortChannel} that joins a port's backend to the queue handler.
 */

import type { ChainReader, DescriptorChain } from '@virtkit/core';
import { EventEmitter } from 'eventemitter3';
import type { BackendHost, PortBackend } from './backends/types.js';
import type { ConsoleSize } from './requests.js';

/** What to do with guest output while a port's backend is full. */
export type OverflowPolicy =
  /** Stop taking guest output until the backend drains: the guest's own buffers wait (default). */
  | 'wait'
  /** Keep taking guest output and drop (and count) it until the backend drains. */
  | 'drop';

/** Byte counters of one port. */
export interface PortStats {
  /** Bytes the guest wrote that reached the backend. */
  bytesFromGuest: number;
  /** Bytes of input written into the guest's buffers. */
  bytesToGuest: number;
  /** Guest output dropped: host side closed, backend without output, `drop` policy, reset. */
  outputDropped: number;
  /** Input dropped: port removed or device closed before the guest took it, or over the limit. */
  inputDropped: number;
}

/** Typed events of a {@link ConsolePort}. */
export interface ConsolePortEvents {
  /** The driver set the port up (PORT_READY, or activation without MULTIPORT). */
  ready: [];
  /** The guest opened the port (PORT_OPEN 1; console ports are opened by the driver itself). */
  'guest-open': [];
  /** The guest closed the port, or the device was reset. */
  'guest-close': [];
  /** The port was removed from the device. */
  removed: [];
}

/** Live protocol state of a port, shared by its channel and its public view. */
export interface PortStatus {
  /** DEVICE_ADD was sent for it since the last reset (always true for port 0 without MULTIPORT). */
  announced: boolean;
  /** The driver answered PORT_READY 1. */
  ready: boolean;
  /** The guest has the port open. */
  guestOpen: boolean;
  /** The backend reports its host side open. */
  hostConnected: boolean;
  /** The port was removed. */
  removed: boolean;
  /** The terminal size, for console ports. */
  size: ConsoleSize | undefined;
}

/**
 * One port of a console device, as the VMM sees it: identity, state, counters and events.
 *
 * @example
 * ```ts
 * const agent = device.addPort({ name: 'org.example.agent', backend });
 * agent.on('guest-open', () => console.log('the guest opened /dev/virtio-ports/org.example.agent'));
 * ```
 */
export class ConsolePort extends EventEmitter<ConsolePortEvents> {
  /** Port number (0 is the console, hvc0 in Linux). */
  readonly id: number;
  /** The name the guest sees in /sys/class/virtio-ports/vportNpM/name, if any. */
  readonly name: string | undefined;
  /** True for console ports (hvc in Linux); false for generic ports (/dev/vportNpM). */
  readonly console: boolean;
  /** The host side. */
  readonly backend: PortBackend;
  /** Counters (live object). */
  readonly stats: Readonly<PortStats>;
  readonly #status: Readonly<PortStatus>;

  constructor(
    info: { id: number; name: string | undefined; console: boolean; backend: PortBackend },
    status: Readonly<PortStatus>,
    stats: Readonly<PortStats>,
  ) {
    super();
    this.id = info.id;
    this.name = info.name;
    this.console = info.console;
    this.backend = info.backend;
    this.#status = status;
    this.stats = stats;
  }

  /** The driver set the port up. */
  get ready(): boolean {
    return this.#status.ready;
  }
  /** The guest has the port open. */
  get guestOpen(): boolean {
    return this.#status.guestOpen;
  }
  /** The host side (backend) is open. */
  get hostConnected(): boolean {
    return this.#status.hostConnected;
  }
  /** The port was removed from its device. */
  get removed(): boolean {
    return this.#status.removed;
  }
  /** The terminal size last reported by the backend (console ports). */
  get size(): ConsoleSize | undefined {
    return this.#status.size;
  }
}

/** Most input a port holds beyond what its guest buffers took (one stream chunk fits easily). */
export const PENDING_INPUT_LIMIT = 256 * 1024;

/** The callbacks a channel forwards its backend's reports to (the device). */
export interface ChannelListener {
  inputArrived(channel: PortChannel): void;
  connectionChanged(channel: PortChannel): void;
  drained(channel: PortChannel): void;
  resized(channel: PortChannel): void;
}

/**
 * The device's side of a port: its backend, protocol state, input waiting for guest buffers and
 * the transmit chain in progress. Internal to the package.
 */
export class PortChannel {
  readonly id: number;
  readonly name: string | undefined;
  readonly console: boolean;
  readonly overflow: OverflowPolicy;
  readonly backend: PortBackend;
  readonly status: PortStatus = {
    announced: false,
    ready: false,
    guestOpen: false,
    hostConnected: false,
    removed: false,
    size: undefined,
  };
  readonly stats: PortStats = {
    bytesFromGuest: 0,
    bytesToGuest: 0,
    outputDropped: 0,
    inputDropped: 0,
  };
  readonly port: ConsolePort;

  /** Input the guest has not taken yet, oldest first. */
  readonly pending: Uint8Array[] = [];
  pendingBytes = 0;
  /** Whether the backend was asked to stop delivering input (backends start paused). */
  inputPaused = true;
  /** The backend returned `'full'` and has not drained yet. */
  backendFull = false;
  /** A transmit chain partly handed to the backend (the rest waits for `drained`). */
  txChain: DescriptorChain | undefined;
  txReader: ChainReader | undefined;
  /** Re-entrancy guard of transmit processing. */
  txBusy = false;
  txAgain = false;

  readonly #listener: ChannelListener;
  readonly #log: (message: string) => void;

  constructor(
    info: {
      id: number;
      name: string | undefined;
      console: boolean;
      overflow: OverflowPolicy;
      backend: PortBackend;
    },
    listener: ChannelListener,
    log: (message: string) => void,
  ) {
    this.id = info.id;
    this.name = info.name;
    this.console = info.console;
    this.overflow = info.overflow;
    this.backend = info.backend;
    this.#listener = listener;
    this.#log = log;
    this.port = new ConsolePort(info, this.status, this.stats);
  }

  /** Connects the backend; it reports its initial state from inside `attach`. */
  attach(): void {
    const host: BackendHost = {
      input: (data) => this.#input(data),
      setConnected: (connected) => {
        if (this.status.removed || this.status.hostConnected === connected) return;
        this.status.hostConnected = connected;
        if (!connected) this.backendFull = false;
        this.#listener.connectionChanged(this);
      },
      drained: () => {
        if (!this.backendFull) return;
        this.backendFull = false;
        this.#listener.drained(this);
      },
      resize: (size) => {
        this.status.size = size;
        this.#listener.resized(this);
      },
      log: (message) => this.#log(`console port ${this.id}: ${message}`),
    };
    this.#call('attach', () => this.backend.attach(host));
  }

  /**
   * Hands guest output to the backend, counting it as passed on or dropped; a `'full'` answer
   * sets {@link backendFull} until the backend drains.
   */
  output(data: Uint8Array): void {
    if (
      !this.status.hostConnected ||
      this.status.removed ||
      (this.backendFull && this.overflow === 'drop')
    ) {
      this.stats.outputDropped += data.length;
      return;
    }
    let result: ReturnType<PortBackend['write']> = 'dropped';
    this.#call('write', () => {
      result = this.backend.write(data);
    });
    if (result === 'dropped') {
      this.stats.outputDropped += data.length;
      return;
    }
    this.stats.bytesFromGuest += data.length;
    if (result === 'full') this.backendFull = true;
  }

  /** True when guest output must wait for the backend (the `wait` policy's backpressure). */
  get outputBlocked(): boolean {
    return this.backendFull && this.overflow === 'wait' && this.status.hostConnected;
  }

  pauseInput(): void {
    if (this.inputPaused) return;
    this.inputPaused = true;
    this.#call('pauseInput', () => this.backend.pauseInput());
  }

  resumeInput(): void {
    if (!this.inputPaused || this.status.removed) return;
    this.inputPaused = false;
    this.#call('resumeInput', () => this.backend.resumeInput());
  }

  guestConnected(open: boolean): void {
    const backend = this.backend;
    if (backend.guestConnected) this.#call('guestConnected', () => backend.guestConnected?.(open));
  }

  /**
   * Tells the VMM's listeners about the port. A listener that throws is logged: its mistake must
   * not reach the queue processing that raised the event.
   */
  emit(event: keyof ConsolePortEvents): void {
    try {
      this.port.emit(event);
    } catch (error) {
      this.#log(`console port ${this.id}: a '${event}' listener threw: ${String(error)}`);
    }
  }

  /** Drops the input the guest never took, counting it. */
  dropPending(): void {
    this.stats.inputDropped += this.pendingBytes;
    this.pending.length = 0;
    this.pendingBytes = 0;
  }

  #input(data: Uint8Array): void {
    if (data.length === 0) return;
    if (this.status.removed || this.pendingBytes + data.length > PENDING_INPUT_LIMIT) {
      // Only a backend that ignores pauseInput gets here: count what cannot be kept.
      this.stats.inputDropped += data.length;
      this.pauseInput();
      return;
    }
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.#listener.inputArrived(this);
  }

  // Backends must not throw; if one does anyway, the guest's queue processing must go on.
  #call(what: string, action: () => void): void {
    try {
      action();
    } catch (error) {
      this.#log(`console port ${this.id}: backend ${what} failed: ${String(error)}`);
    }
  }
}
