/**
 * @virtkit/device-net: a virtio-net device (virtio 1.2 §5.1) with TAP, stream-socket
 * (QEMU `-netdev stream` framing) and in-process backends.
 *
 * @example
 * ```ts
 * import { DeviceRegistry } from '@virtkit/core';
 * import { netPlugin } from '@virtkit/device-net';
 *
 * const registry = new DeviceRegistry();
 * registry.register(netPlugin);
 * const device = await registry.create('net', { tap: 'vm0', queues: 2 });
 * ```
 *
 * @packageDocumentation
 */

export type {
  GuestOffloads,
  NetBackend,
  NetBackendPort,
  SendResult,
} from './backends/backend.js';
export { NO_OFFLOADS } from './backends/backend.js';
export type { MemoryPairOptions } from './backends/memory.js';
export { createMemoryPair, MemoryBackend } from './backends/memory.js';
export type { StreamAddress, StreamBackendOptions, StreamStats } from './backends/stream.js';
export {
  formatStreamAddress,
  parseStreamAddress,
  STREAM_MAX_FRAME,
  StreamBackend,
} from './backends/stream.js';
export type { TapBackendOptions, TapStats } from './backends/tap.js';
export { TapBackend, tunOffloadFlags } from './backends/tap.js';
export {
  NET_ERR,
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_ECN,
  NET_HDR_GSO_NONE,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_TCPV6,
  NET_HDR_GSO_UDP,
  NET_HDR_SIZE,
  NET_OK,
  NET_S_ANNOUNCE,
  NET_S_LINK_UP,
  NetConfig,
  NetCtrl,
  NetFeature,
} from './constants.js';
export type { NetDeviceOptions } from './device.js';
export { DEFAULT_MTU, deriveMac, MAX_QUEUE_PAIRS, NetDevice } from './device.js';
export type { NetErrorCode } from './errors.js';
export { NetError } from './errors.js';
export type { RxFilterState } from './filter.js';
export type { NetStats } from './handler.js';
export { netOptions, netPlugin } from './plugin.js';
export type { NetHeader } from './requests.js';
export { formatMac, netHeaderSize, parseMac, readNetHeader, writeNetHeader } from './requests.js';
