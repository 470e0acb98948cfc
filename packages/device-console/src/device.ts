/**
 * The virtio-console device (§5.3): features, configuration space, queues, ports, activation and
 * reset. Queue processing is in `handler.ts`, control messages in `requests.ts`, the host sides
 * of ports in `backends/`.
 */

import {
  type ActivationContext,
  ConfigSpace,
  type ConfigSpaceOptions,
  DeviceType,
  Feature,
  featureBit,
  type QueueSpec,
  type VirtioDevice,
} from '@virtkit/core';
import type { PortBackend } from './backends/types.js';
import { ConsoleConfig, ConsoleFeature, MAX_PORTS, type ResizeLayout } from './constants.js';
import { ConsoleError } from './errors.js';
import { ConsoleHandler, type HandlerStats } from './handler.js';
import {
  type ChannelListener,
  type ConsolePort,
  type OverflowPolicy,
  PortChannel,
} from './port.js';
import { checkPortName, clampSize } from './requests.js';

/** A further port (beyond port 0) of a multiport device. */
export interface ConsolePortOptions {
  /** The host side. The device owns it from now on and closes it with the port. */
  readonly backend: PortBackend;
  /** Name the guest sees (/sys/class/virtio-ports/vportNpM/name, /dev/virtio-ports/NAME). */
  readonly name?: string;
  /** Make it a console port (an hvc in Linux) rather than a generic one (default false). */
  readonly console?: boolean;
  /** Port number, 1 to maxPorts - 1 (default: the lowest free one). */
  readonly id?: number;
  /** What to do with guest output while the backend is full (default `wait`). */
  readonly overflow?: OverflowPolicy;
}

/** Options of a {@link ConsoleDevice}. */
export interface ConsoleDeviceOptions {
  /** Port 0's host side (port 0 is the console: hvc0 in Linux). */
  readonly backend: PortBackend;
  /** Port 0's name (needs MULTIPORT, which a name turns on). */
  readonly name?: string;
  /** What to do with port 0's output while its backend is full (default `wait`). */
  readonly overflow?: OverflowPolicy;
  /** Further ports, created with the device. */
  readonly ports?: readonly ConsolePortOptions[];
  /**
   * Most ports, port 0 included (`max_nr_ports`), 1 to 511 (default: 1 + the number of `ports`).
   * Ports up to this number can be added while the guest runs.
   */
  readonly maxPorts?: number;
  /**
   * Offer VIRTIO_CONSOLE_F_MULTIPORT (default: when `maxPorts` > 1 or a port has a name). Without
   * it the device has port 0 only.
   */
  readonly multiport?: boolean;
  /**
   * Field order of RESIZE messages (default `cols-rows`: the spec's order, which Debian's 6.1 and
   * 6.12 guest kernels read; `rows-cols` for older Linux guests; see {@link ResizeLayout}).
   */
  readonly resizeLayout?: ResizeLayout;
  /** Largest size of each data queue, a power of two (default 128, as QEMU). */
  readonly queueSize?: number;
  /** Largest size of the two control queues, a power of two (default 32, as QEMU). */
  readonly controlQueueSize?: number;
  /** Diagnostics (backend I/O errors, driver failures). Default: dropped. */
  readonly log?: (message: string) => void;
  /** Runs a task after pending I/O callbacks (large outputs yield with it). Default `setImmediate`. */
  readonly defer?: (task: () => void) => void;
}

/** Device-wide counters of a {@link ConsoleDevice}. */
export interface ConsoleStats extends HandlerStats {
  /** Characters written to `emerg_wr` (each one is port 0 output). */
  emergencyWrites: number;
}

const RING_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.RING_PACKED);

const EMERG_WR_END = ConsoleConfig.EMERG_WR + 4;

/** The console's configuration space: `emerg_wr` is write-only, so reads of it return zeros. */
class ConsoleConfigSpace extends ConfigSpace {
  constructor(options: ConfigSpaceOptions) {
    super(ConsoleConfig.SIZE, options);
  }

