/**
 * The `virtkit` command line: a dispatcher over the subcommands.
 */

import { runGuestCommand } from '@virtkit/guest';
import { ExitCode } from './errors.js';
import { createRegistry, describePlugins, firstLine } from './plugins.js';
import { type CommandContext, runVhostUser } from './vhost-user.js';

/** Version of this package, for `--version`. */
export const CLI_VERSION = '0.0.0';

const USAGE = `usage: virtkit <command> [options]

commands:
  vhost-user   serve one virtio device to a vhost-user front-end (QEMU, Cloud Hypervisor):
               virtkit vhost-user --socket PATH --device TYPE[,key=value...]
  guest        prepare Linux test guests: virtkit guest prepare [--arch x86_64|riscv64] [--dir CACHE]

Run 'virtkit <command> --help' for a command's options.`;

const defaultContext: CommandContext = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/**
 * Runs the `virtkit` command with `argv` (the arguments after the program name) and resolves with
 * the exit status: 0 success, 1 failure at run time, 2 bad arguments (with a one-line message).
 *
 * @example
 * ```ts
 * const status = await runCli(['vhost-user', '--socket', '/tmp/vblk.sock', '--device', 'blk,path=disk.img']);
 * ```
 */
export async function runCli(
  argv: readonly string[],
  context: CommandContext = defaultContext,
): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
      context.err(USAGE);
      return ExitCode.USAGE;
    case '-h':
    case '--help':
    case 'help': {
      let plugins: string;
      try {
        plugins = describePlugins(await createRegistry());
      } catch (error) {
        plugins = `  (cannot list: ${firstLine(error)})`;
      }
      context.out(
        `${USAGE}\n\ndevice plugins (TYPE and its options, for --device TYPE,key=value...):\n${plugins}`,
      );
      return ExitCode.OK;
    }
    case '-V':
    case '--version':
      context.out(CLI_VERSION);
      return ExitCode.OK;
    case 'vhost-user':
      return runVhostUser(rest, context);
    case 'guest':
      return runGuestCommand(rest, { out: context.out, err: context.err });
    default:
      context.err(`virtkit: unknown command '${command}' (see virtkit --help)`);
      return ExitCode.USAGE;
  }
}
