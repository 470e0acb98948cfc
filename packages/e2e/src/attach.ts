/**
 * One disk, three ways to serve it: our vhost-user-blk backend, qemu-storage-daemon's
 * vhost-user-blk export, or QEMU's built-in virtio-blk. The scenario and the benchmark attach a
 * disk the same way whichever serves it.
 */

import { join } from 'node:path';
import { startStorageDaemon, startVirtkitBackend, type VhostUserBackend } from './backend.js';
import { E2eError } from './errors.js';
import type { BlkAttachment, NetAttachment } from './qemu.js';

/** Who serves a disk to the guest. */
export type BlkServer = 'virtkit' | 'qsd' | 'builtin';

/** Human names of {@link BlkServer}s. */
export const BLK_SERVER_NAMES: Readonly<Record<BlkServer, string>> = {
  virtkit: 'virtkit vhost-user-blk',
  qsd: 'qemu-storage-daemon vhost-user-blk',
  builtin: 'QEMU built-in virtio-blk',
};

/** Options of {@link attachBlk}. */
export interface AttachBlkOptions {
  readonly image: string;
  /** Directory for the vhost-user socket. */
  readonly socketDir: string;
  readonly readonly?: boolean;
  readonly queues?: number;
  readonly packed?: boolean;
  /**
   * Bypass the host page cache (O_DIRECT): our `direct=on`, qemu-storage-daemon's
   * `cache.direct=on`, QEMU's `cache=none`. Default off (writeback through the page cache).
   */
  readonly direct?: boolean;
  /**
   * Let the guest's discards punch holes in the image: qemu-storage-daemon's and QEMU's
   * `discard=unmap` (they ignore discards by default); ours does it by default (`discard=on`).
   */
  readonly discard?: boolean;
  /** The disk's serial number (GET_ID); ours and QEMU's only (qemu-storage-daemon has none). */
  readonly serial?: string;
  /** Logical block size the guest sees (4096 for a 4 KiB-sector disk); default 512. */
  readonly blockSize?: number;
  /** Our backend's `aio=` (threads or sync); default: the device's default. */
  readonly aio?: 'threads' | 'sync';
  /** QEMU reconnects to a vhost-user backend that went away, every this many seconds. */
  readonly reconnect?: number;
  readonly onOutput?: (text: string) => void;
}

/** A disk ready to be given to {@link guestVmCommand}, and its backend process if any. */
export interface AttachedBlk {
  readonly attachment: BlkAttachment;
  readonly backend: VhostUserBackend | undefined;
  /** Stops the backend (if any). */
  close(): Promise<void>;
}

/** Starts the backend for `server` (none for built-in) and describes the QEMU device. */
export async function attachBlk(
  server: BlkServer,
  options: AttachBlkOptions,
): Promise<AttachedBlk> {
  const device = {
    ...(options.queues !== undefined ? { numQueues: options.queues } : {}),
    ...(options.packed ? { packed: true } : {}),
  };
  if (server === 'builtin') {
    return {
      attachment: {
        kind: 'builtin',
        image: options.image,
        cache: options.direct ? 'none' : 'writeback',
        ...(options.readonly ? { readonly: true } : {}),
        ...(options.discard ? { discard: true } : {}),
        ...(options.serial !== undefined ? { serial: options.serial } : {}),
        ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
        ...device,
      },
      backend: undefined,
      close: async () => {},
    };
  }
  if (server === 'qsd' && options.serial !== undefined) {
    throw new E2eError('INVALID_OPTIONS', 'qemu-storage-daemon exports have no serial number');
  }
  const socket = join(options.socketDir, `${server}-blk.sock`);
  const backend =
    server === 'virtkit'
      ? await startVirtkitBackend({
          socket,
          device: [
            'blk',
            `path=${options.image}`,
            ...(options.readonly ? ['readonly=on'] : []),
            ...(options.queues !== undefined ? [`queues=${options.queues}`] : []),
            ...(options.direct ? ['direct=on'] : []),
            ...(options.aio ? [`aio=${options.aio}`] : []),
            ...(options.serial !== undefined ? [`serial=${options.serial}`] : []),
            ...(options.blockSize !== undefined ? [`logical_block_size=${options.blockSize}`] : []),
          ].join(','),
          ...(options.onOutput ? { onOutput: options.onOutput } : {}),
        })
      : await startStorageDaemon({
          socket,
          image: options.image,
          direct: options.direct === true,
          ...(options.readonly ? { readonly: true } : {}),
          ...(options.discard ? { discard: true } : {}),
          ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
          ...(options.queues !== undefined ? { numQueues: options.queues } : {}),
        });
  return {
    attachment: {
      kind: 'vhost-user',
      socket,
      ...device,
      ...(options.reconnect !== undefined ? { reconnect: options.reconnect } : {}),
    },
    backend,
    close: async () => {
      await backend.stop();
    },
  };
}