  override read(offset: number, destination: Uint8Array): boolean {
    const ok = super.read(offset, destination);
    const from = Math.max(offset, ConsoleConfig.EMERG_WR);
    const to = Math.min(offset + destination.length, EMERG_WR_END);
    if (ok && from < to) destination.fill(0, from - offset, to - offset);
    return ok;
  }

  override snapshot(): Uint8Array {
    const bytes = super.snapshot();
    bytes.fill(0, ConsoleConfig.EMERG_WR, EMERG_WR_END);
    return bytes;
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 32768 && (n & (n - 1)) === 0;
}

/**
 * A virtio-console device: port 0 is the console; with MULTIPORT, further named or console ports
 * can exist from the start or be added while the guest runs.
 *
 * @example
 * ```ts
 * const device = new ConsoleDevice({ backend: new StdioBackend(), maxPorts: 4 });
 * const agent = device.addPort({ name: 'org.example.agent', backend: await SocketBackend.listen('/tmp/agent.sock') });
 * agent.on('guest-open', () => console.log('guest opened /dev/virtio-ports/org.example.agent'));
 * ```
 */
export class ConsoleDevice implements VirtioDevice {
  readonly deviceType = DeviceType.CONSOLE;
  readonly features: bigint;
  readonly queues: readonly QueueSpec[];
  readonly config: ConfigSpace;
  /** `max_nr_ports`: most ports, port 0 included. */
  readonly maxPorts: number;
  /** MULTIPORT is offered. */
  readonly multiport: boolean;
  readonly #resizeLayout: ResizeLayout;
  readonly #controlLimit: number;
  readonly #log: (message: string) => void;
  readonly #defer: (task: () => void) => void;
  readonly #channels = new Map<number, PortChannel>();
  readonly #stats: ConsoleStats = { controlDropped: 0, orphanBytes: 0, emergencyWrites: 0 };
  readonly #listener: ChannelListener;
  #handler: ConsoleHandler | undefined;
  #closed = false;

