/**
 * @virtkit-templates/device: the sample device a new Virtkit device package starts from. One
 * queue; each request carries a payload and gets back its CRC-32 or Adler-32 checksum.
 *
 * @example
 * ```ts
 * import { DeviceRegistry } from '@virtkit/core';
 * import { samplePlugin } from '@virtkit-templates/device';
 *
 * const registry = new DeviceRegistry();
 * registry.register(samplePlugin);
 * const device = await registry.create('sample', { max_payload: 4096 });
 * ```
 *
 * @packageDocumentation
 */

export { adler32, crc32 } from './checksum.js';
export type { SampleViolationCode } from './constants.js';
export {
  REQUEST_HEADER_SIZE,
  RESPONSE_SIZE,
  SAMPLE_DEVICE_TYPE,
  SampleConfig,
  SampleFeature,
  SampleRequestType,
  SampleStatus,
} from './constants.js';
export type { SampleDeviceOptions } from './device.js';
export { MAX_PAYLOAD_LIMIT, SampleDevice } from './device.js';
export type { SampleErrorCode } from './errors.js';
export { SampleError } from './errors.js';
export type { RequestStats } from './handler.js';
export type { SampleOptions } from './plugin.js';
export { sampleOptions, samplePlugin } from './plugin.js';
