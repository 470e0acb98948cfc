/**
 * The `net` device plugin: the options a VMM and the command line give
 * (`--device net,tap=vm0,queues=2` / `net,socket=/run/a.sock,listen=on` / `net,backend=memory`)
 * and the factory that opens the backend and creates a {@link NetDevice}.
 */

import { DeviceType, defineDevicePlugin, defineOptions } from '@virtkit/core';
import { createMemoryPair } from './backends/memory.js';
import { parseStreamAddress, StreamBackend } from './backends/stream.js';
import { TapBackend } from './backends/tap.js';
import { NET_MTU_MAX, NET_MTU_MIN } from './constants.js';
import { DEFAULT_MTU, MAX_QUEUE_PAIRS, NetDevice } from './device.js';

/** Options of the `net` plugin. Exactly one of `tap`, `socket` and `backend` selects the backend. */
export const netOptions = defineOptions({
  tap: {
    type: 'string',
    description: 'TAP interface to use (created if missing; needs CAP_NET_ADMIN)',
    pattern: /^[^\s/:]{1,15}$/,
  },
  socket: {
    type: 'string',
    description:
      'stream socket with QEMU -netdev stream framing: a Unix socket path, or host:port for TCP',
  },
  listen: {
    type: 'boolean',
    description: 'with socket: wait for the peer to connect instead of connecting to it',
    default: false,
  },
  backend: {
    type: 'enum',
    values: ['memory'],
    description: 'memory: an in-process pair for tests (the other end is device.backend.peer)',
  },
  mac: {
    type: 'string',
    description:
      'MAC address aa:bb:cc:dd:ee:ff (default: a locally administered address derived from the backend)',
    pattern: /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/,
  },
  queues: {
    type: 'integer',
    description: 'queue pairs offered (more than 1 enables multiqueue)',
    default: 1,
    min: 1,
    max: MAX_QUEUE_PAIRS,
  },
  mtu: {
    type: 'integer',
    description: 'MTU offered to the guest',
    default: DEFAULT_MTU,
    min: NET_MTU_MIN,
    max: NET_MTU_MAX,
  },
});

/**
 * The virtio-net plugin (`net`).
 *
 * @example
 * ```ts
 * const registry = new DeviceRegistry();
 * registry.register(netPlugin);
 * const device = await registry.create('net', { socket: '/run/vm-a.sock', listen: 'on' });
 * ```
 */
export const netPlugin = defineDevicePlugin({
  meta: { name: 'net', version: '0.0.0', core: '^0.1.0' },
  deviceType: DeviceType.NET,
  description: 'virtio-net: Ethernet over a TAP interface, a stream socket, or in-process',
  options: netOptions,
  validate(options) {
    const chosen = [
      options.tap !== undefined && 'tap',
      options.socket !== undefined && 'socket',
      options.backend !== undefined && 'backend',
    ].filter(Boolean);
    if (chosen.length !== 1) {
      return `net needs exactly one backend: tap=NAME, socket=ADDRESS or backend=memory${chosen.length > 1 ? ` (got ${chosen.join(', ')})` : ''}`;
    }
    if (options.listen && options.socket === undefined) return 'listen=on needs socket=ADDRESS';
    if (options.socket !== undefined) {
      try {
        parseStreamAddress(options.socket);
      } catch (error) {
        return (error as Error).message;
      }
    }
    if (options.mac !== undefined && Number.parseInt(options.mac.slice(0, 2), 16) & 1) {
      return `mac ${options.mac} is a multicast address; the first octet must be even`;
    }
    return undefined;
  },
  async create(options, environment) {
    const log = environment.log ?? ((message: string) => console.warn(message));
    const backend =
      options.tap !== undefined
        ? TapBackend.open({ name: options.tap, queues: options.queues, log })
        : options.socket !== undefined
          ? await StreamBackend.open({ address: options.socket, listen: options.listen, log })
          : createMemoryPair()[0];
    return new NetDevice({
      backend,
      queuePairs: options.queues,
      mtu: options.mtu,
      log,
      ...(options.mac !== undefined ? { mac: options.mac } : {}),
    });
  },
});
