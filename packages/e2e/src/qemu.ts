/**
 * QEMU guests for the e2e tests: the prepared x86_64 guest (q35, TCG) booted with block and
 * network devices that are either QEMU's own (the baselines) or vhost-user devices served by a
 * backend process, with the serial console captured.
 */

import { type GuestExitAction, type GuestMode, parseGuestExit, qemuCommand } from '@virtkit/guest';
import { ManagedProcess } from './process.js';

/** A disk attached to the guest (`/dev/vda`, `/dev/vdb`... in order). */
export type BlkAttachment =
  | {
      /** QEMU's own virtio-blk-pci on a raw image. */
      readonly kind: 'builtin';
      readonly image: string;
      readonly readonly?: boolean;
      /** `none` opens the image with O_DIRECT (as qemu-storage-daemon's `cache.direct=on`). */
      readonly cache?: 'none' | 'writeback';
      /** Pass the guest's discards on to the image (`discard=unmap`: punch holes). */
      readonly discard?: boolean;
      /** The disk's serial number (what GET_ID returns). */
      readonly serial?: string;
      /** Logical (and physical) block size the guest sees; default 512. */
      readonly blockSize?: number;
      readonly numQueues?: number;
      readonly packed?: boolean;
    }
  | {
      /** vhost-user-blk-pci: the device runs in the process listening on `socket`. */
      readonly kind: 'vhost-user';
      readonly socket: string;
      readonly numQueues?: number;
      readonly packed?: boolean;
      /** Seconds between reconnection attempts after the backend goes away (QEMU `reconnect=`). */
      readonly reconnect?: number;
    };

/** A network interface attached to the guest (`eth0`, `eth1`...). */
export type NetAttachment =
  | {
      /** QEMU's own virtio-net-pci on a TAP interface (vhost=off); QEMU must run in its namespace. */
      readonly kind: 'tap';
      readonly ifname: string;
      readonly mac?: string;
      /** Give the NIC MSI-X vectors (default true; false: INTx, `vectors=0`). */
      readonly msix?: boolean;
    }
  | {
      /** `-netdev vhost-user` + virtio-net-pci: the device runs in the process on `socket`. */
      readonly kind: 'vhost-user';
      readonly socket: string;
      readonly mac?: string;
      readonly queues?: number;
      readonly reconnect?: number;
      readonly packed?: boolean;
      /**
       * Give the NIC MSI-X vectors. Default false: QEMU 7.2 under TCG crashes (NULL
       * `vector_irqfd` in `kvm_virtio_pci_irqfd_use`, reached from `msix_set_vector_notifiers` in
       * `vhost_net_start`) when a vhost-user NIC has MSI-X, because virtio-pci 7.2 installs vector
       * notifiers even though vhost-user turned guest notifier masking off; QEMU 8.0 checks
       * `use_guest_notifier_mask` there. Without MSI-X the guest uses INTx.
       */
      readonly msix?: boolean;
    };

/** Options of {@link guestVmCommand}. */
export interface GuestVmOptions {
  /** Kernel image (from `prepareGuest`). */
  readonly kernel: string;
  readonly initrd: string;
  readonly mode?: GuestMode;
  readonly exit?: GuestExitAction;
  /** More kernel command line arguments. */
  readonly append?: string;
  /** Guest RAM in MiB; default 512. */
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly blk?: readonly BlkAttachment[];
  readonly net?: readonly NetAttachment[];
  /**
   * Let a guest reboot restart the machine inside the same QEMU process (devices are reset and
   * the guest boots again). Default: a reboot ends QEMU (`-no-reboot`).
   */
  readonly reboot?: boolean;
  /** Share guest RAM through a memfd (needed by vhost-user; implied when a device uses it). */
  readonly sharedMemory?: boolean;
  readonly extraArgs?: readonly string[];
}

