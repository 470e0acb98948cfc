/**
 * The `console` device plugin: its options (the same names on the command line,
 * `--device console,stdio`, `--device console,file=guest.log`,
 * `--device console,socket=/run/vm.sock,ports=4`) and how they become a {@link ConsoleDevice}.
 * The command line configures port 0; further ports are added with the TypeScript API.
 */

import { DeviceType, defineDevicePlugin, defineOptions, type InferOptions } from '@virtkit/core';
import { FileBackend } from './backends/file.js';
import { SocketBackend } from './backends/socket.js';
import { StdioBackend } from './backends/stdio.js';
import type { PortBackend } from './backends/types.js';
import { MAX_PORTS } from './constants.js';
import { ConsoleDevice } from './device.js';
import { checkPortName } from './requests.js';

/** Options of the `console` plugin. */
export const consoleOptions = defineOptions({
  stdio: {
    type: 'boolean',
    default: false,
    description: "port 0 on the VMM's stdin/stdout (raw mode on a terminal; Ctrl-C stops the VMM)",
  },
  file: { type: 'string', description: 'port 0 output appended to this file (no input)' },
  socket: {
    type: 'string',
    description: 'port 0 on a Unix socket server at this path (the first client gets the port)',
  },
  name: {
    type: 'string',
    description:
      "port 0's name in the guest (/sys/class/virtio-ports/vport*p0/name); turns on MULTIPORT",
  },
  ports: {
    type: 'integer',
    min: 1,
    max: MAX_PORTS,
    default: 1,
    description:
      'most ports (max_nr_ports); above 1 offers MULTIPORT so more ports can be added through the API',
  },
});

/** Validated options of the `console` plugin. */
export type ConsoleOptions = InferOptions<typeof consoleOptions>;

/** Checks options across fields: exactly one backend, a usable name. */
export function checkConsoleOptions(options: ConsoleOptions): string | undefined {
  const chosen = [
    options.stdio ? 'stdio' : undefined,
    options.file !== undefined ? 'file' : undefined,
    options.socket !== undefined ? 'socket' : undefined,
  ].filter((name) => name !== undefined);
  if (chosen.length === 0) return 'choose where port 0 goes: stdio, file=PATH or socket=PATH';
  if (chosen.length > 1) return `choose one of stdio, file and socket, not ${chosen.join(' and ')}`;
  if (options.file === '') return 'file= needs a path';
  if (options.socket === '') return 'socket= needs a path';
  if (options.name !== undefined) return checkPortName(options.name);
  return undefined;
}

/** Opens the backend the options name. */
async function openBackend(options: ConsoleOptions): Promise<PortBackend> {
  if (options.file !== undefined) return FileBackend.open(options.file);
  if (options.socket !== undefined) return SocketBackend.listen(options.socket);
  return new StdioBackend();
}

/**
 * The plugin a VMM registers.
 *
 * @example
 * ```ts
 * registry.register(consolePlugin);
 * const device = await registry.create('console', { socket: '/run/vm/console.sock' });
 * ```
 */
export const consolePlugin = defineDevicePlugin({
  meta: { name: 'console', version: '0.0.0', core: '^0.1.0' },
  deviceType: DeviceType.CONSOLE,
  description:
    'virtio-console: a guest console (hvc0) and named ports on stdio, a file or a socket',
  options: consoleOptions,
  validate: checkConsoleOptions,
  async create(options, environment) {
    const backend = await openBackend(options);
    return new ConsoleDevice({
      backend,
      maxPorts: options.ports,
      ...(options.name !== undefined ? { name: options.name } : {}),
      ...(environment.log ? { log: environment.log } : {}),
    });
  },
});
