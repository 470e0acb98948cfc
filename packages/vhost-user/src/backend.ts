/**
 * The vhost-user back-end: serves one Virtkit device to one front-end at a time over a Unix
 * socket. The front-end (QEMU, Cloud Hypervisor) owns the guest; it shares guest RAM and the
 * rings' doorbells with us, and we run the device on them. Everything happens on Node's event
 * loop: the control socket and every kick eventfd are watched with `FdWatcher`, a kick calls the
 * device's `queueNotify` directly, and the device's "used buffers" signal writes the call eventfd.
 *
 * Core's `DeviceController` owns feature negotiation and activation. vhost-user has no device
 * status of its own (unless VHOST_USER_PROTOCOL_F_STATUS), so the back-end activates the device
 * when the front-end has started its rings, and stops it (settling the requests in flight) when
 * the front-end stops a ring, changes the memory table or goes away.
 */

import { lstatSync, unlinkSync } from 'node:fs';
import {
  type ActivationContext,
  checkDeviceShape,
  createDeviceQueue,
  DeviceController,
  type DeviceQueue,
  DeviceStatus,
  DeviceType,
  Feature,
  featureBit,
  GuestMemory,
  type InterruptSink,
  type ProtocolViolation,
  type QueuePosition,
  type RingLayout,
  type VirtioDevice,
} from '@virtkit/core';
import {
  accept,
  drainEventfd,
  FdWatcher,
  fstat,
  LinuxError,
  listenUnix,
  S_IFMT,
  S_IFSOCK,
  signalEventfd,
} from '@virtkit/linux';
import { EventEmitter } from 'eventemitter3';
import { Channel, closeQuietly } from './channel.js';
import {
  BackendRequest,
  CONFIG_FLAG_MIGRATION,
  CONFIG_FLAG_WRITABLE,
  FLAG_NEED_REPLY,
  PACKED_WRAP_BIT,
  ProtocolFeature,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_F_LOG,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
} from './constants.js';
import { VhostUserError } from './errors.js';
import {
  InflightArea,
  type PackedInflight,
  type SavedChain,
  type SplitInflight,
} from './inflight.js';
import { type MemoryTable, mapMemoryTable } from './memory-table.js';
import {
  configPayload,
  decodeConfig,
  decodeInflight,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeMessage,
  encodeReply,
  inflightPayload,
  type Message,
  u64Payload,
  type VringAddress,
  vringStatePayload,
} from './message.js';
import { type Resubmission, RingQueue } from './ring-queue.js';

const PROTOCOL_FEATURES_BIT = featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
const RING_PACKED = featureBit(Feature.RING_PACKED);
const EVENT_IDX = featureBit(Feature.RING_EVENT_IDX);
const INDIRECT = featureBit(Feature.RING_INDIRECT_DESC);
/**
 * Transport features vhost-user cannot carry here: no IOTLB (ACCESS_PLATFORM), kicks are bare
 * eventfds (NOTIFICATION_DATA), no per-queue reset or admin queues, no SR-IOV. They are withheld
 * from the offer even if the device has them.
 */
const UNSUPPORTED_TRANSPORT_FEATURES =
  featureBit(Feature.ACCESS_PLATFORM) |
  featureBit(Feature.SR_IOV) |
  featureBit(Feature.NOTIFICATION_DATA) |
  featureBit(Feature.NOTIF_CONFIG_DATA) |
  featureBit(Feature.RING_RESET) |
  featureBit(Feature.ADMIN_VQ);

/** Requests whose answer is a reply body (not a REPLY_ACK status). */
const EXPLICIT_REPLY: ReadonlySet<number> = new Set([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_VRING_BASE,
  Request.GET_QUEUE_NUM,
  Request.GET_CONFIG,
  Request.GET_INFLIGHT_FD,
  Request.GET_STATUS,
]);

/** Requests that always expect a reply but that this back-end does not support. */
const UNSUPPORTED_WITH_REPLY: ReadonlySet<number> = new Set([
  Request.SET_LOG_BASE,
  Request.IOTLB_MSG,
  Request.POSTCOPY_ADVISE,
  Request.POSTCOPY_END,
  Request.GET_MAX_MEM_SLOTS,
  Request.CREATE_CRYPTO_SESSION,
]);

const bit = (n: number) => 1n << BigInt(n);

/** Protocol features offered by default (the config one only for devices with a config space). */
export const DEFAULT_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.BACKEND_REQ) |
  bit(ProtocolFeature.CONFIG) |
  bit(ProtocolFeature.INFLIGHT_SHMFD) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.STATUS);

/** virtio-net's VIRTIO_NET_F_CTRL_VQ (§5.1.3). */
const NET_F_CTRL_VQ = 17;

/**
 * Features a front-end implements itself on the device's behalf, by device type: QEMU serves
 * virtio-net's control queue (and the configuration space) in its own process and forwards only
 * the data-path features, so the guest's GUEST_ANNOUNCE or MQ arrives without the CTRL_VQ they
 * depend on (virtio 1.2 §5.1.3.1). The device is told CTRL_VQ is there, as it is, in QEMU.
 */
export function frontendImpliedFeatures(deviceType: number): bigint {
  return deviceType === DeviceType.NET ? featureBit(NET_F_CTRL_VQ) : 0n;
}

/** Options of a {@link VhostUserBackend}. */
export interface VhostUserBackendOptions {
  /**
   * Features the front-end implements for the device: added to those it sets when the device
   * offers them (default {@link frontendImpliedFeatures} of the device type).
   */
  readonly impliedFeatures?: bigint;
  /** Diagnostics: connections, activations, front-end mistakes (default: dropped). */
  readonly log?: (message: string) => void;
  /** Every message received, one line each (default: none). For debugging a front-end. */
  readonly trace?: (message: string) => void;
  /**
   * Protocol features to offer (default {@link DEFAULT_PROTOCOL_FEATURES}); CONFIG is withheld
   * anyway from a device without a configuration space.
   */
  readonly protocolFeatures?: bigint;
}

/** Typed events of a {@link VhostUserBackend}. */
export interface VhostUserBackendEvents {
  /** Listening on a socket path. */
  listening: [path: string];
  /** A front-end connected. */
  connect: [];
  /**
   * The front-end went away (or was disconnected) and the device was stopped and reset; `error`
   * says why when it was not a plain hang-up.
   */
  disconnect: [error: Error | undefined];
  /** The device was activated with these features (virtio bits) on these queues. */
  activate: [features: bigint, queues: readonly number[]];
  /** The device was stopped (a ring stopped, memory changed, reset, disconnect). */
  deactivate: [reason: string];
  /** The front-end broke the protocol; it got an error reply or was disconnected. */
  'protocol-error': [error: VhostUserError];
  /** The guest broke the virtio protocol on a ring (counted by core). */
  violation: [violation: ProtocolViolation];
}

