/**
 * `virtkit guest ...`: the command-line face of this package, for the `virtkit` CLI to mount.
 */

import { parseArgs } from 'node:util';
import { GUEST_ARCHES, type GuestArch } from './cache.js';
import { GuestError } from './errors.js';
import { GUEST_MODES, type GuestMode } from './init.js';
import { buildInitramfs } from './initramfs.js';
import { type GuestProgress, prepareGuest } from './prepare.js';
import { qemuCommand } from './qemu.js';

/** Where the command writes; defaults to the process's stdout and stderr. */
export interface GuestCommandIO {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

const USAGE = `usage: virtkit guest prepare [--arch x86_64|riscv64] [--dir CACHE] [--mode shell|script|demo] [--refresh] [--quiet]

Downloads a Debian kernel, its virtio modules and busybox-static into CACHE
(default: $VIRTKIT_GUEST_CACHE/<arch> or ~/.cache/virtkit/guest/<arch>) and writes an
initramfs whose /init starts in the given mode (default shell; the kernel command line
switch virtkit.mode=shell|script|demo overrides it). Prints the kernel and initramfs paths.`;

const defaultIO: GuestCommandIO = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

/**
 * Runs `guest <subcommand> ...` and returns the exit code: 0 on success, 1 when preparing failed,
 * 2 (with a one-line message) for bad arguments. `argv` is what follows `virtkit`, with or
 * without the leading `guest`.
 *
 * @example
 * ```ts
 * process.exitCode = await runGuestCommand(process.argv.slice(2));
 * ```
 */
export async function runGuestCommand(
  argv: readonly string[],
  io: GuestCommandIO = defaultIO,
): Promise<number> {
  const args = argv[0] === 'guest' ? argv.slice(1) : [...argv];
  const usageError = (message: string): number => {
    io.err(`virtkit guest: ${message} (see virtkit guest --help)`);
    return 2;
  };
  const [command, ...rest] = args;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    (command === undefined ? io.err : io.out)(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'prepare') return usageError(`unknown command '${command}'`);

  let values: {
    arch?: string;
    dir?: string;
    mode?: string;
    refresh?: boolean;
    quiet?: boolean;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        arch: { type: 'string' },
        dir: { type: 'string' },
        mode: { type: 'string' },
        refresh: { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (error) {
    return usageError((error as Error).message.split('\n')[0]!.replace(/\.$/, ''));
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const arch = (values.arch ?? 'x86_64') as GuestArch;
  if (!GUEST_ARCHES.includes(arch)) {
    return usageError(`unknown --arch '${values.arch}', expected ${GUEST_ARCHES.join(' or ')}`);
  }
  const mode = (values.mode ?? 'shell') as GuestMode;
  if (!GUEST_MODES.includes(mode) || mode === 'script') {
    return usageError(
      `--mode must be shell or demo here, not '${values.mode}' (script mode needs a script: use the API)`,
    );
  }
  if (values.dir === '') return usageError('--dir needs a directory');

  try {
    const guest = await prepareGuest({
      arch,
      ...(values.dir === undefined ? {} : { dir: values.dir }),
      ...(values.refresh ? { refresh: true } : {}),
      ...(values.quiet
        ? {}
        : { onProgress: ({ step, detail }: GuestProgress) => io.err(`[${step}] ${detail}`) }),
    });
    const initramfs = await buildInitramfs({ arch, dir: guest.dir, mode });
    io.out(`kernel     ${guest.kernel}`);
    io.out(`initramfs  ${initramfs.path}`);
    if (!values.quiet) {
      const qemu = qemuCommand({ arch, kernel: guest.kernel, initrd: initramfs.path });
      io.err(`boot it:   ${[qemu.command, ...qemu.args].map(shellQuote).join(' ')}`);
    }
    return 0;
  } catch (error) {
    const message = error instanceof GuestError ? error.message : String(error);
    io.err(`virtkit guest prepare: ${message}`);
    return 1;
  }
}