/** Builds the QEMU command line; see {@link GuestVmOptions}. */
export function guestVmCommand(options: GuestVmOptions): { command: string; args: string[] } {
  const memoryMiB = options.memoryMiB ?? 512;
  const extra: string[] = [];
  const blk = options.blk ?? [];
  const net = options.net ?? [];
  const shared =
    options.sharedMemory ||
    blk.some((disk) => disk.kind === 'vhost-user') ||
    net.some((nic) => nic.kind === 'vhost-user');
  if (shared) {
    // vhost-user backends map guest RAM from the memfd QEMU sends them in SET_MEM_TABLE.
    extra.push(
      '-object',
      `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
      '-machine',
      'memory-backend=mem',
    );
  }
  blk.forEach((disk, index) => {
    const queues = disk.numQueues !== undefined ? `,num-queues=${disk.numQueues}` : '';
    const packed = disk.packed ? ',packed=on' : '';
    if (disk.kind === 'builtin') {
      extra.push(
        '-drive',
        `if=none,id=disk${index},format=raw,file=${escapeOption(disk.image)}` +
          `,cache=${disk.cache ?? 'writeback'}${disk.readonly ? ',readonly=on' : ''}` +
          `${disk.discard ? ',discard=unmap' : ''}`,
        '-device',
        `virtio-blk-pci,drive=disk${index}${queues}${packed}` +
          `${disk.serial !== undefined ? `,serial=${escapeOption(disk.serial)}` : ''}` +
          `${disk.blockSize !== undefined ? `,logical_block_size=${disk.blockSize},physical_block_size=${disk.blockSize}` : ''}`,
      );
    } else {
      extra.push(
        '-chardev',
        `socket,id=blkchr${index},path=${escapeOption(disk.socket)}${reconnect(disk.reconnect)}`,
        '-device',
        `vhost-user-blk-pci,chardev=blkchr${index}${queues}${packed}`,
      );
    }
  });
  net.forEach((nic, index) => {
    const mac = `,mac=${nic.mac ?? `52:54:00:e2:e0:${index.toString(16).padStart(2, '0')}`}`;
    if (nic.kind === 'tap') {
      extra.push(
        '-netdev',
        `tap,id=net${index},ifname=${nic.ifname},script=no,downscript=no,vhost=off`,
        '-device',
        `virtio-net-pci,netdev=net${index}${mac}${nic.msix === false ? ',vectors=0' : ''}`,
      );
    } else {
      const queues = nic.queues ?? 1;
      extra.push(
        '-chardev',
        `socket,id=netchr${index},path=${escapeOption(nic.socket)}${reconnect(nic.reconnect)}`,
        '-netdev',
        `vhost-user,id=net${index},chardev=netchr${index}${queues > 1 ? `,queues=${queues}` : ''}`,
        '-device',
        `virtio-net-pci,netdev=net${index}${mac}${nic.packed ? ',packed=on' : ''}` +
          (queues > 1 ? ',mq=on' : '') +
          (nic.msix ? (queues > 1 ? `,vectors=${2 * queues + 2}` : '') : ',vectors=0'),
      );
    }
  });
  const { command, args } = qemuCommand({
    arch: 'x86_64',
    kernel: options.kernel,
    initrd: options.initrd,
    memoryMiB,
    ...(options.cpus !== undefined ? { cpus: options.cpus } : {}),
    ...(options.mode !== undefined ? { mode: options.mode } : {}),
    ...(options.exit !== undefined ? { exit: options.exit } : {}),
    // Kernel messages share the serial console with the scenario's `E2E ...` lines; on a loaded
    // machine a printk can land inside one and break a check. Tests keep the console quiet.
    append: options.append ?? 'quiet loglevel=1',
    extraArgs: [...extra, ...(options.extraArgs ?? [])],
  });
  return {
    command,
    args: options.reboot ? args.filter((arg) => arg !== '-no-reboot') : args,
  };
}

function reconnect(seconds: number | undefined): string {
  return seconds !== undefined ? `,reconnect=${seconds}` : '';
}

/** QEMU option values escape a comma by doubling it. */
function escapeOption(value: string): string {
  return value.replaceAll(',', ',,');
}

/** Options of {@link startGuestVm}. */
export interface StartGuestVmOptions extends GuestVmOptions {
  readonly label?: string;
  /** Run QEMU inside this network namespace (needed for `tap` NICs). */
  readonly netns?: string;
  /** Console output as it arrives (e.g. to echo it). */
  readonly onOutput?: (text: string) => void;
  /** `inherit` gives the guest's serial console our terminal (interactive shell). */
  readonly stdin?: 'pipe' | 'inherit';
}

/** Boots a guest; its console is the process output. */
export function startGuestVm(options: StartGuestVmOptions): ManagedProcess {
  const { command, args } = guestVmCommand(options);
  return ManagedProcess.start({
    label: options.label ?? 'qemu',
    command,
    args,
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    ...(options.onOutput !== undefined ? { onOutput: options.onOutput } : {}),
    stdin: options.stdin ?? 'pipe',
  });
}

/** The outcome of a guest run that ended (or was killed). */
export interface GuestRunResult {
  /** Console output (serial) and QEMU's own messages. */
  readonly output: string;
  /** QEMU's exit code (0 after the guest's final reboot or poweroff). */
  readonly qemuStatus: number | null;
  /** Status the guest's script reported (`VIRTKIT-EXIT n`), if it got that far. */
  readonly guestStatus: number | undefined;
  readonly wallMs: number;
  readonly timedOut: boolean;
}

/** Boots a guest and waits for QEMU to end, killing it after `timeoutMs`. */
export async function runGuestVm(
  options: StartGuestVmOptions & { readonly timeoutMs: number },
): Promise<GuestRunResult> {
  const started = Date.now();
  const vm = startGuestVm(options);
  const { code, timedOut } = await vm.wait(options.timeoutMs);
  return {
    output: vm.output,
    qemuStatus: code,
    guestStatus: parseGuestExit(vm.output),
    wallMs: Date.now() - started,
    timedOut,
  };
}