/** What the front-end set up for one vring. */
interface Vring {
  size: number | undefined;
  address: VringAddress | undefined;
  /** SET_VRING_BASE value (split: next available index; packed: both positions with wraps). */
  base: number | undefined;
  kickFd: number;
  kickWatcher: FdWatcher | null;
  callFd: number;
  errFd: number;
  /** A kick descriptor was given (the ring is started until GET_VRING_BASE). */
  started: boolean;
  enabled: boolean;
  /** A used-buffer signal came while there was no call descriptor. */
  missedCall: boolean;
}

interface Task {
  readonly run: () => Promise<void> | void;
  /** Releases what the task holds if it is dropped unrun (a message's descriptors). */
  readonly drop?: () => void;
}

interface Session {
  readonly channel: Channel;
  readonly rings: Vring[];
  readonly tasks: Task[];
  running: boolean;
  closing: boolean;
  features: bigint | undefined;
  protocolFeatures: bigint;
  memory: MemoryTable | undefined;
  inflight: InflightArea | undefined;
  backendChannel: Channel | undefined;
  status: number;
  activationScheduled: boolean;
  /**
   * The front-end stopped the device (GET_VRING_BASE, status 0, reset): kicks still pending on
   * the other rings must not start it again behind its back (the guest may be tearing its rings
   * down). Cleared when the front-end starts something again.
   */
  halted: boolean;
  done: Promise<void>;
  finish: () => void;
}

/** How one ring is brought up at activation. */
interface RingPlan {
  readonly size: number;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  readonly position: QueuePosition | undefined;
  readonly inflight: SplitInflight | undefined;
  readonly packedRecord?: PackedInflight | undefined;
  /** Split: heads to resubmit. */
  readonly resubmit: readonly number[];
  /** Packed: saved chains to resubmit. */
  readonly packedResubmit?: readonly SavedChain[];
  /** Damage found in the inflight record (reported as violations at activation). */
  readonly recordProblems?: readonly string[];
}

interface Active {
  readonly controller: DeviceController;
  readonly layout: RingLayout;
  readonly rings: readonly number[];
  queues: (RingQueue | undefined)[];
}

function newVring(): Vring {
  return {
    size: undefined,
    address: undefined,
    base: undefined,
    kickFd: -1,
    kickWatcher: null,
    callFd: -1,
    errFd: -1,
    started: false,
    enabled: false,
    missedCall: false,
  };
}

function protocolError(message: string): VhostUserError {
  return new VhostUserError('VHOST_USER_PROTOCOL', message);
}

function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/** Encodes a ring position as GET_VRING_BASE reports it. */
export function encodeVringBase(position: QueuePosition | undefined, layout: RingLayout): number {
  if (layout === 'split') return (position?.nextAvail ?? 0) & 0xffff;
  const avail =
    ((position?.nextAvail ?? 0) & 0x7fff) | (position?.availWrap === false ? 0 : PACKED_WRAP_BIT);
  const used =
    ((position?.nextUsed ?? 0) & 0x7fff) | (position?.usedWrap === false ? 0 : PACKED_WRAP_BIT);
  return (avail | (used << 16)) >>> 0;
}

/** Decodes a packed ring's SET_VRING_BASE value (wrap counters in bit 15 of each half). */
export function decodePackedBase(num: number): QueuePosition {
  return {
    nextAvail: num & 0x7fff,
    availWrap: (num & PACKED_WRAP_BIT) !== 0,
    nextUsed: (num >>> 16) & 0x7fff,
    usedWrap: ((num >>> 16) & PACKED_WRAP_BIT) !== 0,
  };
}

/**
 * Serves one {@link VirtioDevice} as a vhost-user back-end.
 *
 * @example
 * ```ts
 * const device = await registry.create('blk', { path: 'disk.img' });
 * const backend = new VhostUserBackend(device, { log: console.error });
 * backend.listen('/tmp/vhost-blk.sock');
 * backend.events.on('disconnect', () => backend.close());
 * // qemu-system-x86_64 ... -chardev socket,id=c0,path=/tmp/vhost-blk.sock \
 * //   -device vhost-user-blk-pci,chardev=c0
 * ```
 */
export class VhostUserBackend {
  readonly device: VirtioDevice;
  readonly events = new EventEmitter<VhostUserBackendEvents>();
  readonly #log: (message: string) => void;
  readonly #trace: ((message: string) => void) | undefined;
  readonly #offeredFeatures: bigint;
  readonly #offeredProtocol: bigint;
  readonly #impliedFeatures: bigint;
  readonly #proxy: VirtioDevice;
  readonly #sink: InterruptSink;
  #listenFd = -1;
  #listenPath: string | undefined;
  #listenWatcher: FdWatcher | null = null;
  #session: Session | undefined;
  #active: Active | undefined;
  #plans: (RingPlan | undefined)[] = [];
  #closed = false;
  readonly #unsubscribeConfig: () => void;

