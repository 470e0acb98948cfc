/**
 * TUN/TAP: a virtual Ethernet interface whose other end is a file descriptor, the host side of
 * a virtio-net device. With `IFF_VNET_HDR` every frame read or written is prefixed by a
 * `virtio_net_hdr` (10 bytes, or 12 with `num_buffers`), so checksum and segmentation offloads
 * pass between guest and host untouched; read and write frames with `readv`/`writev` as
 * `[header, frame]`.
 */

import {
  IFF_ATTACH_QUEUE,
  IFF_DETACH_QUEUE,
  IFF_MULTI_QUEUE,
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  IFNAMSIZ,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  TUNGETFEATURES,
  TUNGETIFF,
  TUNGETVNETHDRSZ,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETQUEUE,
  TUNSETVNETHDRSZ,
} from './constants.js';
import { LinuxError } from './errors.js';
import { open } from './files.js';
import { lastErrno, libc } from './libc.js';

const EINVAL = 22;
const TUN_PATH = '/dev/net/tun';

/** How to create or attach a TAP interface. */
export interface TapOptions {
  /** Interface name (at most 15 bytes); default: the kernel picks `tapN`. */
  readonly name?: string;
  /**
   * `IFF_MULTI_QUEUE`: open the same name again (with this option) for each further queue.
   * Default false.
   */
  readonly multiQueue?: boolean;
  /** `IFF_VNET_HDR`: frames carry a `virtio_net_hdr` prefix (default true). */
  readonly vnetHeader?: boolean;
  /** Size of that prefix: 10, or 12 with `num_buffers` as virtio 1.x uses (default 12). */
  readonly vnetHeaderSize?: 10 | 12;
  /** `TUN_F_*` offloads the guest handles; default none (the kernel sends plain frames). */
  readonly offloads?: number;
  /** `O_NONBLOCK` on the descriptor (default true: wait for readability on the event loop). */
  readonly nonBlocking?: boolean;
}

/** An open TAP queue. */
export interface TapDevice {
  /** The queue's descriptor. Closing the last one removes a non-persistent interface. */
  readonly fd: number;
  /** Interface name as the kernel assigned it. */
  readonly name: string;
  /** `IFF_*` flags in effect (read back with `TUNGETIFF`). */
  readonly flags: number;
}

// struct ifreq: char ifr_name[16], then a union whose first member used here is short ifr_flags.
function ifreq(): Uint8Array {
  return new Uint8Array(40);
}

function ifreqName(request: Uint8Array): string {
  const end = request.indexOf(0);
  return Buffer.from(request.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end)).toString(
    'utf8',
  );
}

function ioctl(fd: number, request: number, argument: ArrayBufferView | number, name: string) {
  if (libc().ioctl(fd, request, argument) < 0) {
    throw new LinuxError(lastErrno(), `ioctl(${name})`);
  }
}

/**
 * Creates a TAP interface (or attaches a queue to it) and returns its descriptor and name.
 * Needs `CAP_NET_ADMIN`. The interface is not brought up: do that with `ip link set <name> up`
 * or a netlink library.
 *
 * @example
 * ```ts
 * const tap = openTap({ name: 'vk0', offloads: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 });
 * const header = new Uint8Array(12);
 * const frame = new Uint8Array(65550);
 * const length = readv(tap.fd, [header, frame]); // null when nothing is waiting
 * ```
 */
export function openTap(options: TapOptions = {}): TapDevice {
  const name = options.name ?? '';
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length >= IFNAMSIZ || nameBytes.includes(0)) {
    throw new LinuxError(EINVAL, 'ioctl(TUNSETIFF)', {
      detail: `interface name ${JSON.stringify(name)} is longer than ${IFNAMSIZ - 1} bytes`,
    });
  }
  const vnetHeader = options.vnetHeader ?? true;
  const fd = open(TUN_PATH, O_RDWR | O_CLOEXEC | (options.nonBlocking === false ? 0 : O_NONBLOCK));
  try {
    const request = ifreq();
    request.set(nameBytes, 0);
    const flags =
      IFF_TAP |
      IFF_NO_PI |
      (vnetHeader ? IFF_VNET_HDR : 0) |
      (options.multiQueue ? IFF_MULTI_QUEUE : 0);
    new DataView(request.buffer).setUint16(16, flags, true);
    ioctl(fd, TUNSETIFF, request, 'TUNSETIFF');
    if (vnetHeader) setVnetHeaderSize(fd, options.vnetHeaderSize ?? 12);
    if (options.offloads !== undefined) setTapOffload(fd, options.offloads);
    const { name: assigned, flags: effective } = getTapInterface(fd);
    return { fd, name: assigned, flags: effective };
  } catch (error) {
    libc().close(fd);
    throw error;
  }
}

/** Reads back a TUN/TAP descriptor's interface name and `IFF_*` flags (`TUNGETIFF`). */
export function getTapInterface(fd: number): { name: string; flags: number } {
  const request = ifreq();
  ioctl(fd, TUNGETIFF, request, 'TUNGETIFF');
  return { name: ifreqName(request), flags: new DataView(request.buffer).getUint16(16, true) };
}

/** Sets the `virtio_net_hdr` prefix size: 10, or 12 with `num_buffers` (`TUNSETVNETHDRSZ`). */
export function setVnetHeaderSize(fd: number, size: number): void {
  ioctl(fd, TUNSETVNETHDRSZ, new Int32Array([size]), 'TUNSETVNETHDRSZ');
}

/** Reads the `virtio_net_hdr` prefix size (`TUNGETVNETHDRSZ`). */
export function getVnetHeaderSize(fd: number): number {
  const size = new Int32Array(1);
  ioctl(fd, TUNGETVNETHDRSZ, size, 'TUNGETVNETHDRSZ');
  return size[0]!;
}

/**
 * Tells the kernel which offloads the guest handles (`TUNSETOFFLOAD`): `TUN_F_CSUM` lets it
 * send frames with partial checksums, `TUN_F_TSO4`/`TSO6`/`TSO_ECN` (need `CSUM`) large TCP
 * segments, and so on. Match what the guest negotiated (`VIRTIO_NET_F_GUEST_*`). An offload the
 * kernel does not know fails with `EINVAL`.
 */
export function setTapOffload(fd: number, offloads: number): void {
  // The argument is the flags value itself, not a pointer.
  ioctl(fd, TUNSETOFFLOAD, offloads, 'TUNSETOFFLOAD');
}

/**
 * Enables or disables one queue of a multi-queue TAP (`TUNSETQUEUE` with `IFF_ATTACH_QUEUE` or
 * `IFF_DETACH_QUEUE`): a disabled queue keeps its descriptor but the kernel stops steering frames
 * to it, as when the guest uses fewer queue pairs (`VIRTIO_NET_CTRL_MQ`).
 */
export function setTapQueueEnabled(fd: number, enabled: boolean): void {
  const request = ifreq();
  new DataView(request.buffer).setUint16(16, enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE, true);
  ioctl(fd, TUNSETQUEUE, request, 'TUNSETQUEUE');
}

/** The `IFF_*` flags this kernel's TUN/TAP driver supports (`TUNGETFEATURES`). */
export function tunFeatures(): number {
  const fd = open(TUN_PATH, O_RDWR | O_CLOEXEC);
  try {
    const features = new Uint32Array(1);
    ioctl(fd, TUNGETFEATURES, features, 'TUNGETFEATURES');
    return features[0]!;
  } finally {
    libc().close(fd);
  }
}
