/**
 * virtkit: the command line of Virtkit. `virtkit vhost-user` serves a device to QEMU or Cloud
 * Hypervisor, `virtkit guest prepare` fetches a Linux guest for tests. Also usable from code.
 *
 * @example
 * ```ts
 * import { runCli } from 'virtkit';
 * const stop = new AbortController();
 * const status = runCli(['vhost-user', '--socket', '/tmp/vblk.sock', '--device', 'blk,path=disk.img'], {
 *   out: console.log,
 *   err: console.error,
 *   signal: stop.signal,
 * });
 * // ... later
 * stop.abort();
 * console.log('exit status', await status);
 * ```
 *
 * @packageDocumentation
 */

export { CLI_VERSION, runCli } from './cli.js';
export { ExitCode, UsageError } from './errors.js';
export { createRegistry, describePlugins, isDevicePlugin, pluginsOf } from './plugins.js';
export type { CommandContext } from './vhost-user.js';
export { runVhostUser, VHOST_USER_USAGE } from './vhost-user.js';
