/**
 * The "echo" device the conformance suite drives through every transport. It uses only core's
 * public API, like any device plugin: two queues that copy each chain's readable bytes into its
 * writable part, a small configuration space with a driver-writable field, and a method that
 * changes the configuration the way a device would (bumping the generation, raising a
 * configuration-change interrupt once the driver is live).
 */

import {
  type ActivationContext,
  ConfigSpace,
  type DeviceQueue,
  Feature,
  featureBit,
  type VirtioDevice,
} from '@virtkit/core';

/**
 * Device type of the echo device. 63 is unassigned in virtio 1.2 §5 and still fits the modern
 * PCI device ID range (0x1040 + 63 = 0x107f).
 */
export const ECHO_DEVICE_TYPE = 63;

/** Device-specific feature bits of the echo device. */
export const EchoFeature = {
  /** Bit 0: reverse the bytes while copying (without it the device copies them as they are). */
  REVERSE: 0,
} as const;

/** Queue maxima: different per queue so QueueNumMax / queue_size are checked per queue. */
export const ECHO_QUEUE_MAX = [256, 64] as const;

/**
 * Configuration space layout (little-endian):
 * - 0x00 u64 `counter`, read-only, changed by {@link EchoDevice.changeConfig};
 * - 0x08 u32 `scratch`, written by the driver;
 * - 0x0c u16 `maxPayload`, read-only (bytes the device copies at most per chain);
 * - 0x0e u8 `magic`, read-only ({@link ECHO_CONFIG_MAGIC});
 * - 0x0f u8 reserved.
 */
export const EchoConfig = {
  COUNTER: 0x00,
  SCRATCH: 0x08,
  MAX_PAYLOAD: 0x0c,
  MAGIC: 0x0e,
  SIZE: 0x10,
} as const;

/** Value of the `magic` config byte. */
export const ECHO_CONFIG_MAGIC = 0xec;
/** Value of the `maxPayload` config field. */
export const ECHO_MAX_PAYLOAD = 4096;

/** Features the echo device offers: its own bit and the ring features core implements. */
export const ECHO_FEATURES =
  featureBit(EchoFeature.REVERSE) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_PACKED);

/**
 * A two-queue echo device. Each chain on either queue comes back with its readable bytes
 * (reversed if REVERSE was negotiated) written into its writable part, and the used length says
 * how many fit.
 *
 * @example
 * ```ts
 * const device = new EchoDevice();
 * const transport = new MmioTransport(device, { memory, interrupt });
 * device.changeConfig(1n); // counter := 1, generation + 1, config interrupt if live
 * ```
 */
export class EchoDevice implements VirtioDevice {
  readonly deviceType = ECHO_DEVICE_TYPE;
  readonly features = ECHO_FEATURES;
  readonly queues = ECHO_QUEUE_MAX.map((maxSize) => ({ maxSize }));
  readonly config = new ConfigSpace(EchoConfig.SIZE, {
    writable: [{ offset: EchoConfig.SCRATCH, length: 4 }],
    onWrite: () => {
      this.scratchWrites++;
    },
  });

  /** Times the device was activated (DRIVER_OK) and reset. */
  activations = 0;
  resets = 0;
  /** Features in force since the last activation (undefined while inactive). */
  negotiated: bigint | undefined;
  /** Chains served per queue since the last activation. */
  readonly served: number[] = ECHO_QUEUE_MAX.map(() => 0);
  /** Driver writes to `scratch` so far. */
  scratchWrites = 0;

  #context: ActivationContext | undefined;

  constructor() {
    this.config.setU16(EchoConfig.MAX_PAYLOAD, ECHO_MAX_PAYLOAD);
    this.config.setU8(EchoConfig.MAGIC, ECHO_CONFIG_MAGIC);
  }

  /** The `counter` config field. */
  get counter(): bigint {
    return this.config.getU64(EchoConfig.COUNTER);
  }

  /** The device changes its configuration: sets `counter` (core bumps the generation). */
  changeConfig(counter: bigint): void {
    this.config.setU64(EchoConfig.COUNTER, counter);
  }

  activate(context: ActivationContext): void {
    this.activations++;
    this.#context = context;
    this.negotiated = context.features;
    this.served.fill(0);
  }

  queueNotify(index: number): void {
    const queue = this.#context?.queues[index];
    if (queue) this.#drain(index, queue);
  }

  reset(): void {
    this.resets++;
    this.#context = undefined;
    this.negotiated = undefined;
  }

  #drain(index: number, queue: DeviceQueue): void {
    const context = this.#context!;
    const reverse = (context.features & featureBit(EchoFeature.REVERSE)) !== 0n;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const reader = chain.reader();
        const payload = reader.readBytes(Math.min(reader.remaining, ECHO_MAX_PAYLOAD));
        if (reverse) payload.reverse();
        const written = chain.writer().writeSome(payload);
        queue.addUsed(chain, written);
        this.served[index] = (this.served[index] ?? 0) + 1;
      }
      if (queue.publishUsed()) context.signalUsed(index);
    } while (queue.enableNotifications());
  }
}
