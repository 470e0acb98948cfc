/**
 * The sample device: its type, features, configuration space and queue, activation and reset.
 * Request parsing is in `requests.ts`, queue processing in `handler.ts`, the checksums in
 * `checksum.ts`.
 */

import {
  type ActivationContext,
  ConfigSpace,
  Feature,
  featureBit,
  type QueueSpec,
  type VirtioDevice,
} from '@virtkit/core';
import { SAMPLE_DEVICE_TYPE, SampleConfig, SampleFeature, SampleQueue } from './constants.js';
import { SampleError } from './errors.js';
import { RequestHandler, type RequestStats } from './handler.js';

/** Options of {@link SampleDevice}. */
export interface SampleDeviceOptions {
  /** Largest payload accepted, 1 to 16 MiB (default 65536); announced as `max_payload`. */
  readonly maxPayload?: number;
  /** Largest size of the request queue, a power of two from 1 to 32768 (default 256). */
  readonly queueSize?: number;
  /** Offer VIRTIO_SAMPLE_F_ADLER32 (default true). */
  readonly adler32?: boolean;
}

/** Largest `maxPayload`: a request is answered synchronously, so keep each one short. */
export const MAX_PAYLOAD_LIMIT = 16 << 20;

// Offer every ring feature: the device must work with each combination the driver picks.
const RING_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.RING_PACKED);

/**
 * A virtio "sample" device: one queue; each request carries a payload and gets back its CRC-32
 * (or Adler-32) checksum.
 *
 * @example
 * ```ts
 * const driver = await TestDriver.create(new SampleDevice());
 * const { written } = await driver.send(0, { readable: [header, payload], writable: [8] });
 * ```
 */
export class SampleDevice implements VirtioDevice {
  readonly deviceType = SAMPLE_DEVICE_TYPE;
  readonly features: bigint;
  readonly queues: readonly QueueSpec[];
  readonly config: ConfigSpace;
  readonly #maxPayload: number;
  #handler: RequestHandler | undefined;

  constructor(options: SampleDeviceOptions = {}) {
    const maxPayload = options.maxPayload ?? 65536;
    const queueSize = options.queueSize ?? 256;
    if (!Number.isInteger(maxPayload) || maxPayload < 1 || maxPayload > MAX_PAYLOAD_LIMIT) {
      throw new SampleError(
        'SAMPLE_OPTIONS',
        `max payload must be an integer from 1 to ${MAX_PAYLOAD_LIMIT}, got ${maxPayload}`,
      );
    }
    if (
      !Number.isInteger(queueSize) ||
      queueSize < 1 ||
      queueSize > 32768 ||
      (queueSize & (queueSize - 1)) !== 0
    ) {
      throw new SampleError(
        'SAMPLE_OPTIONS',
        `queue size must be a power of two from 1 to 32768, got ${queueSize}`,
      );
    }
    this.#maxPayload = maxPayload;
    this.queues = [{ maxSize: queueSize }];
    this.features =
      RING_FEATURES | ((options.adler32 ?? true) ? featureBit(SampleFeature.ADLER32) : 0n);
    this.config = new ConfigSpace(SampleConfig.SIZE);
    this.config.setU32(SampleConfig.MAX_PAYLOAD, maxPayload);
  }

  /** Request counters of the current activation (zero when inactive). */
  get stats(): RequestStats {
    return { ...(this.#handler?.stats ?? { ok: 0, unsupported: 0, malformed: 0 }) };
  }

  activate(context: ActivationContext): void {
    const queue = context.queues[SampleQueue.REQUEST];
    // A driver may leave a queue disabled; then there is nothing to serve.
    if (!queue) return;
    this.#handler = new RequestHandler(queue, () => context.signalUsed(SampleQueue.REQUEST), {
      rules: {
        maxPayload: this.#maxPayload,
        adler32: (context.features & featureBit(SampleFeature.ADLER32)) !== 0n,
      },
      reportViolation: context.reportViolation,
    });
  }

  queueNotify(queueIndex: number): void {
    if (queueIndex === SampleQueue.REQUEST) this.#handler?.process();
  }

  reset(): void {
    // Nothing is in flight between notifications (answers are synchronous), so nothing to settle.
    this.#handler = undefined;
  }
}
