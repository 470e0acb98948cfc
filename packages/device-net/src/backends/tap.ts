/**
 * Linux TAP backend (Documentation/networking/tuntap.rst): a host Ethernet interface whose other
 * end is a file descriptor, opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a 12-byte vnet
 * header (`TUNSETVNETHDRSZ`). The kernel's vnet header is `struct virtio_net_hdr`, so frames
 * pass through with their offload metadata untouched: guest TSO/checksum requests reach the host
 * stack, and the host sends the guest large or partially checksummed frames exactly when the
 * guest negotiated the matching GUEST_* features (`TUNSETOFFLOAD`, set at activation).
 *
 * With several queue pairs the interface is opened with `IFF_MULTI_QUEUE`, one descriptor per
 * pair; the kernel spreads received flows over them itself.
 *
 * Readiness comes from `FdWatcher` (a libuv poll handle on Node's loop), armed only while the
 * device wants frames: while the guest has no receive buffers the descriptor is not read, and
 * the kernel queues (then drops, past the interface's txqueuelen) as for any busy NIC.
 */

import {
  close,
  FdWatcher,
  LinuxError,
  openTap,
  read,
  setTapOffload,
  setTapQueueEnabled,
  type TapDevice,
  TUN_F_CSUM,
  TUN_F_TSO_ECN,
  TUN_F_TSO4,
  TUN_F_TSO6,
  writev,
} from '@virtkit/linux';
import { MAX_FRAME_SIZE, NET_HDR_SIZE } from '../constants.js';
import { NetError } from '../errors.js';
import type { GuestOffloads, NetBackend, NetBackendPort, SendResult } from './backend.js';

/** Options of {@link TapBackend.open}. */
export interface TapBackendOptions {
  /** Interface name (at most 15 bytes), e.g. `vm0-tap`. Created if missing (needs CAP_NET_ADMIN). */
  readonly name: string;
  /** Descriptors (queue pairs) to open; more than 1 uses `IFF_MULTI_QUEUE` (default 1). */
  readonly queues?: number;
  /** Diagnostic messages. */
  readonly log?: (message: string) => void;
}

/** Counters particular to the TAP backend. */
export interface TapStats {
  /** Writes the kernel refused (`EINVAL` for a header it rejects, `EIO` while the interface is down). */
  writeErrors: number;
  /** Reads that failed with an error other than "nothing to read". */
  readErrors: number;
}

/** Read buffer: the header and the largest frame, with room for a kernel that sends a bit more. */
const READ_BUFFER_SIZE = NET_HDR_SIZE + MAX_FRAME_SIZE + 1024;
/** Retry delay after the kernel refused a write for lack of buffer space. */
const WRITE_RETRY_MS = 1;

/** Translates negotiated guest offloads to `TUN_F_*` flags (each TSO flag needs CSUM). */
export function tunOffloadFlags(offloads: GuestOffloads): number {
  if (!offloads.csum) return 0;
  let flags = TUN_F_CSUM;
  if (offloads.tso4) flags |= TUN_F_TSO4;
  if (offloads.tso6) flags |= TUN_F_TSO6;
  if (offloads.ecn && (offloads.tso4 || offloads.tso6)) flags |= TUN_F_TSO_ECN;
  return flags;
}

/**
 * A TAP interface as a network backend.
 *
 * @example
 * ```ts
 * const backend = TapBackend.open({ name: 'vm0' });
 * const device = new NetDevice({ backend });
 * // on the host: ip link set vm0 up; ip addr add 10.0.0.1/24 dev vm0
 * ```
 */
export class TapBackend implements NetBackend {
  readonly kind = 'tap';
  readonly vnetHeader = true;
  readonly channels: number;
  readonly description: string;
  /** Interface name as the kernel assigned it. */
  readonly name: string;
  readonly stats: TapStats = { writeErrors: 0, readErrors: 0 };
  readonly #taps: TapDevice[];
  readonly #attached: boolean[];
  readonly #buffers: Uint8Array[];
  readonly #watchers: (FdWatcher | undefined)[];
  readonly #log: (message: string) => void;
  #port: NetBackendPort | undefined;
  #offloadFlags = 0;
  #closed = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #wantsWritable = new Set<number>();

  private constructor(taps: TapDevice[], options: TapBackendOptions) {
    this.#taps = taps;
    this.#attached = taps.map(() => true);
    this.channels = taps.length;
    this.name = taps[0]!.name;
    this.description = `tap:${this.name}`;
    this.#log = options.log ?? (() => {});
    this.#buffers = taps.map(() => new Uint8Array(READ_BUFFER_SIZE));
    this.#watchers = taps.map(() => undefined);
  }

