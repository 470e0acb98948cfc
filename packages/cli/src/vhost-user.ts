/**
 * `virtkit vhost-user --socket PATH --device TYPE[,key=value...]`: serves one device to one
 * vhost-user front-end at a time, until it goes away (or, with `--keep-serving`, until SIGTERM).
 */

import { parseArgs } from 'node:util';
import { OptionsError, PluginError, parseDeviceArgument, type VirtioDevice } from '@virtkit/core';
import { VhostUserBackend } from '@virtkit/vhost-user';
import { ExitCode, UsageError } from './errors.js';
import { createRegistry, describePlugins, firstLine } from './plugins.js';

/** Where a command writes, and how it is stopped. */
export interface CommandContext {
  /** A line for stdout. */
  readonly out: (line: string) => void;
  /** A line for stderr. */
  readonly err: (line: string) => void;
  /** Aborting it stops the command as SIGTERM would. */
  readonly signal?: AbortSignal;
}

/** Usage of `virtkit vhost-user`. */
export const VHOST_USER_USAGE = `usage: virtkit vhost-user --socket PATH --device TYPE[,key=value...] [options]

Serves one virtio device as a vhost-user back-end on the Unix socket PATH (created; a
stale socket there is replaced). The front-end (QEMU, Cloud Hypervisor) connects to it.
Runs until the front-end disconnects, or SIGTERM/SIGINT.

options:
  --socket PATH        Unix socket to listen on (also --socket-path)
  --fd N               serve an already connected socket inherited as descriptor N instead
  --device SPEC        TYPE,key=value,...: a device plugin and its options (commas in a
                       value are written ,,); a bare key means key=on
  --plugin MODULE      load device plugins from MODULE (a path or package; repeatable)
  --keep-serving       after the front-end disconnects, wait for the next one (for QEMU
                       reconnect=N, or restarting the VM); only SIGTERM/SIGINT ends it
  -v, --verbose        log every vhost-user message received
  -q, --quiet          log nothing but errors
  -h, --help           this help, with the device plugins and their options

exit status: 0 when the front-end went away or on SIGTERM/SIGINT, 1 when the device or
socket could not be set up (or the front-end broke the protocol), 2 for bad arguments.

example:
  virtkit vhost-user --socket /tmp/vblk.sock --device blk,path=disk.img,queues=2
  qemu-system-x86_64 -M q35,memory-backend=mem -m 512M \\
    -object memory-backend-memfd,id=mem,size=512M,share=on \\
    -chardev socket,id=c0,path=/tmp/vblk.sock \\
    -device vhost-user-blk-pci,chardev=c0,num-queues=2 ...`;

interface VhostUserArguments {
  readonly socket?: string;
  readonly fd?: number;
  readonly device: string;
  readonly plugins: readonly string[];
  readonly keepServing: boolean;
  readonly verbose: boolean;
  readonly quiet: boolean;
}