/** Who serves a guest's network interface: our vhost-user net, or QEMU's virtio-net on TAP. */
export type NetServer = 'virtkit' | 'builtin';

/** Human names of {@link NetServer}s. */
export const NET_SERVER_NAMES: Readonly<Record<NetServer, string>> = {
  virtkit: 'virtkit vhost-user net (TAP backend)',
  builtin: 'QEMU built-in virtio-net (TAP, vhost=off)',
};

/** Options of {@link attachNet}. */
export interface AttachNetOptions {
  /** Namespace holding the TAP interface. */
  readonly netns: string;
  /** The TAP interface the device sends to and receives from. */
  readonly tap: string;
  readonly socketDir: string;
  readonly mac?: string;
  readonly reconnect?: number;
  /** Queue pairs (ours only; the TAP must be multi-queue for more than 1). */
  readonly queues?: number;
  /**
   * MSI-X for the guest's NIC. Default: on for QEMU's own, off for vhost-user (QEMU 7.2 under
   * TCG crashes with a vhost-user NIC that has MSI-X; see {@link NetAttachment}).
   */
  readonly msix?: boolean;
  readonly onOutput?: (text: string) => void;
}

/** A NIC ready for {@link guestVmCommand}; `qemuNetns` says where QEMU itself must run. */
export interface AttachedNet {
  readonly attachment: NetAttachment;
  readonly backend: VhostUserBackend | undefined;
  /** QEMU's tap netdev opens the interface by name: QEMU runs in the TAP's namespace. */
  readonly qemuNetns: string | undefined;
  close(): Promise<void>;
}

/** Starts the backend for `server` (none for built-in) and describes the QEMU NIC. */
export async function attachNet(
  server: NetServer,
  options: AttachNetOptions,
): Promise<AttachedNet> {
  const mac = {
    ...(options.mac !== undefined ? { mac: options.mac } : {}),
    ...(options.msix !== undefined ? { msix: options.msix } : {}),
  };
  if (server === 'builtin') {
    return {
      attachment: { kind: 'tap', ifname: options.tap, ...mac },
      backend: undefined,
      qemuNetns: options.netns,
      close: async () => {},
    };
  }
  const socket = join(options.socketDir, 'virtkit-net.sock');
  const backend = await startVirtkitBackend({
    socket,
    device: `net,tap=${options.tap}${options.queues !== undefined ? `,queues=${options.queues}` : ''}`,
    netns: options.netns,
    ...(options.onOutput ? { onOutput: options.onOutput } : {}),
  });
  return {
    attachment: {
      kind: 'vhost-user',
      socket,
      ...mac,
      ...(options.reconnect !== undefined ? { reconnect: options.reconnect } : {}),
      ...(options.queues !== undefined ? { queues: options.queues } : {}),
    },
    backend,
    qemuNetns: undefined,
    close: async () => {
      await backend.stop();
    },
  };
}