  /**
   * Creates or attaches to the interface and opens one descriptor per queue. Throws a
   * {@link NetError} (`NET_BACKEND`) with the kernel's reason, e.g. without CAP_NET_ADMIN.
   */
  static open(options: TapBackendOptions): TapBackend {
    const queues = options.queues ?? 1;
    const taps: TapDevice[] = [];
    try {
      for (let i = 0; i < queues; i++) {
        taps.push(
          openTap({
            name: i === 0 ? options.name : taps[0]!.name,
            multiQueue: queues > 1,
            vnetHeader: true,
            vnetHeaderSize: NET_HDR_SIZE,
            offloads: 0,
            nonBlocking: true,
          }),
        );
      }
    } catch (error) {
      for (const tap of taps) close(tap.fd);
      throw new NetError(
        'NET_BACKEND',
        `cannot open TAP interface '${options.name}': ${(error as Error).message}`,
        { cause: error },
      );
    }
    return new TapBackend(taps, options);
  }

  /** A TAP's carrier is up while its descriptor is open. */
  get linkUp(): boolean {
    return !this.#closed;
  }

  /** `TUN_F_*` flags last set with `TUNSETOFFLOAD`. */
  get offloadFlags(): number {
    return this.#offloadFlags;
  }

  attach(port: NetBackendPort): void {
    this.#port = port;
  }

  setOffloads(offloads: GuestOffloads): void {
    if (this.#closed) return;
    const flags = tunOffloadFlags(offloads);
    if (flags === this.#offloadFlags) return;
    // Offloads belong to the interface, so one descriptor is enough.
    setTapOffload(this.#taps[0]!.fd, flags);
    this.#offloadFlags = flags;
  }

  /**
   * Attaches the first `count` queues and detaches the rest (TUNSETQUEUE), as QEMU does on
   * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: the kernel then steers received frames to attached queues
   * only. A single-queue TAP has nothing to detach.
   */
  setActiveChannels(count: number): void {
    if (this.#taps.length < 2 || this.#closed) return;
    for (const [channel, tap] of this.#taps.entries()) {
      const enabled = channel < Math.max(1, count);
      if (this.#attached[channel] === enabled) continue;
      try {
        setTapQueueEnabled(tap.fd, enabled);
        this.#attached[channel] = enabled;
      } catch (error) {
        this.#log(`${this.description}: ${(error as Error).message}`);
      }
    }
  }

  /** The TAP queue descriptors, one per channel (owned by the backend: do not close them). */
  get fds(): readonly number[] {
    return this.#taps.map((tap) => tap.fd);
  }

  /** Whether each queue is attached to the interface (multi-queue TAPs). */
  get attachedChannels(): readonly boolean[] {
    return this.#attached;
  }

  receive(channel: number): Uint8Array | null {
    const tap = this.#taps[channel];
    if (!tap || this.#closed) return null;
    const buffer = this.#buffers[channel]!;
    for (;;) {
      let length: number | null;
      try {
        length = read(tap.fd, buffer);
      } catch (error) {
        this.stats.readErrors++;
        this.#log(`${this.description}: ${(error as Error).message}`);
        length = null;
      }
      if (length === null) {
        this.#watch(channel);
        return null;
      }
      // A read shorter than the header is not a frame (a kernel never sends one); skip it.
      if (length >= NET_HDR_SIZE) return buffer.subarray(0, length);
    }
  }

  send(channel: number, pieces: readonly Uint8Array[]): SendResult {
    const tap = this.#taps[channel];
    if (!tap || this.#closed) return 'dropped';
    try {
      if (writev(tap.fd, pieces) !== null) return 'sent';
    } catch (error) {
      // EIO while the host interface is down, EINVAL for a header the kernel refuses: the frame
      // is lost, as on a real NIC.
      this.stats.writeErrors++;
      if (!(error instanceof LinuxError) || error.code !== 'EIO') {
        this.#log(`${this.description}: ${(error as Error).message}`);
      }
      return 'dropped';
    }
    // EAGAIN: the socket buffer is full. TAP descriptors are not polled for writability here
    // (one watcher per descriptor, used for reading), so retry shortly.
    this.#wantsWritable.add(channel);
    this.#retryTimer ??= setTimeout(() => {
      this.#retryTimer = undefined;
      const channels = [...this.#wantsWritable];
      this.#wantsWritable.clear();
      for (const c of channels) this.#port?.writable(c);
    }, WRITE_RETRY_MS);
    return 'again';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    for (const tap of this.#taps) close(tap.fd);
    this.#watchers.fill(undefined);
  }

  #watch(channel: number): void {
    const existing = this.#watchers[channel];
    if (existing) {
      existing.start();
      return;
    }
    const watcher = new FdWatcher(this.#taps[channel]!.fd, () => {
      // Level-triggered: stop until the device has drained the descriptor again.
      watcher.stop();
      this.#port?.readable(channel);
    });
    this.#watchers[channel] = watcher;
  }
}
