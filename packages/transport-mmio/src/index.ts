/**
 * @virtkit/transport-mmio: the virtio-mmio transport (version 2, virtio 1.2 §4.2) for Virtkit
 * devices. Wrap a device in a {@link MmioTransport}, map it into the VMM's MMIO address space and
 * wire its interrupt line.
 *
 * @example
 * ```ts
 * import { MMIO_WINDOW_SIZE, MmioTransport } from '@virtkit/transport-mmio';
 * const transport = new MmioTransport(device, { memory, interrupt: line });
 * bus.map(0xd000_0000, MMIO_WINDOW_SIZE, transport);
 * ```
 *
 * @packageDocumentation
 */

export { DEFAULT_VENDOR_ID, MMIO_WINDOW_SIZE, MmioRegister } from './constants.js';
export type { MmioTransportErrorCode } from './errors.js';
export { MmioTransportError } from './errors.js';
export type { InterruptLine, MmioTransportOptions, NotifyAddress } from './transport.js';
export { MmioTransport } from './transport.js';