  constructor(device: VirtioDevice, options: VhostUserBackendOptions = {}) {
    const problem = checkDeviceShape(device);
    if (problem) throw new VhostUserError('VHOST_USER_STATE', `device has ${problem}`);
    this.device = device;
    this.#log = options.log ?? (() => {});
    this.#trace = options.trace;
    this.#offeredFeatures =
      ((BigInt.asUintN(64, device.features) | featureBit(Feature.VERSION_1)) &
        ~UNSUPPORTED_TRANSPORT_FEATURES) |
      PROTOCOL_FEATURES_BIT;
    let protocol = options.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES;
    if (!device.config) protocol &= ~bit(ProtocolFeature.CONFIG);
    this.#offeredProtocol = protocol;
    this.#impliedFeatures =
      (options.impliedFeatures ?? frontendImpliedFeatures(device.deviceType)) & device.features;
    // The controller sees the device through this proxy: activation goes through the back-end
    // (to wrap the queues), and reset is the back-end's own job (it resets the device *before*
    // the queues are detached, so that requests in flight still complete into the ring). The
    // config space is served by the back-end directly, so the proxy has none: a controller per
    // activation must not subscribe to it each time.
    this.#proxy = {
      deviceType: device.deviceType,
      features: device.features & ~UNSUPPORTED_TRANSPORT_FEATURES,
      queues: device.queues,
      ...(device.validateFeatures
        ? { validateFeatures: (features: bigint) => device.validateFeatures?.(features) }
        : {}),
      activate: (context) => this.#onActivate(context),
      queueNotify: (index) => device.queueNotify(index),
      reset: () => {},
    };
    this.#sink = {
      signalUsed: (index) => this.#signalCall(index),
      // Only DEVICE_NEEDS_RESET lands here (the proxy has no config space); the error
      // descriptor of the queue concerned is signalled from the violation instead.
      signalConfig: () => {},
    };
    this.#unsubscribeConfig = device.config?.onChange(() => this.#sendConfigChange()) ?? (() => {});
  }

  /** True while a front-end is connected. */
  get connected(): boolean {
    return this.#session !== undefined && !this.#session.closing;
  }

  /** Queue indices the device is running on, or an empty list when it is not active. */
  get activeQueues(): readonly number[] {
    return this.#active?.rings ?? [];
  }

  /** Virtio features the front-end set (without the vhost-user bits), if it set any. */
  get negotiatedFeatures(): bigint | undefined {
    const features = this.#session?.features;
    return features === undefined ? undefined : features & ~PROTOCOL_FEATURES_BIT;
  }

  /** Protocol features in force on the current connection. */
  get protocolFeatures(): bigint {
    return this.#session?.protocolFeatures ?? 0n;
  }

  /** The socket path being listened on, if any. */
  get socketPath(): string | undefined {
    return this.#listenPath;
  }

  /**
   * Listens on `path` for front-ends (one at a time; a second connection is closed at once). A
   * stale socket left at `path` by an earlier back-end is replaced; any other file is an error.
   */
  listen(path: string): void {
    if (this.#closed) throw new VhostUserError('VHOST_USER_STATE', 'the back-end is closed');
    if (this.#listenFd >= 0) {
      throw new VhostUserError('VHOST_USER_STATE', `already listening on ${this.#listenPath}`);
    }
    removeStaleSocket(path);
    let fd: number;
    try {
      fd = listenUnix(path, { nonBlocking: true, backlog: 8 });
    } catch (error) {
      throw new VhostUserError(
        'VHOST_USER_SOCKET',
        `cannot listen on ${path}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#listenFd = fd;
    this.#listenPath = path;
    this.#listenWatcher = new FdWatcher(fd, () => this.#accept());
    this.#log(`listening on ${path}`);
    this.events.emit('listening', path);
  }

  /**
   * Serves a front-end on an already connected socket (a socketpair end, or a descriptor
   * inherited with `--fd`). The back-end takes ownership of `fd`.
   */
  serve(fd: number): void {
    if (this.#closed) throw new VhostUserError('VHOST_USER_STATE', 'the back-end is closed');
    if (this.#session) {
      throw new VhostUserError('VHOST_USER_STATE', 'a front-end is already connected');
    }
    try {
      this.#startSession(fd);
    } catch (error) {
      throw new VhostUserError(
        'VHOST_USER_SOCKET',
        `cannot serve descriptor ${fd}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /**
   * Resolves once the current front-end (if any) is gone and the device is reset; resolves at
   * once when none is connected.
   */
  whenDisconnected(): Promise<void> {
    return this.#session?.done ?? Promise.resolve();
  }

  /**
   * Disconnects the front-end (the device settles its requests and is reset) and stops
   * listening. The device itself stays open: close it separately.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#stopListening();
      this.#unsubscribeConfig();
    }
    const session = this.#session;
    if (session) {
      this.#disconnect(session, undefined);
      await session.done;
    }
  }

  // ------------------------------------------------------------------ connections

  #stopListening(): void {
    this.#listenWatcher?.close();
    this.#listenWatcher = null;
    if (this.#listenFd >= 0) closeQuietly(this.#listenFd);
    this.#listenFd = -1;
    const path = this.#listenPath;
    this.#listenPath = undefined;
    if (path !== undefined) {
      try {
        if (lstatSync(path).isSocket()) unlinkSync(path);
      } catch {
        // Already gone.
      }
    }
  }

  #accept(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = accept(this.#listenFd, { nonBlocking: true });
      } catch (error) {
        this.#log(`accept failed: ${(error as Error).message}`);
        return;
      }
      if (fd === null) return;
      if (this.#session || this.#closed) {
        this.#log('refused a second front-end connection: one is already connected');
        closeQuietly(fd);
        continue;
      }
      try {
        this.#startSession(fd);
      } catch (error) {
        this.#log(`cannot serve the new connection: ${(error as Error).message}`);
        closeQuietly(fd);
      }
    }
  }

  #startSession(fd: number): void {
    let finish = () => {};
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const rings = this.device.queues.map(() => newVring());
    const session: Session = {
      channel: undefined as unknown as Channel,
      rings,
      tasks: [],
      running: false,
      closing: false,
      features: undefined,
      protocolFeatures: 0n,
      memory: undefined,
      inflight: undefined,
      backendChannel: undefined,
      status: 0,
      activationScheduled: false,
      halted: false,
      done,
      finish,
    };
    // Throws (before anything else is set up) when `fd` cannot be watched: not a socket.
    (session as { channel: Channel }).channel = new Channel(fd, {
      message: (message) => this.#enqueueMessage(session, message),
      closed: (error) => this.#disconnect(session, error),
    });
    this.#session = session;
    this.#log('front-end connected');
    this.events.emit('connect');
  }

  #disconnect(session: Session, error: Error | undefined): void {
    if (session.closing) return;
    session.closing = true;
    session.channel.close();
    for (const task of session.tasks.splice(0)) task.drop?.();
    this.#enqueue(session, {
      run: async () => {
        await this.#stopDevice('front-end disconnected');
        this.#release(session);
        if (this.#session === session) this.#session = undefined;
        this.#log(error ? `front-end disconnected: ${error.message}` : 'front-end disconnected');
        session.finish();
        this.events.emit('disconnect', error);
      },
    });
  }

  #release(session: Session): void {
    for (const ring of session.rings) {
      this.#closeKick(ring);
      if (ring.callFd >= 0) closeQuietly(ring.callFd);
      if (ring.errFd >= 0) closeQuietly(ring.errFd);
      ring.callFd = -1;
      ring.errFd = -1;
    }
    session.memory?.unmap();
    session.memory = undefined;
    session.inflight?.unmap();
    session.inflight = undefined;
    session.backendChannel?.close();
    session.backendChannel = undefined;
  }

  // ------------------------------------------------------------------ task queue

  #enqueueMessage(session: Session, message: Message): void {
    if (session.closing) {
      for (const fd of message.fds) closeQuietly(fd);
      return;
    }
    this.#enqueue(session, {
      run: () => this.#handle(session, message),
      drop: () => {
        for (const fd of message.fds) closeQuietly(fd);
      },
    });
  }

  /** Runs tasks one at a time, in order: messages and activations never interleave. */
  #enqueue(session: Session, task: Task): void {
    session.tasks.push(task);
    if (!session.running) void this.#runTasks(session);
  }

  async #runTasks(session: Session): Promise<void> {
    session.running = true;
    try {
      for (let task = session.tasks.shift(); task; task = session.tasks.shift()) {
        try {
          await task.run();
        } catch (error) {
          this.#log(`internal error: ${(error as Error).stack ?? String(error)}`);
        }
      }
    } finally {
      session.running = false;
    }
  }

  // ------------------------------------------------------------------ messages

  async #handle(session: Session, message: Message): Promise<void> {
    if (session.closing) return;
    this.#trace?.(describeMessage(message));
    const needReply = (message.flags & FLAG_NEED_REPLY) !== 0;
    try {
      const outcome = await this.#dispatch(session, message);
      if (outcome === 'done' && needReply && !EXPLICIT_REPLY.has(message.request)) {
        this.#reply(session, message.request, u64Payload(0));
      }
    } catch (caught) {
      const error =
        caught instanceof VhostUserError
          ? caught
          : new VhostUserError(
              'VHOST_USER_PROTOCOL',
              `${requestName(message.request)} failed: ${(caught as Error).message}`,
              { cause: caught },
            );
      if (!(caught instanceof VhostUserError) && !(caught instanceof LinuxError)) {
        this.#log(
          `internal error handling ${requestName(message.request)}: ${(caught as Error).stack}`,
        );
      }
      this.#log(`front-end error: ${error.message}`);
      this.events.emit('protocol-error', error);
      if (needReply && !EXPLICIT_REPLY.has(message.request)) {
        this.#reply(session, message.request, u64Payload(1));
      } else {
        // No way to say "failed" the front-end would notice: hang up, so it does.
        this.#disconnect(session, error);
      }
    } finally {
      for (const fd of message.fds) closeQuietly(fd);
    }
  }

  #reply(session: Session, request: number, payload?: Uint8Array, fds: number[] = []): void {
    session.channel.send(encodeReply(request, payload), fds, { transfer: true });
  }

  /** Handles one message; 'done' lets REPLY_ACK report success, 'replied' means a reply was sent. */
  async #dispatch(session: Session, message: Message): Promise<'done' | 'replied'> {
    switch (message.request) {
      case Request.GET_FEATURES:
        this.#reply(session, message.request, u64Payload(this.#offeredFeatures));
        return 'replied';
      case Request.SET_FEATURES:
        await this.#setFeatures(session, decodeU64(message));
        return 'done';
      case Request.GET_PROTOCOL_FEATURES:
        this.#reply(session, message.request, u64Payload(this.#offeredProtocol));
        return 'replied';
      case Request.SET_PROTOCOL_FEATURES: {
        const value = decodeU64(message);
        if (value & ~this.#offeredProtocol) {
          throw protocolError(
            `front-end accepted protocol features ${hex(value & ~this.#offeredProtocol)} that were not offered`,
          );
        }
        session.protocolFeatures = value;
        return 'done';
      }
      case Request.SET_OWNER:
        return 'done';
      case Request.RESET_OWNER:
      case Request.RESET_DEVICE:
        await this.#resetDevice(session);
        return 'done';
      case Request.SET_MEM_TABLE:
        await this.#setMemTable(session, message);
        return 'done';
      case Request.SET_VRING_NUM: {
        const { index, num } = decodeVringState(message);
        const ring = this.#stoppedRing(session, index, 'SET_VRING_NUM');
        const max = this.device.queues[index]!.maxSize;
        if (num < 1 || num > max) {
          throw protocolError(`queue ${index} size ${num} is outside 1..${max}`);
        }
        ring.size = num;
        return 'done';
      }
      case Request.SET_VRING_ADDR: {
        const address = decodeVringAddress(message);
        const ring = this.#stoppedRing(session, address.index, 'SET_VRING_ADDR');
        if (address.flags & VRING_F_LOG) {
          throw protocolError(
            `queue ${address.index}: used-ring logging (migration) is not supported`,
          );
        }
        const memory = session.memory;
        if (memory) {
          for (const [name, value] of [
            ['descriptor', address.desc],
            ['available/driver', address.avail],
            ['used/device', address.used],
          ] as const) {
            if (memory.translate(value, 1) === undefined) {
              throw protocolError(
                `queue ${address.index}: ${name} ring address ${hex(value)} is not in any memory region`,
              );
            }
          }
        }
        ring.address = address;
        return 'done';
      }
      case Request.SET_VRING_BASE: {
        const { index, num } = decodeVringState(message);
        const ring = this.#stoppedRing(session, index, 'SET_VRING_BASE');
        ring.base = num;
        return 'done';
      }
      case Request.GET_VRING_BASE: {
        const { index } = decodeVringState(message);
        const ring = this.#ring(session, index);
        // Stopping a ring the device runs on stops the device, and it stays stopped (no restart
        // on a kick) until the front-end starts a ring again. A ring the device does not run on
        // (disabled, never started) stops alone: the device goes on with the others.
        if (this.#active?.rings.includes(index)) await this.#stopDevice(`queue ${index} stopped`);
        if (!this.#active) session.halted = true;
        ring.started = false;
        this.#closeKick(ring);
        const layout: RingLayout = (session.features ?? 0n) & RING_PACKED ? 'packed' : 'split';
        const num = ring.base ?? encodeVringBase(undefined, layout);
        this.#reply(session, message.request, vringStatePayload(index, num));
        return 'replied';
      }
      case Request.SET_VRING_KICK:
        await this.#setKick(session, message);
        return 'done';
      case Request.SET_VRING_CALL: {
        const { ring, fd } = this.#ringFile(session, message);
        if (ring.callFd >= 0) closeQuietly(ring.callFd);
        ring.callFd = fd;
        // A used-buffer signal may have gone to an earlier descriptor (or none) while the
        // front-end was switching: one spurious interrupt is harmless, a lost one hangs the guest.
        if (fd >= 0) {
          ring.missedCall = false;
          signalEventfd(fd);
        }
        return 'done';
      }
      case Request.SET_VRING_ERR: {
        const { ring, fd } = this.#ringFile(session, message);
        if (ring.errFd >= 0) closeQuietly(ring.errFd);
        ring.errFd = fd;
        return 'done';
      }
      case Request.GET_QUEUE_NUM:
        this.#reply(session, message.request, u64Payload(this.device.queues.length));
        return 'replied';
      case Request.SET_VRING_ENABLE: {
        const { index, num } = decodeVringState(message);
        const ring = this.#ring(session, index);
        if (num > 1) throw protocolError(`queue ${index} enable value ${num} is not 0 or 1`);
        const enabled = num === 1;
        if (ring.enabled === enabled) return 'done';
        ring.enabled = enabled;
        // vhost-user.rst "Ring states": a disabled ring moves no data (a network back-end must
        // not supply received packets; Cloud Hypervisor pauses a device this way). The device
        // runs on the started and enabled rings: a change to that set stops it (settling what
        // it started, keeping each ring's position) and starts it again on the new set.
        const active = this.#active;
        if (active && active.rings.includes(index) !== enabled) {
          await this.#stopDevice(`queue ${index} ${enabled ? 'enabled' : 'disabled'}`);
        }
        if (enabled && ring.started) session.halted = false;
        if (!session.halted) this.#scheduleActivation(session);
        return 'done';
      }
      case Request.GET_CONFIG:
        this.#getConfig(session, message);
        return 'replied';
      case Request.SET_CONFIG: {
        const access = decodeConfig(message);
        const config = this.device.config;
        if (!config) throw protocolError('the device has no configuration space');
        // vhost-user.rst: 0 is a front-end (driver) write, 1 a live-migration restore. Cloud
        // Hypervisor sends 1 for driver writes (the vhost crate calls it WRITABLE); we never
        // migrate, so both are a driver write of the writable fields.
        if (access.flags !== CONFIG_FLAG_WRITABLE && access.flags !== CONFIG_FLAG_MIGRATION) {
          throw protocolError(`SET_CONFIG with unknown flags ${access.flags}`);
        }
        const result = config.write(access.offset, access.data);
        if (result !== 'ok') {
          throw protocolError(
            `SET_CONFIG of ${access.size} bytes at ${access.offset}: ${result === 'read-only' ? 'read-only field' : 'outside the configuration space'}`,
          );
        }
        return 'done';
      }
      case Request.GET_INFLIGHT_FD:
        await this.#getInflight(session, message);
        return 'replied';
      case Request.SET_INFLIGHT_FD:
        await this.#setInflight(session, message);
        return 'done';
      case Request.SET_BACKEND_REQ_FD: {
        const fds = message.fds.splice(0);
        if (fds.length !== 1) {
          for (const fd of fds) closeQuietly(fd);
          throw protocolError(`SET_BACKEND_REQ_FD carries ${fds.length} descriptors, expected 1`);
        }
        const fd = fds[0]!;
        let channel: Channel;
        try {
          if ((fstat(fd).mode & S_IFMT) !== S_IFSOCK) throw new Error('not a socket');
          channel = new Channel(
            fd,
            {
              // Nothing is asked with NEED_REPLY on this channel, so nothing is expected back.
              message: (reply) => {
                for (const received of reply.fds) closeQuietly(received);
              },
              closed: () => {},
            },
            { ref: false },
          );
        } catch (error) {
          closeQuietly(fd);
          throw protocolError(
            `SET_BACKEND_REQ_FD descriptor cannot be used: ${(error as Error).message}`,
          );
        }
        session.backendChannel?.close();
        session.backendChannel = channel;
        return 'done';
      }
      case Request.GET_STATUS:
        this.#reply(session, message.request, u64Payload(session.status));
        return 'replied';
      case Request.SET_STATUS:
        await this.#setStatus(session, Number(decodeU64(message) & 0xffn));
        return 'done';
      default: {
        const name = requestName(message.request);
        if (UNSUPPORTED_WITH_REPLY.has(message.request)) {
          this.#log(
            `front-end sent ${name}, which this back-end does not support: answered failure`,
          );
          this.#reply(session, message.request, u64Payload(1));
          return 'replied';
        }
        if (message.flags & FLAG_NEED_REPLY) {
          throw protocolError(`${name} is not supported`);
        }
        this.#log(`front-end sent ${name}, which this back-end does not support: ignored`);
        return 'replied';
      }
    }
  }

  #ring(session: Session, index: number): Vring {
    const ring = Number.isInteger(index) ? session.rings[index] : undefined;
    if (!ring) {
      throw protocolError(
        `queue index ${index} is out of range: the device has ${session.rings.length} queues`,
      );
    }
    return ring;
  }

  /** A ring whose configuration may change: not part of the running device. */
  #stoppedRing(session: Session, index: number, request: string): Vring {
    const ring = this.#ring(session, index);
    if (this.#active?.rings.includes(index)) {
      throw protocolError(
        `${request} for queue ${index} while it runs (stop it with GET_VRING_BASE first)`,
      );
    }
    return ring;
  }

  /** Decodes SET_VRING_KICK/CALL/ERR: the ring and the descriptor (-1 with the no-fd flag). */
  #ringFile(session: Session, message: Message): { index: number; ring: Vring; fd: number } {
    const value = decodeU64(message);
    const fds = message.fds.splice(0);
    const index = Number(value & BigInt(VRING_INDEX_MASK));
    const nofd = (value & BigInt(VRING_NOFD_MASK)) !== 0n;
    try {
      if (value >> 9n !== 0n) {
        throw protocolError(
          `${requestName(message.request)} payload ${hex(value)} has unknown bits`,
        );
      }
      const ring = this.#ring(session, index);
      if (nofd ? fds.length !== 0 : fds.length !== 1) {
        throw protocolError(
          `${requestName(message.request)} for queue ${index} carries ${fds.length} descriptors, expected ${nofd ? 0 : 1}`,
        );
      }
      return { index, ring, fd: nofd ? -1 : fds[0]! };
    } catch (error) {
      for (const fd of fds) closeQuietly(fd);
      throw error;
    }
  }

  async #setFeatures(session: Session, value: bigint): Promise<void> {
    const unknown = value & ~this.#offeredFeatures;
    if (unknown)
      throw protocolError(`front-end accepted features ${hex(unknown)} that were not offered`);
    const previous = session.features;
    session.features = value;
    if (!(value & PROTOCOL_FEATURES_BIT)) {
      // Without protocol features there is no SET_VRING_ENABLE: rings start enabled.
      for (const ring of session.rings) ring.enabled = true;
    }
    if (this.#active && previous !== undefined && (previous ^ value) & ~PROTOCOL_FEATURES_BIT) {
      await this.#stopDevice('features changed');
      this.#scheduleActivation(session);
    }
  }

  async #setMemTable(session: Session, message: Message): Promise<void> {
    const regions = decodeMemoryTable(message);
    const fds = message.fds.splice(0);
    if (session.memory?.describes(regions)) {
      // The same table again (QEMU sends one per queue pair of a net device).
      for (const fd of fds) closeQuietly(fd);
      return;
    }
    const table = mapMemoryTable(regions, fds);
    const wasActive = this.#active !== undefined;
    await this.#stopDevice('memory table changed');
    session.memory?.unmap();
    session.memory = table;
    this.#log(
      `memory: ${table.regions.map((r) => `${hex(r.guestAddress)}+${hex(r.size)}`).join(', ')}`,
    );
    if (wasActive) this.#scheduleActivation(session);
  }

  async #setKick(session: Session, message: Message): Promise<void> {
    const { index, ring, fd } = this.#ringFile(session, message);
    this.#closeKick(ring);
    ring.kickFd = fd;
    ring.started = true;
    session.halted = false;
    if (fd >= 0) {
      ring.kickWatcher = new FdWatcher(fd, () => this.#onKick(session, index, ring), {
        ref: false,
      });
    } else {
      this.#log(
        `queue ${index}: no kick descriptor (polling) is not supported; it runs on other kicks only`,
      );
    }
    const active = this.#active;
    if (active) {
      if (active.rings.includes(index)) {
        this.#notify(index);
      } else if (ring.enabled) {
        await this.#stopDevice(`queue ${index} started`);
        this.#scheduleActivation(session);
      }
    } else if (ring.enabled) {
      this.#scheduleActivation(session);
    }
  }

  #closeKick(ring: Vring): void {
    ring.kickWatcher?.close();
    ring.kickWatcher = null;
    if (ring.kickFd >= 0) closeQuietly(ring.kickFd);
    ring.kickFd = -1;
  }

  #onKick(session: Session, index: number, ring: Vring): void {
    try {
      drainEventfd(ring.kickFd);
    } catch (error) {
      this.#log(`queue ${index}: kick descriptor failed: ${(error as Error).message}`);
      ring.kickWatcher?.close();
      ring.kickWatcher = null;
      return;
    }
    const active = this.#active;
    if (active?.rings.includes(index)) active.controller.notify(index);
    else if (!session.halted) this.#scheduleActivation(session);
  }

  async #setStatus(session: Session, status: number): Promise<void> {
    session.status = status;
    if (status === 0) {
      await this.#stopDevice('front-end reset the status');
      session.halted = true;
    } else if (status & DeviceStatus.DRIVER_OK) {
      session.halted = false;
      await this.#activate(session);
    }
  }

  async #resetDevice(session: Session): Promise<void> {
    await this.#stopDevice('front-end reset the device');
    session.halted = true;
    for (const ring of session.rings) {
      this.#closeKick(ring);
      if (ring.callFd >= 0) closeQuietly(ring.callFd);
      if (ring.errFd >= 0) closeQuietly(ring.errFd);
      Object.assign(ring, newVring());
    }
    session.features = undefined;
    session.status = 0;
  }

  #getConfig(session: Session, message: Message): void {
    let payload: Uint8Array = new Uint8Array(0);
    try {
      const access = decodeConfig(message);
      const config = this.device.config;
      if (!config) throw protocolError('the device has no configuration space');
      if (access.offset >= config.size) {
        throw protocolError(
          `GET_CONFIG at offset ${access.offset}, beyond the ${config.size}-byte space`,
        );
      }
      // Front-ends ask for their own idea of the structure's size (QEMU: sizeof the C struct
      // of its version); bytes past the device's space read as zero.
      const bytes = new Uint8Array(access.size);
      const available = Math.min(access.size, config.size - access.offset);
      config.read(access.offset, bytes.subarray(0, available));
      payload = configPayload(access.offset, access.flags, bytes);
    } catch (error) {
      if (!(error instanceof VhostUserError)) throw error;
      // A zero-length reply is the protocol's "failed".
      this.#log(`front-end error: ${error.message}`);
      this.events.emit('protocol-error', error);
    }
    this.#reply(session, message.request, payload);
  }

  async #getInflight(session: Session, message: Message): Promise<void> {
    const description = decodeInflight(message);
    if (description.numQueues > this.device.queues.length) {
      throw protocolError(
        `GET_INFLIGHT_FD for ${description.numQueues} queues; the device has ${this.device.queues.length}`,
      );
    }
    const { area, fd, size } = InflightArea.create(description.numQueues, description.queueSize);
    await this.#replaceInflight(session, area);
    this.#reply(
      session,
      message.request,
      inflightPayload({
        mmapSize: BigInt(size),
        mmapOffset: 0n,
        numQueues: description.numQueues,
        queueSize: description.queueSize,
      }),
      [fd],
    );
  }

  async #setInflight(session: Session, message: Message): Promise<void> {
    const description = decodeInflight(message);
    const fds = message.fds.splice(0);
    if (fds.length !== 1 || description.numQueues > this.device.queues.length) {
      for (const fd of fds) closeQuietly(fd);
      throw protocolError(
        fds.length !== 1
          ? `SET_INFLIGHT_FD carries ${fds.length} descriptors, expected 1`
          : `SET_INFLIGHT_FD for ${description.numQueues} queues; the device has ${this.device.queues.length}`,
      );
    }
    const area = InflightArea.map(
      fds[0]!,
      description.mmapSize,
      description.mmapOffset,
      description.numQueues,
      description.queueSize,
    );
    await this.#replaceInflight(session, area);
  }

  async #replaceInflight(session: Session, area: InflightArea): Promise<void> {
    const wasActive = this.#active !== undefined;
    await this.#stopDevice('inflight area replaced');
    session.inflight?.unmap();
    session.inflight = area;
    if (wasActive) this.#scheduleActivation(session);
  }

  // ------------------------------------------------------------------ activation

  #scheduleActivation(session: Session): void {
    if (session.activationScheduled || session.closing) return;
    session.activationScheduled = true;
    // One loop turn later, and behind the messages already queued: the front-end usually sends
    // the rest of its ring setup right behind the message that triggered this.
    setImmediate(() => {
      session.activationScheduled = false;
      if (!session.closing) this.#enqueue(session, { run: () => this.#activate(session) });
    });
  }

  /** Activates the device on every started ring, if there is anything to run. */
  async #activate(session: Session): Promise<void> {
    if (this.#active || session.closing || session.halted || this.#session !== session) return;
    const memory = session.memory;
    const features = session.features;
    if (!memory || features === undefined) return;
    const layout: RingLayout = features & RING_PACKED ? 'packed' : 'split';
    const plans: (RingPlan | undefined)[] = [];
    const started: number[] = [];
    session.rings.forEach((ring, index) => {
      if (!ring.started || !ring.enabled || !ring.address) return;
      const plan = this.#plan(session, memory, ring, index, layout);
      if (plan) {
        plans[index] = plan;
        started.push(index);
      }
    });
    if (started.length === 0) return;

    const controller = new DeviceController(this.#proxy, {
      memory: memory.memory,
      interrupt: this.#sink,
      requireVersion1: true,
      queuePosition: (index) => plans[index]?.position,
      log: (message) => this.#log(message),
    });
    controller.events.on('violation', (violation) => this.#onViolation(violation));
    const base = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER;
    await controller.writeStatus(DeviceStatus.ACKNOWLEDGE);
    await controller.writeStatus(base);
    controller.writeDriverFeatures((features & ~PROTOCOL_FEATURES_BIT) | this.#impliedFeatures);
    await controller.writeStatus(base | DeviceStatus.FEATURES_OK);
    if (!(controller.status & DeviceStatus.FEATURES_OK)) {
      this.#log('the device refused the features the front-end set; not starting it');
      this.#signalErrors(started);
      return;
    }
    for (const index of started) {
      const plan = plans[index]!;
      controller.writeQueueSize(index, plan.size);
      controller.writeQueueAddress64(index, 'desc', plan.desc);
      controller.writeQueueAddress64(index, 'driver', plan.avail);
      controller.writeQueueAddress64(index, 'device', plan.used);
      controller.writeQueueReady(index, true);
    }
    this.#plans = plans;
    const active: Active = { controller, layout, rings: started, queues: [] };
    this.#active = active;
    await controller.writeStatus(base | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    if (this.#active !== active) return;
    const state = controller.activation;
    if (state.state !== 'active') {
      this.#log(
        `device activation failed: ${state.state === 'failed' ? state.reason : state.state}`,
      );
      this.#active = undefined;
      try {
        await this.device.reset();
      } catch (error) {
        this.#log(`device reset failed: ${(error as Error).message}`);
      }
      await controller.reset();
      this.#signalErrors(started);
      return;
    }
    this.#log(
      `device active: ${layout} rings, queues ${started.join(', ')}, features ${hex(features & ~PROTOCOL_FEATURES_BIT)}`,
    );
    this.events.emit('activate', features & ~PROTOCOL_FEATURES_BIT, started);
    // Buffers may have been made available before we watched (a reconnect, a kick before
    // activation): look at every ring once.
    for (const index of started) this.#notify(index);
  }

  /** Works out how ring `index` starts, or reports why it cannot (and returns undefined). */
  #plan(
    session: Session,
    memory: MemoryTable,
    ring: Vring,
    index: number,
    layout: RingLayout,
  ): RingPlan | undefined {
    const size = ring.size ?? this.device.queues[index]!.maxSize;
    const address = ring.address!;
    const fail = (reason: string): undefined => {
      const error = protocolError(`queue ${index}: ${reason}`);
      this.#log(`front-end error: ${error.message}`);
      this.events.emit('protocol-error', error);
      this.#signalErrors([index]);
      return undefined;
    };
    if (layout === 'split' && (size & (size - 1)) !== 0) {
      return fail(`split ring size ${size} is not a power of two`);
    }
    const bytes =
      layout === 'split'
        ? { desc: 16 * size, avail: 6 + 2 * size, used: 6 + 8 * size }
        : { desc: 16 * size, avail: 4, used: 4 };
    const desc = memory.translate(address.desc, bytes.desc);
    const avail = memory.translate(address.avail, bytes.avail);
    const used = memory.translate(address.used, bytes.used);
    if (desc === undefined || avail === undefined || used === undefined) {
      return fail(
        `ring addresses desc ${hex(address.desc)}, avail ${hex(address.avail)}, used ${hex(address.used)} do not lie inside memory regions`,
      );
    }
    if (layout === 'packed') {
      let position = ring.base === undefined ? undefined : decodePackedBase(ring.base);
      const region = memory.memory.findRegion(desc, bytes.desc);
      const packedRecord =
        region &&
        session.inflight?.packedQueue(
          index,
          size,
          new DataView(
            region.data.buffer,
            region.data.byteOffset + (desc - region.guestAddress),
            bytes.desc,
          ),
        );
      let packedResubmit: readonly SavedChain[] = [];
      let recordProblems: readonly string[] = [];
      if (packedRecord) {
        const recovery = packedRecord.recover(
          position ?? { nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true },
        );
        recordProblems = recovery.problems;
        if (recovery.restored) {
          // QEMU keeps no position of its own for packed rings: after a back-end crash it sends
          // a stale SET_VRING_BASE. The record is always at least as recent.
          position = recovery.position;
          packedResubmit = recovery.resubmit;
          this.#log(
            `queue ${index}: packed ring resumes where the inflight record left it (base ${hex(encodeVringBase(position, 'packed'))})`,
          );
          if (packedResubmit.length > 0) {
            this.#log(
              `queue ${index}: resubmitting ${packedResubmit.length} requests left in flight`,
            );
          }
        }
      }
      if (position) {
        const ahead =
          position.availWrap === position.usedWrap
            ? position.nextAvail - position.nextUsed
            : position.nextAvail + size - position.nextUsed;
        if (position.nextAvail >= size || position.nextUsed >= size || ahead < 0 || ahead > size) {
          return fail(
            `packed ring base ${hex(encodeVringBase(position, 'packed'))} is not a position in a ${size}-entry ring`,
          );
        }
      }
      return {
        size,
        desc,
        avail,
        used,
        position,
        inflight: undefined,
        packedRecord,
        resubmit: [],
        packedResubmit,
        recordProblems,
      };
    }
    if (used % 4 !== 0) return fail(`used ring address ${hex(address.used)} is not 4-byte aligned`);
    const usedIdx = memory.memory.readU16(used + 2);
    const inflight = session.inflight?.queue(index, size);
    let nextAvail = ring.base === undefined ? usedIdx : ring.base & 0xffff;
    let resubmit: readonly number[] = [];
    if (inflight) {
      const recovery = inflight.recover(usedIdx);
      if (recovery.restored) {
        nextAvail = recovery.nextAvail;
        resubmit = recovery.resubmit;
        if (resubmit.length > 0) {
          this.#log(`queue ${index}: resubmitting ${resubmit.length} requests left in flight`);
        }
      }
    } else if (nextAvail !== usedIdx) {
      this.#log(
        `queue ${index}: resuming at available index ${nextAvail} with ${(nextAvail - usedIdx) & 0xffff} requests the previous back-end never completed`,
      );
    }
    return {
      size,
      desc,
      avail,
      used,
      position: { nextAvail, nextUsed: usedIdx },
      inflight,
      resubmit,
    };
  }

  /** The controller activates the device (through the proxy): wrap its queues for vhost-user. */
  #onActivate(context: ActivationContext): void | Promise<void> {
    const queues = context.queues.map((queue, index) => {
      if (!queue) return undefined;
      const plan = this.#plans[index];
      const resubmission =
        plan && plan.resubmit.length > 0 ? this.#resubmission(index, plan, context) : undefined;
      for (const problem of plan?.recordProblems ?? []) {
        context.reportViolation({
          code: 'INFLIGHT_RECORD_CORRUPT',
          message: problem,
          queue: index,
          needsReset: false,
        });
      }
      return new RingQueue(queue, {
        ...(plan?.inflight ? { inflight: plan.inflight } : {}),
        ...(plan?.packedRecord
          ? { packed: { record: plan.packedRecord, resubmit: plan.packedResubmit ?? [] } }
          : {}),
        ...(resubmission ? { resubmission } : {}),
        log: (message) => this.#log(message),
      });
    });
    if (this.#active) this.#active.queues = queues;
    return this.device.activate({ ...context, queues });
  }

  /**
   * Serves recovered heads first: a split queue over the real descriptor table and used ring
   * whose available ring (a private page above guest RAM) lists the heads in their original
   * order. Once they are all returned, the ring's own queue takes over where they left it.
   */
  #resubmission(index: number, plan: RingPlan, context: ActivationContext): Resubmission {
    const table = this.#session!.memory!;
    const size = plan.size;
    const base = Math.ceil(table.guestEnd / 4096) * 4096;
    const buffer = new ArrayBuffer(Math.ceil((6 + 2 * size) / 8) * 8);
    const avail = new DataView(buffer);
    avail.setUint16(0, 0, true);
    avail.setUint16(2, plan.resubmit.length, true);
    plan.resubmit.forEach((head, i) => {
      avail.setUint16(4 + 2 * i, head, true);
    });
    const memory = new GuestMemory([...table.regionInits, { guestAddress: base, buffer }]);
    const eventIdx = (context.features & EVENT_IDX) !== 0n;
    const indirect = (context.features & INDIRECT) !== 0n;
    const recovered: DeviceQueue = createDeviceQueue(
      'split',
      {
        index,
        size,
        descAddr: plan.desc,
        driverAddr: base,
        deviceAddr: plan.used,
        eventIdx: false,
        indirect,
      },
      {
        memory,
        onViolation: context.reportViolation,
        position: { nextAvail: 0, nextUsed: plan.position?.nextUsed ?? 0 },
      },
    );
    return {
      queue: recovered,
      nextAvail: plan.position?.nextAvail ?? 0,
      resume: (position) =>
        createDeviceQueue(
          'split',
          {
            index,
            size,
            descAddr: plan.desc,
            driverAddr: plan.avail,
            deviceAddr: plan.used,
            eventIdx,
            indirect,
          },
          { memory: context.memory, onViolation: context.reportViolation, position },
        ),
      onResumed: () => this.#notify(index),
      signalUsed: () => this.#signalCall(index),
    };
  }

  /**
   * Stops the running device: no more chains are handed out, the device's reset settles what it
   * started (completions still reach the ring and are signalled), and each ring's position is
   * kept for GET_VRING_BASE and the next activation.
   */
  async #stopDevice(reason: string): Promise<void> {
    const active = this.#active;
    if (!active) return;
    this.#active = undefined;
    for (const queue of active.queues) queue?.close();
    try {
      await this.device.reset();
    } catch (error) {
      this.#log(`device reset failed: ${(error as Error).message}`);
    }
    const session = this.#session;
    active.queues.forEach((queue, index) => {
      if (!queue) return;
      if (queue.publishUsed()) this.#signalCall(index);
      queue.handBack();
      const ring = session?.rings[index];
      if (ring) ring.base = encodeVringBase(queue.stoppedPosition(), active.layout);
      queue.detach();
    });
    await active.controller.reset();
    this.#plans = [];
    this.#log(`device stopped: ${reason}`);
    this.events.emit('deactivate', reason);
  }

  #notify(index: number): void {
    const active = this.#active;
    if (active?.rings.includes(index)) active.controller.notify(index);
  }

  // ------------------------------------------------------------------ signals

  #signalCall(index: number): void {
    const ring = this.#session?.rings[index];
    if (!ring) return;
    if (ring.callFd < 0) {
      ring.missedCall = true;
      return;
    }
    try {
      signalEventfd(ring.callFd);
    } catch (error) {
      this.#log(`queue ${index}: call descriptor failed: ${(error as Error).message}`);
    }
  }

  #signalErrors(indices: readonly number[]): void {
    for (const index of indices) {
      const fd = this.#session?.rings[index]?.errFd ?? -1;
      if (fd < 0) continue;
      try {
        signalEventfd(fd);
      } catch {
        // The front-end closed it: nothing to tell.
      }
    }
  }

  #onViolation(violation: ProtocolViolation): void {
    this.#log(
      `guest violation${violation.queue === undefined ? '' : ` on queue ${violation.queue}`}: ${violation.message}`,
    );
    this.events.emit('violation', violation);
    if (violation.needsReset && violation.queue !== undefined)
      this.#signalErrors([violation.queue]);
  }

  #sendConfigChange(): void {
    const session = this.#session;
    const channel = session?.backendChannel;
    if (!session || !channel || session.closing) return;
    const wanted = bit(ProtocolFeature.BACKEND_REQ) | bit(ProtocolFeature.CONFIG);
    if ((session.protocolFeatures & wanted) !== wanted) return;
    channel.send(encodeMessage(BackendRequest.CONFIG_CHANGE_MSG, 0));
  }
}

/** Removes a socket left at `path` by an earlier process; refuses to touch anything else. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) {
    throw new VhostUserError('VHOST_USER_SOCKET', `${path} exists and is not a socket`);
  }
  unlinkSync(path);
}

/** One line describing a message, for tracing. */
function describeMessage(message: Message): string {
  const payload = message.payload;
  const shown = Buffer.from(payload.subarray(0, 48)).toString('hex');
  return `${requestName(message.request)} flags=${hex(message.flags)} size=${payload.length}${payload.length > 0 ? ` payload=${shown}${payload.length > 48 ? '…' : ''}` : ''}${message.fds.length > 0 ? ` fds=${message.fds.length}` : ''}`;
}