  constructor(options: ConsoleDeviceOptions) {
    const extra = options.ports ?? [];
    const maxPorts = options.maxPorts ?? 1 + extra.length;
    if (!Number.isInteger(maxPorts) || maxPorts < 1 || maxPorts > MAX_PORTS) {
      throw new ConsoleError(
        'CONSOLE_OPTIONS',
        `maxPorts ${maxPorts} is not between 1 and ${MAX_PORTS}`,
      );
    }
    const named = options.name !== undefined || extra.some((port) => port.name !== undefined);
    const multiport = options.multiport ?? (maxPorts > 1 || named);
    if (!multiport && (maxPorts > 1 || named || extra.length > 0)) {
      throw new ConsoleError(
        'CONSOLE_OPTIONS',
        'further ports, port names and maxPorts above 1 need MULTIPORT (multiport: false was given)',
      );
    }
    if (1 + extra.length > maxPorts) {
      throw new ConsoleError(
        'CONSOLE_OPTIONS',
        `${1 + extra.length} ports do not fit in maxPorts ${maxPorts}`,
      );
    }
    const queueSize = options.queueSize ?? 128;
    const controlQueueSize = options.controlQueueSize ?? 32;
    for (const [what, size] of [
      ['queueSize', queueSize],
      ['controlQueueSize', controlQueueSize],
    ] as const) {
      if (!isPowerOfTwo(size)) {
        throw new ConsoleError(
          'CONSOLE_OPTIONS',
          `${what} ${size} is not a power of two up to 32768`,
        );
      }
    }
    this.maxPorts = maxPorts;
    this.multiport = multiport;
    this.#resizeLayout = options.resizeLayout ?? 'cols-rows';
    this.#log = options.log ?? (() => {});
    this.#defer = options.defer ?? ((task) => setImmediate(task));
    // Room for a full round of messages per port (ADD, CONSOLE_PORT, RESIZE, NAME, OPEN) and then
    // some: a driver that stops taking control messages cannot make the device grow without bound.
    this.#controlLimit = 64 + 8 * maxPorts;

    const data: QueueSpec = { maxSize: queueSize };
    const control: QueueSpec = { maxSize: controlQueueSize };
    this.queues = multiport
      ? [data, data, control, control, ...Array.from({ length: 2 * (maxPorts - 1) }, () => data)]
      : [data, data];
    this.features =
      RING_FEATURES |
      featureBit(ConsoleFeature.SIZE) |
      featureBit(ConsoleFeature.EMERG_WRITE) |
      (multiport ? featureBit(ConsoleFeature.MULTIPORT) : 0n);
    this.config = new ConsoleConfigSpace({
      writable: [{ offset: ConsoleConfig.EMERG_WR, length: 4 }],
      onWrite: (offset, bytes) => {
        // §5.3.5: the low byte of emerg_wr goes out on port 0, whatever state the device is in.
        if (offset <= ConsoleConfig.EMERG_WR && offset + bytes.length > ConsoleConfig.EMERG_WR) {
          this.#emergencyWrite(bytes[ConsoleConfig.EMERG_WR - offset]!);
        }
      },
    });
    this.config.setU32(ConsoleConfig.MAX_NR_PORTS, maxPorts);

    this.#listener = {
      inputArrived: (channel) => {
        if (this.#handler) this.#handler.updateInput(channel);
        else channel.pauseInput();
      },
      connectionChanged: (channel) => this.#handler?.connectionChanged(channel),
      drained: (channel) => this.#handler?.transmit(channel),
      resized: (channel) => {
        if (channel.id === 0) this.#publishSize(false);
        this.#handler?.resized(channel);
      },
    };

    const names = new Set<string>();
    this.#checkName(options.name, names);
    for (const port of extra) this.#checkName(port.name, names);
    this.#addChannel({
      id: 0,
      name: options.name,
      console: true,
      overflow: options.overflow ?? 'wait',
      backend: options.backend,
    });
    for (const port of extra) this.addPort(port);
  }

  /** The ports, by id. */
  get ports(): ConsolePort[] {
    return [...this.#channels.values()].sort((a, b) => a.id - b.id).map((channel) => channel.port);
  }

  /** The port with number `id`, if there is one. */
  port(id: number): ConsolePort | undefined {
    return this.#channels.get(id)?.port;
  }

  /** Device-wide counters (per-port ones are on each {@link ConsolePort}). */
  get stats(): Readonly<ConsoleStats> {
    return this.#stats;
  }

  /**
   * Adds a port. While the guest runs with MULTIPORT, the driver is told at once (DEVICE_ADD) and
   * the port appears as /dev/vportNpM (and /dev/virtio-ports/NAME with a name).
   */
  addPort(options: ConsolePortOptions): ConsolePort {
    if (this.#closed) throw new ConsoleError('CONSOLE_CLOSED', 'the console device was closed');
    if (!this.multiport) {
      throw new ConsoleError(
        'CONSOLE_PORT',
        'this console device has no MULTIPORT: create it with maxPorts above 1 to add ports',
      );
    }
    const id = options.id ?? this.#freeId();
    if (id === undefined) {
      throw new ConsoleError('CONSOLE_PORT', `all ${this.maxPorts} ports of the device are in use`);
    }
    if (!Number.isInteger(id) || id < 1 || id >= this.maxPorts) {
      throw new ConsoleError(
        'CONSOLE_PORT',
        `port id ${id} is not between 1 and ${this.maxPorts - 1}`,
      );
    }
    if (this.#channels.has(id)) throw new ConsoleError('CONSOLE_PORT', `port ${id} already exists`);
    const names = new Set<string>();
    for (const channel of this.#channels.values()) if (channel.name) names.add(channel.name);
    this.#checkName(options.name, names);
    const channel = this.#addChannel({
      id,
      name: options.name,
      console: options.console ?? false,
      overflow: options.overflow ?? 'wait',
      backend: options.backend,
    });
    this.#handler?.portAdded(channel);
    return channel.port;
  }

  /**
   * Removes a port (DEVICE_REMOVE to a running guest) and closes its backend. Input the guest had
   * not taken is dropped and counted. Port 0 cannot be removed.
   */
  async removePort(id: number): Promise<void> {
    if (id === 0) throw new ConsoleError('CONSOLE_PORT', 'port 0 cannot be removed');
    const channel = this.#channels.get(id);
    if (!channel) throw new ConsoleError('CONSOLE_PORT', `there is no port ${id}`);
    this.#handler?.portRemoved(channel);
    this.#channels.delete(id);
    await this.#retire(channel);
  }

  /**
   * Tears the device down: stops queue processing and closes every backend (restoring a raw
   * terminal, removing a socket). Call it after the guest is gone or the device was reset.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#handler?.detach();
    this.#handler = undefined;
    const channels = [...this.#channels.values()];
    this.#channels.clear();
    await Promise.all(channels.map((channel) => this.#retire(channel)));
  }

  activate(context: ActivationContext): void {
    if (this.#closed) {
      this.#log('console: the driver activated a device that was closed; ignoring its queues');
      return;
    }
    const multiport = (context.features & featureBit(ConsoleFeature.MULTIPORT)) !== 0n;
    const size = (context.features & featureBit(ConsoleFeature.SIZE)) !== 0n;
    this.#handler = new ConsoleHandler(
      {
        queues: context.queues,
        ports: this.#channels,
        multiport,
        size,
        resizeLayout: this.#resizeLayout,
        controlLimit: this.#controlLimit,
        signalUsed: (index) => context.signalUsed(index),
        reportViolation: context.reportViolation,
        log: this.#log,
        defer: this.#defer,
      },
      this.#stats,
    );
    if (!multiport && size) this.#publishSize(true);
    this.#handler.start();
  }

  queueNotify(queueIndex: number): void {
    this.#handler?.notify(queueIndex);
  }

  reset(): void {
    this.#handler?.detach();
    this.#handler = undefined;
  }

  #addChannel(info: ConstructorParameters<typeof PortChannel>[0]): PortChannel {
    const channel = new PortChannel(info, this.#listener, this.#log);
    this.#channels.set(info.id, channel);
    channel.attach();
    return channel;
  }

  async #retire(channel: PortChannel): Promise<void> {
    channel.pauseInput();
    channel.status.removed = true;
    channel.dropPending();
    channel.emit('removed');
    try {
      await channel.backend.close();
    } catch (error) {
      this.#log(`console port ${channel.id}: closing the backend failed: ${String(error)}`);
    }
  }

  #checkName(name: string | undefined, taken: Set<string>): void {
    if (name === undefined) return;
    const problem = checkPortName(name);
    if (problem) throw new ConsoleError('CONSOLE_OPTIONS', problem);
    if (taken.has(name)) throw new ConsoleError('CONSOLE_OPTIONS', `two ports are named '${name}'`);
    taken.add(name);
  }

  #freeId(): number | undefined {
    for (let id = 1; id < this.maxPorts; id++) if (!this.#channels.has(id)) return id;
    return undefined;
  }

  /**
   * Puts port 0's size into `cols`/`rows` (§5.3.4). Linux reads them only on a configuration
   * change interrupt, never at probe, and core raises that interrupt only when a byte changes; so
   * at activation (`announce`) the fields are cleared first to make the driver read them.
   */
  #publishSize(announce: boolean): void {
    const size = this.#channels.get(0)?.status.size;
    if (!size) return;
    const { cols, rows } = clampSize(size);
    const packed = (cols | (rows << 16)) >>> 0;
    if (announce && packed !== 0) this.config.setU32(ConsoleConfig.COLS, 0);
    this.config.setU32(ConsoleConfig.COLS, packed);
  }

  #emergencyWrite(byte: number): void {
    this.#stats.emergencyWrites++;
    const port = this.#channels.get(0);
    if (!port) return;
    // A config write cannot wait for the backend: when it is full, the character is dropped.
    if (port.backendFull) port.stats.outputDropped++;
    else port.output(Uint8Array.of(byte));
  }
}