function parseVhostUserArguments(argv: readonly string[]): VhostUserArguments | 'help' {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        socket: { type: 'string' },
        'socket-path': { type: 'string' },
        fd: { type: 'string' },
        device: { type: 'string' },
        plugin: { type: 'string', multiple: true },
        'keep-serving': { type: 'boolean' },
        verbose: { type: 'boolean', short: 'v' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (error) {
    throw new UsageError(firstLine(error).replace(/\.$/, ''));
  }
  if (values.help) return 'help';
  const socket = (values.socket ?? values['socket-path']) as string | undefined;
  if (values.socket !== undefined && values['socket-path'] !== undefined) {
    throw new UsageError('give --socket or --socket-path, not both');
  }
  let fd: number | undefined;
  if (values.fd !== undefined) {
    const text = values.fd as string;
    if (!/^\d+$/.test(text) || Number(text) < 3) {
      throw new UsageError(`--fd needs a descriptor number of at least 3, got '${text}'`);
    }
    fd = Number(text);
  }
  if (socket === undefined && fd === undefined) throw new UsageError('--socket PATH is required');
  if (socket !== undefined && fd !== undefined)
    throw new UsageError('give --socket or --fd, not both');
  if (socket === '') throw new UsageError('--socket needs a path');
  const device = values.device as string | undefined;
  if (device === undefined || device === '') {
    throw new UsageError('--device TYPE[,key=value...] is required');
  }
  if (values.verbose && values.quiet) throw new UsageError('give --verbose or --quiet, not both');
  if (values['keep-serving'] && fd !== undefined) {
    throw new UsageError(
      '--keep-serving needs --socket: an inherited connection cannot be re-accepted',
    );
  }
  return {
    ...(socket !== undefined ? { socket } : {}),
    ...(fd !== undefined ? { fd } : {}),
    device,
    plugins: (values.plugin as string[] | undefined) ?? [],
    keepServing: values['keep-serving'] === true,
    verbose: values.verbose === true,
    quiet: values.quiet === true,
  };
}

/** Closes a device that has a `close()` (disks and NICs hold files and sockets). */
async function closeDevice(device: VirtioDevice): Promise<void> {
  const closable = device as VirtioDevice & { close?: () => unknown };
  if (typeof closable.close === 'function') await closable.close();
}

/**
 * Runs `virtkit vhost-user ...` (`argv` is what follows `vhost-user`) and resolves with the exit
 * status once it is done serving.
 */
export async function runVhostUser(
  argv: readonly string[],
  context: CommandContext,
): Promise<number> {
  const { err } = context;
  let args: VhostUserArguments | 'help';
  try {
    args = parseVhostUserArguments(argv);
  } catch (error) {
    return usage(err, error);
  }
  if (args === 'help') {
    // --plugin modules given along with --help are listed too.
    const plugins = argv.flatMap((arg, i) =>
      arg === '--plugin' && argv[i + 1] ? [argv[i + 1]!] : [],
    );
    try {
      const registry = await createRegistry(plugins);
      context.out(
        `${VHOST_USER_USAGE}\n\ndevice plugins (TYPE and its options):\n${describePlugins(registry)}`,
      );
      return ExitCode.OK;
    } catch (error) {
      return usage(err, error);
    }
  }
  const info = args.quiet ? () => {} : (line: string) => err(`virtkit: ${line}`);

  let device: VirtioDevice;
  let type: string;
  try {
    const registry = await createRegistry(args.plugins);
    const parsed = parseDeviceArgument(args.device);
    type = parsed.type;
    if (!registry.get(type)) {
      throw new UsageError(
        `unknown device type '${type}' (available: ${registry.names().join(', ') || 'none'})`,
      );
    }
    device = await registry.create(type, parsed.options, {
      log: (line) => err(`virtkit: ${type}: ${line}`),
    });
  } catch (error) {
    if (error instanceof UsageError || error instanceof OptionsError) return usage(err, error);
    if (error instanceof PluginError && error.code === 'PLUGIN_UNKNOWN') return usage(err, error);
    err(`virtkit vhost-user: cannot create the device: ${firstLine(error)}`);
    return ExitCode.FAILURE;
  }

  const backend = new VhostUserBackend(device, {
    log: info,
    ...(args.verbose ? { trace: (line: string) => err(`virtkit: <- ${line}`) } : {}),
  });
  try {
    if (args.socket !== undefined) backend.listen(args.socket);
    else backend.serve(args.fd!);
  } catch (error) {
    err(`virtkit vhost-user: ${firstLine(error)}`);
    await closeDevice(device).catch(() => {});
    return ExitCode.FAILURE;
  }
  info(
    `serving ${type} on ${args.socket ?? `descriptor ${args.fd}`}${args.keepServing ? ' (keep serving)' : ''}`,
  );

  const exitCode = await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (reason: string, code: number) => {
      if (stopping) return;
      stopping = true;
      info(`stopping: ${reason}`);
      context.signal?.removeEventListener('abort', onAbort);
      backend
        .close()
        .then(() => closeDevice(device))
        .then(
          () => resolve(code),
          (error: unknown) => {
            err(`virtkit vhost-user: closing the device failed: ${firstLine(error)}`);
            resolve(ExitCode.FAILURE);
          },
        );
    };
    const onAbort = () => stop('asked to stop', ExitCode.OK);
    if (context.signal?.aborted) onAbort();
    context.signal?.addEventListener('abort', onAbort);
    backend.events.on('disconnect', (error) => {
      if (!args.keepServing) {
        // A front-end that broke the protocol (we hung up on it) is a failure; one that left is not.
        stop(
          error ? `front-end disconnected: ${error.message}` : 'front-end disconnected',
          error ? ExitCode.FAILURE : ExitCode.OK,
        );
      } else {
        info('waiting for the next front-end');
      }
    });
  });
  return exitCode;
}

function usage(err: (line: string) => void, error: unknown): number {
  err(`virtkit vhost-user: ${firstLine(error)} (see virtkit vhost-user --help)`);
  return ExitCode.USAGE;
}
