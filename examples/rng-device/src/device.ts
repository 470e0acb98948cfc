import {
  type DeviceQueue,
  DeviceType,
  defineDevicePlugin,
  defineOptions,
  Feature,
  featureBit,
  type VirtioDevice,
} from '@virtkit/core';

/** Options of the rng device: how many bytes it hands out per request at most. */
const options = defineOptions({
  maxBytes: {
    type: 'integer',
    description: 'largest number of random bytes per request',
    default: 4096,
    min: 1,
  },
});

/**
 * virtio-rng (virtio 1.2 §5.4): one queue; the driver posts writable buffers and the device
 * fills them with random bytes.
 */
export class RngDevice implements VirtioDevice {
  readonly deviceType = DeviceType.ENTROPY;
  readonly features =
    featureBit(Feature.RING_EVENT_IDX) |
    featureBit(Feature.RING_INDIRECT_DESC) |
    featureBit(Feature.RING_PACKED);
  readonly queues = [{ maxSize: 256 }];
  #queue: DeviceQueue | undefined;
  #signal: (queue: number) => void = () => {};
  readonly #scratch = new Uint8Array(4096);

  constructor(readonly maxBytes: number) {}

  activate(context: Parameters<VirtioDevice['activate']>[0]): void {
    this.#queue = context.queues[0];
    this.#signal = context.signalUsed;
  }

  queueNotify(): void {
    const queue = this.#queue;
    if (!queue) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const writer = chain.writer();
        let written = 0;
        for (const view of writer.views(Math.min(chain.writableLength, this.maxBytes))) {
          // Browsers refuse getRandomValues on views of a SharedArrayBuffer (guest RAM often
          // is one), so fill a private scratch buffer and copy it into the guest's buffer.
          for (let offset = 0; offset < view.length; offset += this.#scratch.length) {
            const part = view.subarray(offset, offset + this.#scratch.length);
            const random = crypto.getRandomValues(this.#scratch.subarray(0, part.length));
            part.set(random);
          }
          written += view.length;
        }
        queue.addUsed(chain, written);
      }
      if (queue.publishUsed()) this.#signal(0);
    } while (queue.enableNotifications());
  }

  reset(): void {
    this.#queue = undefined;
  }
}

/** The plugin a VMM registers: `registry.register(rngPlugin)`, then `registry.create('rng')`. */
export const rngPlugin = defineDevicePlugin({
  meta: { name: 'rng', version: '0.0.0', core: '^0.1.0' },
  deviceType: DeviceType.ENTROPY,
  description: 'virtio-rng: random bytes for the guest',
  options,
  create: (validated) => new RngDevice(validated.maxBytes),
});
