/**
 * QEMU command lines that boot a prepared guest, as a reference peer for Virtkit's own VMM and
 * for checking a guest by hand. Software emulation (TCG) by default: see guests.md for why this
 * machine's /dev/kvm cannot run stock kernels.
 */

import type { GuestArch } from './cache.js';
import { GuestError } from './errors.js';
import type { GuestExitAction, GuestMode } from './init.js';

/** Options of {@link qemuCommand}. */
export interface QemuCommandOptions {
  readonly arch: GuestArch;
  readonly kernel: string;
  readonly initrd: string;
  /** Adds `virtkit.mode=` to the kernel command line. */
  readonly mode?: GuestMode;
  /** Adds `virtkit.exit=` to the kernel command line. */
  readonly exit?: GuestExitAction;
  /** More kernel command line arguments. */
  readonly append?: string;
  /** Guest RAM; default 512 MiB. */
  readonly memoryMiB?: number;
  /** vCPUs; default 1. */
  readonly cpus?: number;
  /** Raw disk image attached as a virtio-blk device (`/dev/vda`). */
  readonly disk?: string;
  /** Attach a virtio-net device with QEMU's user-mode network (`eth0`). */
  readonly net?: boolean;
  /** Attach a virtio-rng device. */
  readonly rng?: boolean;
  /** Attach a virtio console port (`/dev/hvc0`) with no host end. */
  readonly console?: boolean;
  /**
   * How devices attach: PCI (default) or virtio-mmio device-tree nodes (riscv64 only; x86_64 q35
   * has no virtio-mmio).
   */
  readonly transport?: 'pci' | 'mmio';
  /** Accelerator; default `tcg`. */
  readonly accel?: 'tcg' | 'kvm';
  /** Appended to the generated arguments. */
  readonly extraArgs?: readonly string[];
}

/** A program and its arguments, ready for `spawn` (no shell quoting needed). */
export interface QemuCommand {
  readonly command: string;
  readonly args: string[];
  /** The kernel command line included in `args`. */
  readonly append: string;
}

/**
 * Builds the QEMU command that boots a guest on the serial console with stdio attached:
 * `qemu-system-x86_64 -M q35` or `qemu-system-riscv64 -M virt`, `-no-reboot` so that the guest's
 * final reboot ends QEMU, and `panic=-1` so that a failing /init does too.
 */
export function qemuCommand(options: QemuCommandOptions): QemuCommand {
  const x86 = options.arch === 'x86_64';
  const transport = options.transport ?? 'pci';
  if (x86 && transport === 'mmio') {
    throw new GuestError('INVALID_OPTIONS', 'x86_64 q35 has no virtio-mmio; use transport pci');
  }
  const device = (name: string): string => `${name}-${transport === 'pci' ? 'pci' : 'device'}`;
  const append = [
    'console=ttyS0',
    // Keyboard-controller reset: q35 has an i8042, and it needs no ACPI reset register.
    ...(x86 ? ['reboot=k'] : []),
    'panic=-1',
    ...(options.mode ? [`virtkit.mode=${options.mode}`] : []),
    ...(options.exit ? [`virtkit.exit=${options.exit}`] : []),
    ...(options.append ? [options.append] : []),
  ].join(' ');
  const args = [
    '-M',
    x86 ? 'q35' : 'virt',
    '-accel',
    options.accel ?? 'tcg',
    '-m',
    String(options.memoryMiB ?? 512),
    '-smp',
    String(options.cpus ?? 1),
    '-nographic',
    '-no-reboot',
    ...(x86 ? [] : ['-bios', 'default']),
    '-kernel',
    options.kernel,
    '-initrd',
    options.initrd,
    '-append',
    append,
  ];
  if (options.disk !== undefined) {
    args.push(
      '-drive',
      `if=none,id=vd0,format=raw,file=${options.disk.replaceAll(',', ',,')}`,
      '-device',
      `${device('virtio-blk')},drive=vd0`,
    );
  }
  if (options.net) {
    args.push('-netdev', 'user,id=net0', '-device', `${device('virtio-net')},netdev=net0`);
  }
  if (options.rng) args.push('-device', device('virtio-rng'));
  if (options.console) {
    args.push(
      '-chardev',
      'null,id=vcon0',
      '-device',
      device('virtio-serial'),
      '-device',
      'virtconsole,chardev=vcon0',
    );
  }
  args.push(...(options.extraArgs ?? []));
  return { command: x86 ? 'qemu-system-x86_64' : 'qemu-system-riscv64', args, append };
}
