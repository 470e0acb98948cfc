import {
  type ActivationContext,
  type DeviceQueue,
  defineDevicePlugin,
  defineOptions,
  Feature,
  featureBit,
  type ViolationSink,
  type VirtioDevice,
} from '@virtkit/core';

/**
 * Device ID of the echo device. Virtio assigns no ID to an echo device (§5); this one is outside
 * the assigned range and only ever meets the in-page test driver, never a real guest.
 */
export const ECHO_DEVICE_TYPE = 0xfffe;

/**
 * A toy device written in the page against the plugin API: one queue; each request's readable
 * bytes are copied back into its writable buffers.
 */
export class EchoDevice implements VirtioDevice {
  readonly deviceType = ECHO_DEVICE_TYPE;
  readonly features =
    featureBit(Feature.RING_EVENT_IDX) |
    featureBit(Feature.RING_INDIRECT_DESC) |
    featureBit(Feature.RING_PACKED);
  readonly queues = [{ maxSize: 64 }];
  #queue: DeviceQueue | undefined;
  #signal: (queue: number) => void = () => {};
  #report: ViolationSink = () => {};

  activate(context: ActivationContext): void {
    this.#queue = context.queues[0];
    this.#signal = context.signalUsed;
    this.#report = context.reportViolation;
  }

  queueNotify(): void {
    const queue = this.#queue;
    if (!queue) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        if (chain.writableLength < chain.readableLength) {
          // A guest mistake, not an exception: echo what fits and count it.
          this.#report({
            code: 'REQUEST_MALFORMED',
            message: `echo request of ${chain.readableLength} bytes has only ${chain.writableLength} writable bytes`,
            queue: 0,
            needsReset: false,
          });
        }
        const reader = chain.reader();
        const writer = chain.writer();
        // Zero-copy on the read side: guest memory views go straight into the writer.
        for (const view of reader.views(Math.min(chain.readableLength, chain.writableLength))) {
          writer.write(view);
        }
        queue.addUsed(chain, writer.position);
      }
      if (queue.publishUsed()) this.#signal(0);
    } while (queue.enableNotifications());
  }

  reset(): void {
    this.#queue = undefined;
  }
}

/** The echo plugin: `registry.register(echoPlugin)`, then `registry.create('echo')`. */
export const echoPlugin = defineDevicePlugin({
  meta: { name: 'echo', version: '0.0.0', core: '^0.1.0' },
  deviceType: ECHO_DEVICE_TYPE,
  description: 'echo: sends every request back (browser example)',
  options: defineOptions({}),
  create: () => new EchoDevice(),
});
