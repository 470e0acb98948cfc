/**
 * A small device for this package's tests: it answers each chain by writing the readable bytes
 * back reversed. It can hold chains instead of answering them at once (like a disk with I/O in
 * flight), and on reset either settle them (answer, as a well-behaved device does) or drop them
 * (as a network device drops receive buffers it never filled).
 */

import {
  type ActivationContext,
  ConfigSpace,
  type DescriptorChain,
  type DeviceQueue,
  Feature,
  featureBit,
  type VirtioDevice,
} from '@virtkit/core';

/** Options of {@link EchoDevice}. */
export interface EchoDeviceOptions {
  readonly queues?: number;
  /** Hold popped chains until {@link EchoDevice.completeHeld} (default false). */
  readonly hold?: boolean;
  /** On reset, drop held chains instead of answering them (default false). */
  readonly dropOnReset?: boolean;
}

/** Test device: echoes reversed bytes. */
export class EchoDevice implements VirtioDevice {
  readonly deviceType = 0x7e57;
  readonly features =
    featureBit(Feature.RING_INDIRECT_DESC) |
    featureBit(Feature.RING_EVENT_IDX) |
    featureBit(Feature.RING_PACKED) |
    featureBit(0);
  readonly queues: readonly { maxSize: number }[];
  readonly config = new ConfigSpace(16, { writable: [{ offset: 8, length: 4 }] });
  hold: boolean;
  readonly #dropOnReset: boolean;
  #context: ActivationContext | undefined;
  /** Chains held per queue. */
  readonly held: DescriptorChain[][];
  activations = 0;
  resets = 0;
  handled = 0;
  lastFeatures = 0n;

  constructor(options: EchoDeviceOptions = {}) {
    const count = options.queues ?? 1;
    this.queues = Array.from({ length: count }, () => ({ maxSize: 256 }));
    this.held = Array.from({ length: count }, () => []);
    this.hold = options.hold ?? false;
    this.#dropOnReset = options.dropOnReset ?? false;
    this.config.setU32(0, 0x12345678);
    this.config.setU32(4, count);
  }

  activate(context: ActivationContext): void {
    this.#context = context;
    this.activations++;
    this.lastFeatures = context.features;
  }

  queueNotify(index: number): void {
    const context = this.#context;
    const queue = context?.queues[index];
    if (!context || !queue) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        if (this.hold) this.held[index]!.push(chain);
        else this.#answer(queue, chain);
      }
      if (queue.publishUsed()) context.signalUsed(index);
    } while (queue.enableNotifications());
  }

  /** Answers every held chain of queue `index` (as I/O completing). */
  completeHeld(index: number): number {
    const context = this.#context;
    const queue = context?.queues[index];
    const chains = this.held[index]!.splice(0);
    if (!context || !queue) return 0;
    for (const chain of chains) this.#answer(queue, chain);
    if (queue.publishUsed()) context.signalUsed(index);
    return chains.length;
  }

  async reset(): Promise<void> {
    this.resets++;
    const context = this.#context;
    // Settle like a device with I/O in flight: answers arrive a tick later.
    await new Promise((resolve) => setImmediate(resolve));
    if (context) {
      context.queues.forEach((queue, index) => {
        if (!queue) return;
        if (this.#dropOnReset) this.held[index]!.length = 0;
        else this.completeHeld(index);
      });
    }
    this.#context = undefined;
  }

  #answer(queue: DeviceQueue, chain: DescriptorChain): void {
    const input = new Uint8Array(chain.readableLength);
    chain.reader().read(input);
    input.reverse();
    const writer = chain.writer();
    const n = Math.min(input.length, chain.writableLength);
    writer.write(input.subarray(0, n));
    this.handled++;
    queue.addUsed(chain, n);
  }
}
