/**
 * @virtkit/device-console: a virtio-console device (virtio 1.2 §5.3) for Virtkit. Port 0 is the
 * guest's console (hvc0 in Linux); with MULTIPORT, further console or named ports
 * (/dev/vportNpM, /dev/virtio-ports/NAME) can exist from the start or be added while the guest
 * runs. Backends: the VMM's stdio, a log file, a Unix socket and any Node stream.
 *
 * @example
 * ```ts
 * import { DeviceRegistry } from '@virtkit/core';
 * import { consolePlugin } from '@virtkit/device-console';
 *
 * const registry = new DeviceRegistry();
 * registry.register(consolePlugin);
 * const console0 = await registry.create('console', { stdio: true });
 * ```
 *
 * @packageDocumentation
 */

export type { FileBackendOptions } from './backends/file.js';
export { FileBackend } from './backends/file.js';
export type { SocketBackendOptions } from './backends/socket.js';
export { SocketBackend } from './backends/socket.js';
export type { StdioBackendOptions, TerminalInput, TerminalOutput } from './backends/stdio.js';
export { StdioBackend } from './backends/stdio.js';
export type { StreamBackendOptions } from './backends/stream.js';
export { StreamBackend } from './backends/stream.js';
export type { BackendHost, PortBackend, WriteResult } from './backends/types.js';
export type { ConsoleViolationCode, ResizeLayout } from './constants.js';
export {
  CONTROL_HEADER_SIZE,
  ConsoleConfig,
  ConsoleFeature,
  ControlEvent,
  MAX_PORTS,
  NO_PORT_ID,
  receiveQueueIndex,
  transmitQueueIndex,
} from './constants.js';
export type { ConsoleDeviceOptions, ConsolePortOptions, ConsoleStats } from './device.js';
export { ConsoleDevice } from './device.js';
export type { ConsoleErrorCode } from './errors.js';
export { ConsoleError } from './errors.js';
export type { ConsoleOptions } from './plugin.js';
export { consoleOptions, consolePlugin } from './plugin.js';
export type { ConsolePortEvents, OverflowPolicy, PortStats } from './port.js';
export { ConsolePort } from './port.js';
export type { ConsoleSize, ControlMessage } from './requests.js';
export {
  decodeControlMessage,
  decodeResize,
  encodeControlMessage,
  encodeResize,
} from './requests.js';
