/**
 * The `sample` device plugin: its options (the same names on the command line,
 * `--device sample,max_payload=4096,adler32=off`) and how they become a {@link SampleDevice}.
 */

import { defineDevicePlugin, defineOptions, type InferOptions } from '@virtkit/core';
import { SAMPLE_DEVICE_TYPE } from './constants.js';
import { MAX_PAYLOAD_LIMIT, SampleDevice } from './device.js';

/** Options of the `sample` plugin. */
export const sampleOptions = defineOptions({
  max_payload: {
    type: 'integer',
    min: 1,
    max: MAX_PAYLOAD_LIMIT,
    default: 65536,
    description: 'largest request payload in bytes (max_payload)',
  },
  queue_size: {
    type: 'integer',
    min: 1,
    max: 32768,
    default: 256,
    description: 'largest size of the request queue (a power of two)',
  },
  adler32: {
    type: 'boolean',
    default: true,
    description: 'offer Adler-32 checksums besides CRC-32 (VIRTIO_SAMPLE_F_ADLER32)',
  },
});

/** Validated options of the `sample` plugin. */
export type SampleOptions = InferOptions<typeof sampleOptions>;

/**
 * The sample plugin (registry name `sample`).
 *
 * @example
 * ```ts
 * const registry = new DeviceRegistry();
 * registry.register(samplePlugin);
 * const device = await registry.create('sample', { max_payload: 4096 });
 * ```
 */
export const samplePlugin = defineDevicePlugin({
  meta: { name: 'sample', version: '0.0.0', core: '^0.1.0' },
  deviceType: SAMPLE_DEVICE_TYPE,
  description: 'sample device: answers each request with a checksum of its payload',
  options: sampleOptions,
  // Checks across or beyond what the schema can say; an error sentence, or undefined.
  validate: (options) =>
    (options.queue_size & (options.queue_size - 1)) === 0
      ? undefined
      : `queue_size ${options.queue_size} is not a power of two`,
  create: (options) =>
    new SampleDevice({
      maxPayload: options.max_payload,
      queueSize: options.queue_size,
      adler32: options.adler32,
    }),
});
